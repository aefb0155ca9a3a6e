//! The manual cannot drift from the code: every page of `docs/` (and the README) is read, and
//! - every chapter is in `SUMMARY.md`, and every link inside the repository leads to a file of
//!   it (none outside it);
//! - every `json` block parses as JSON (no `//` comments), and a generic alert or a change
//!   event parses as medic's intake parses it;
//! - every `yaml` block parses as YAML, a runbook as a runbook, a config as a config;
//! - every `medic …` command (in `sh`/`console` blocks and in inline code) names a subcommand
//!   and options that `medic … --help` lists, every `cargo run --example` a benchmark that
//!   takes those options, and every `curl -d` body is JSON;
//! - the figures that follow from the repository are the repository's (the number of checked
//!   phrasings, every audit record kind listed).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pages: the README and every Markdown file of docs/src.
fn pages() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md")];
    let mut src: Vec<PathBuf> =
        std::fs::read_dir(root().join("docs/src")).unwrap().map(|e| e.unwrap().path()).collect();
    src.sort();
    files.extend(src.into_iter().filter(|p| p.extension().is_some_and(|x| x == "md")));
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// The fenced blocks of a page: (language, text, line of the fence).
fn blocks(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), n + 1, String::new())),
            (Some(_), Some(_)) => {
                let (lang, at, body) = open.take().unwrap();
                out.push((lang, body, at));
            }
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

