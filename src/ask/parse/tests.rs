use super::*;

const NOW: Millis = 1_763_737_200_000; // 2025-11-21T15:00:00Z

fn vocab() -> Vocabulary {
    let services =
        ["checkout", "payments", "postgres", "payment-gateway", "cart", "frontend", "orders", "redis", "inventory"];
    Vocabulary { services: services.iter().map(|s| s.to_string()).collect(), now: NOW, offset: 0 }
}

/// The slots of a line of `tests/ask/phrasings.tsv`, in the file's notation.
fn notation(s: &Slots) -> String {
    let mut out = Vec::new();
    if let Some(x) = &s.service {
        out.push(format!("service={x}"));
    }
    if let Some((a, b)) = s.window {
        out.push(format!("window={}..{}", (a - NOW) / MINUTE, (b - NOW) / MINUTE));
    }
    if let Some(d) = s.duration {
        out.push(format!("duration={}", d / MINUTE));
    }
    if let Some(x) = s.signal {
        out.push(format!("signal={}", x.as_str()));
    }
    if let Some(d) = s.direction {
        out.push(format!("direction={}", if d == Direction::Callers { "callers" } else { "callees" }));
    }
    if let Some(i) = s.incident {
        out.push(format!("incident={i}"));
    }
    if let Some(h) = s.hypothesis {
        out.push(format!("hypothesis={h}"));
    }
    if let Some(u) = &s.unknown_service {
        out.push(format!("unknown={u}"));
    }
    if let Some(t) = &s.unread_time {
        out.push(format!("unread={t}"));
    }
    out.join(" ")
}

#[test]
fn every_phrasing_is_understood_as_written() {
    let table = include_str!("../../../tests/ask/phrasings.tsv");
    let v = vocab();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (question, intent, slots) = (cols.next().unwrap(), cols.next().unwrap(), cols.next().unwrap_or(""));
        n += 1;
        let p = parse(question, &v);
        let got = (p.intent.as_str(), notation(&p.slots));
        if got != (intent, slots.trim().to_string()) {
            failures.push(format!("{question:?}: want {intent} [{slots}], got {} [{}]", got.0, got.1));
        }
    }
    assert!(n >= 150, "the table holds {n} phrasings");
    assert!(failures.is_empty(), "{} of {n} phrasings misread:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_intent_is_in_the_table() {
    let table = include_str!("../../../tests/ask/phrasings.tsv");
    for i in Intent::ALL {
        assert!(table.contains(&format!("\t{}\t", i.as_str())), "no phrasing for {}", i.as_str());
        assert_eq!(Intent::from_name(i.as_str()), Some(i));
    }
}

#[test]
fn examples_parse_as_their_intent() {
    for i in Intent::ALL.into_iter().filter(|i| *i != Intent::Unknown) {
        assert_eq!(parse(i.example(), &vocab()).intent, i, "{}", i.example());
    }
}

#[test]
fn unknown_comes_with_suggestions() {
    let p = parse("chart", &Vocabulary::default());
    assert_eq!(p.intent, Intent::Metric);
    let p = parse("dont pause", &vocab());
    assert_eq!((p.intent, p.suggestions.first()), (Intent::Unknown, Some(&Intent::Pause)));
    let p = parse("the weather", &vocab());
    assert!(!p.suggestions.is_empty() && p.suggestions.iter().all(|i| !i.mutating()));
}

#[test]
fn times_are_read_in_the_configured_offset() {
    // 14:00 at +02:00 is 12:00 UTC: three hours before 15:00 UTC.
    let v = Vocabulary { offset: 7200, ..vocab() };
    assert_eq!(parse("logs since 14:00", &v).slots.window, Some((NOW - 3 * HOUR, NOW)));
    // 16:00 local is 14:00 UTC; "until 16:00" at 15:00 UTC (17:00 local) is tomorrow's.
    assert_eq!(parse("silence until 18:00", &v).slots.duration, Some(HOUR));
}

#[test]
fn hostile_and_huge_inputs_do_not_panic_and_stay_cheap() {
    let v = vocab();
    let mut inputs: Vec<String> = vec![
        String::new(),
        "x".repeat(100_000),
        "pause ".repeat(20_000),
        "\0\u{1}\u{7f}\u{1b}[31m\r\n\t".repeat(100),
        "since 99:99 between 25:00 and -1:00 for 9999999999999h last 0m".into(),
        "<@U123> <#C1|x> <!channel> <<<>>>".into(),
        "#99999999999999999999 incident #-1 hypothesis 0".into(),
        "'s ' '' ::: --- ... ###".into(),
    ];
    // A character from every Unicode plane, and every scalar of the first two planes' edges.
    inputs.push((0..17u32).filter_map(|p| char::from_u32(p * 0x10000 + 0x41)).collect());
    inputs.push((0..0x3000u32).step_by(7).filter_map(char::from_u32).collect());
    inputs.push("İstanbul ǅ ß ﬁ Σ".into());
    for input in &inputs {
        let started = std::time::Instant::now();
        let p = parse(input, &v);
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "parse took {:?}", started.elapsed());
        let _ = p.slots.to_json();
    }
    assert_eq!(parse(&"pause ".repeat(20_000), &v).intent, Intent::Pause, "only the first 500 characters are read");
}