#[test]
fn every_chapter_is_in_the_summary_and_every_link_leads_inside_the_repository() {
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).unwrap();
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let listed: BTreeSet<String> = link.captures_iter(&summary).map(|c| c[1].to_string()).collect();
    let canonical_root = root().canonicalize().unwrap();
    let inline_code = regex::Regex::new(r"`[^`]*`").unwrap();
    let mut failures = Vec::new();
    for (path, text) in pages() {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if path.parent().unwrap().ends_with("src") && name != "SUMMARY.md" && !listed.contains(&name) {
            failures.push(format!("{name} is not in SUMMARY.md"));
        }
        // Links in prose only: `[label](url)` inside inline code is an example, not a link.
        let prose = inline_code.replace_all(&text, "").to_string();
        for c in link.captures_iter(&prose) {
            let target = c[1].split('#').next().unwrap();
            if target.is_empty() || target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let file = path.parent().unwrap().join(target);
            match file.canonicalize() {
                Ok(f) if f.starts_with(&canonical_root) => {}
                Ok(f) => failures.push(format!(
                    "{}: {target} leads outside the repository ({})",
                    path.display(),
                    f.display()
                )),
                Err(_) => failures.push(format!("{}: {target} does not exist", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_json_and_yaml_snippet_parses_as_what_it_shows() {
    let mut failures = Vec::new();
    let mut counts = (0, 0);
    for (path, text) in pages() {
        for (lang, body, at) in blocks(&text) {
            let at = format!("{}:{at}", path.display());
            match lang.as_str() {
                "json" => {
                    counts.0 += 1;
                    let v: serde_json::Value = match serde_json::from_str(&body) {
                        Ok(v) => v,
                        Err(e) => {
                            failures.push(format!("{at}: not JSON: {e}"));
                            continue;
                        }
                    };
                    if v["alerts"].is_array() {
                        if let Err(e) = medic::intake::generic::parse(body.as_bytes(), 0) {
                            failures.push(format!("{at}: not a generic alert payload: {e:?}"));
                        }
                    } else if v.get("kind").is_some()
                        && v.get("service").is_some()
                        && let Err(e) = medic::intake::changes::parse(body.as_bytes(), 0)
                    {
                        failures.push(format!("{at}: not a change event: {e:?}"));
                    }
                }
                "yaml" => {
                    counts.1 += 1;
                    let v: serde_json::Value = match serde_norway::from_str(&body) {
                        Ok(v) => v,
                        Err(e) => {
                            failures.push(format!("{at}: not YAML: {e}"));
                            continue;
                        }
                    };
                    if v.get("id").is_some() && v.get("plan").is_some() {
                        if let Err(e) = serde_norway::from_str::<medic::runbook::Runbook>(&body) {
                            failures.push(format!("{at}: not a runbook: {e}"));
                        }
                    } else if v.get("receivers").is_some() {
                        // Alertmanager's configuration: amtool, the real client, is the judge.
                        failures.extend(amtool_accepts(&body, &at));
                    } else if v.get("expect").is_some() || (v.get("name").is_some() && v.get("alerts").is_some()) {
                        // A scenario, or the part of one a page shows (completed with what
                        // every scenario has).
                        let whole = match v.get("name") {
                            Some(_) => body.clone(),
                            None => format!("name: docs\nnow: 2026-01-01T00:00:00Z\nalerts: []\n{body}"),
                        };
                        if let Err(e) = serde_norway::from_str::<medic::scenario::Scenario>(&whole) {
                            failures.push(format!("{at}: not a scenario: {e}"));
                        }
                    } else if let Err(e) = medic::config::Config::parse(&body, &at) {
                        // Secrets are references: one the test's environment lacks is fine.
                        let text = e.to_string();
                        let unresolved = text.lines().skip(1).all(|l| l.contains("environment variable"));
                        if !unresolved {
                            failures.push(format!("{at}: not a medic config: {text}"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    assert!(counts.0 >= 2 && counts.1 >= 2, "{counts:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What `amtool check-config` says of an Alertmanager configuration snippet (completed with the
/// route every configuration needs, when it has none); under CI=true amtool must be there.
fn amtool_accepts(snippet: &str, at: &str) -> Option<String> {
    if !common::stack::on_path("amtool") {
        common::unavailable(&format!("amtool (Debian's prometheus-alertmanager) is not installed, for {at}"));
        return None;
    }
    let mut text = snippet.to_string();
    if !snippet.contains("route:") {
        text.push_str("route:\n  receiver: medic\n");
    }
    let file = std::env::temp_dir().join(format!("medic-docs-am-{}-{}.yml", std::process::id(), at.len()));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("amtool").arg("check-config").arg(&file).output().unwrap();
    let _ = std::fs::remove_file(&file);
    (!out.status.success()).then(|| {
        format!(
            "{at}: amtool check-config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `medic SUB [SUBSUB] [--opts]` as written in a page → the subcommands and the options.
fn medic_command(line: &str) -> Option<(Vec<String>, Vec<String>)> {
    let rest = line
        .split_once("medic ")
        .filter(|(before, _)| {
            before.is_empty() || before.ends_with('/') || before.ends_with("-- ") || before.ends_with(' ')
        })
        .map(|(_, r)| r)?;
    let rest = rest.split('#').next().unwrap();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let subs: Vec<String> = words
        .iter()
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
        .take(2)
        .map(|w| w.to_string())
        .collect();
    let opts = words.iter().filter(|w| w.starts_with("--")).map(|w| w.split('=').next().unwrap().to_string()).collect();
    (!subs.is_empty()).then_some((subs, opts))
}

#[test]
fn every_command_names_what_exists() {
    let code = regex::Regex::new(r"`(medic [^`]+)`").unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut helps: std::collections::BTreeMap<Vec<String>, String> = Default::default();
    let mut help = |subs: &[String]| -> String {
        helps
            .entry(subs.to_vec())
            .or_insert_with(|| {
                let out =
                    std::process::Command::new(env!("CARGO_BIN_EXE_medic")).args(subs).arg("--help").output().unwrap();
                if out.status.success() { String::from_utf8_lossy(&out.stdout).to_string() } else { String::new() }
            })
            .clone()
    };
    for (path, text) in pages() {
        let mut lines: Vec<String> = Vec::new();
        for (lang, body, _) in blocks(&text) {
            // Continuation lines join their command; in a console transcript only `$ ` lines are
            // commands (the rest is what they printed).
            let joined = body.replace("\\\n", " ");
            match lang.as_str() {
                "sh" | "bash" => lines.extend(joined.lines().map(str::to_string)),
                "console" => lines.extend(joined.lines().filter_map(|l| l.strip_prefix("$ ")).map(str::to_string)),
                _ => {}
            }
        }
        let shell = lines.len();
        lines.extend(code.captures_iter(&text).map(|c| c[1].to_string()));
        for (n, line) in lines.into_iter().enumerate() {
            // In prose, `medic …` is a command only when its first word is a subcommand
            // ("medic incident #N:" is a comment medic writes).
            if let Some((mut subs, opts)) =
                medic_command(&line).filter(|(subs, _)| n < shell || help(&[]).contains(&format!("  {}  ", subs[0])))
            {
                // `medic runbooks grant ID`: the second word may be an argument.
                if subs.len() == 2 && help(&subs).is_empty() {
                    subs.pop();
                }
                let h = help(&subs);
                checked += 1;
                if h.is_empty() {
                    failures.push(format!("{}: `medic {}` is not a command", path.display(), subs.join(" ")));
                    continue;
                }
                for o in opts.iter().filter(|o| !h.contains(o.as_str())) {
                    failures.push(format!("{}: `medic {}` has no option {o}: {line}", path.display(), subs.join(" ")));
                }
            }
            if let Some((_, rest)) = line.split_once("--example ") {
                let bench = rest.split_whitespace().next().unwrap();
                let source = std::fs::read_to_string(root().join(format!("examples/{bench}.rs")))
                    .unwrap_or_else(|_| panic!("{}: no example {bench}", path.display()));
                for o in rest.split('#').next().unwrap().split_whitespace().filter(|w| w.starts_with("--")) {
                    let o = o.trim_end_matches(']').split('=').next().unwrap();
                    if !source.contains(&format!("\"{o}\"")) && !source.contains(&format!("{o} ")) {
                        failures.push(format!("{}: {bench} takes no {o}", path.display()));
                    }
                }
                checked += 1;
            }
            if line.contains("curl ")
                && let Some((_, body)) = line.split_once(" -d '")
            {
                let body = body.split('\'').next().unwrap();
                if let Err(e) = serde_json::from_str::<serde_json::Value>(body) {
                    failures.push(format!("{}: a curl body that is not JSON ({e}): {body}", path.display()));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} commands found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every table has one header and one separator row, and every row as many cells as its header.
#[test]
fn every_table_is_well_formed() {
    let mut failures = Vec::new();
    for (path, text) in pages() {
        let mut table: Vec<(usize, &str)> = Vec::new();
        let mut in_code = false;
        for (n, line) in text.lines().enumerate().chain(std::iter::once((usize::MAX, ""))) {
            in_code ^= line.starts_with("```");
            if !in_code && line.starts_with('|') {
                table.push((n + 1, line));
                continue;
            }
            if table.is_empty() {
                continue;
            }
            let cells = |l: &str| l.trim().trim_matches('|').split(" | ").count().max(l.matches("|---").count());
            let separator = |l: &str| l.starts_with("|---") || l.starts_with("|:--");
            let width = table[0].1.matches('|').count();
            for (i, (at, l)) in table.iter().enumerate() {
                if (i == 1) != separator(l) {
                    failures.push(format!(
                        "{}:{at}: {}",
                        path.display(),
                        if i == 1 { "no separator row" } else { "a second header" }
                    ));
                }
                if i != 1 && l.replace("\\|", "").matches('|').count() != width && cells(l) != cells(table[0].1) {
                    failures.push(format!(
                        "{}:{at}: {} cells where the header has {}",
                        path.display(),
                        cells(l),
                        cells(table[0].1)
                    ));
                }
            }
            table.clear();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The figures that follow from the repository say what the repository holds.
#[test]
fn the_figures_that_follow_from_the_repository_are_its_own() {
    let all: String = pages().into_iter().map(|(_, t)| t).collect::<Vec<_>>().join("\n");
    let table = std::fs::read_to_string(root().join("tests/ask/phrasings.tsv")).unwrap();
    let phrasings = table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    let said = regex::Regex::new(r"(\d+) phrasings with their expected intent").unwrap();
    assert!(said.is_match(&all), "the docs no longer say how many phrasings are checked");
    for c in said.captures_iter(&all) {
        assert_eq!(c[1].parse::<usize>().unwrap(), phrasings, "the docs say {} phrasings", &c[1]);
    }
    let audit = std::fs::read_to_string(root().join("docs/src/audit.md")).unwrap();
    let missing: Vec<&str> =
        medic::audit::Kind::ALL.iter().map(|k| k.as_str()).filter(|k| !audit.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "docs/src/audit.md does not list these record kinds: {missing:?}");
}