/// `tests/ask/commands.tsv`: a question, a negation or a statement never parses as a state
/// change; an order does, and the same order overheard does not.
#[test]
fn only_an_order_changes_state() {
    let table = include_str!("../../../tests/ask/commands.tsv");
    let v = vocab();
    let mut failures = Vec::new();
    let (mut never, mut orders) = (0, 0);
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (text, want) = line.split_once('\t').expect("two columns");
        let p = parse(text, &v);
        if want == "never" {
            never += 1;
            if p.intent.mutating() {
                failures.push(format!("{text:?} must never act, parsed as {}", p.intent.as_str()));
            }
            continue;
        }
        orders += 1;
        if p.intent.as_str() != want {
            failures.push(format!("{text:?}: want the order {want}, got {} ({:?})", p.intent.as_str(), p.note));
        }
        let overheard = p.overheard();
        if overheard.intent.mutating() || overheard.note != Some(OVERHEARD) {
            failures.push(format!("{text:?} overheard: got {}", overheard.intent.as_str()));
        }
    }
    assert!(never >= 25 && orders >= 15, "{never} never, {orders} orders");
    assert!(failures.is_empty(), "{} of {} misread:\n{}", failures.len(), never + orders, failures.join("\n"));
}

/// A question about a state change is answered as the question it is, saying why nothing was done.
#[test]
fn a_question_about_a_state_change_asks_for_the_state() {
    let v = vocab();
    let p = parse("did someone resolve this?", &v);
    assert_eq!((p.intent, p.note, p.suggestions.first()), (Intent::Status, Some(QUESTION), Some(&Intent::Resolve)));
    let p = parse("will a restart resolve it", &v);
    assert_eq!((p.intent, p.note), (Intent::Runbooks, Some(QUESTION)));
    let p = parse("checkout cannot resolve postgres.shop.svc", &v);
    assert_eq!((p.intent, p.note), (Intent::Unknown, Some(NEGATION)));
    let p = parse("checkout fails to resolve postgres.shop.svc", &v);
    assert_eq!((p.intent, p.note), (Intent::Unknown, Some(STATEMENT)));
}

/// "The db" is the one known service that is a database; with two, it names none.
#[test]
fn the_db_is_the_one_database_service() {
    let one = Vocabulary { services: vec!["checkout".into(), "postgres".into(), "payments".into()], ..vocab() };
    assert_eq!(parse("is the db ok?", &one).slots.service.as_deref(), Some("postgres"));
    assert_eq!(parse("what's wrong with the database", &one).slots.service.as_deref(), Some("postgres"));
    let two = parse("is the db ok?", &vocab());
    assert_eq!((two.slots.service, two.slots.unknown_service), (None, None), "postgres or redis: not guessed");
}

/// The share of `tests/ask/public.tsv`'s rows of `half` whose intent is one a reader accepts,
/// and the rows that missed.
fn public_accuracy(half: &str) -> (usize, usize, Vec<String>) {
    let table = include_str!("../../../tests/ask/public.tsv");
    let v = vocab();
    let (mut n, mut right, mut missed) = (0, 0, Vec::new());
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "public.tsv: {line:?} has {} columns, not 4", cols.len());
        if cols[2] != half {
            continue;
        }
        n += 1;
        let p = parse(cols[0], &v);
        if cols[1].split('|').any(|i| i == p.intent.as_str()) {
            right += 1;
        } else {
            missed.push(format!("{:?}: want {}, got {}", cols[0], cols[1], p.intent.as_str()));
        }
        assert!(
            !p.intent.mutating() || cols[1].split('|').all(|i| Intent::from_name(i).is_some_and(|i| i.mutating())),
            "{:?} would act",
            cols[0]
        );
    }
    (n, right, missed)
}

#[test]
fn questions_written_by_others_are_understood() {
    let halves = ["a", "b"].map(|h| (h, public_accuracy(h)));
    for (half, (n, right, missed)) in &halves {
        println!("public.tsv half {half}: {right} of {n} ({:.0} %)", 100.0 * *right as f64 / *n as f64);
        println!("{}", missed.join("\n"));
    }
    for (half, (n, right, missed)) in halves {
        assert!(n >= 20, "half {half} holds {n} questions");
        assert!(right * 10 >= n * 9, "half {half}: {right} of {n} understood, aim 90 %:\n{}", missed.join("\n"));
    }
}
