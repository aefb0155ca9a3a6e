//! The intent parser: a question in plain language → an [`Intent`] and its [`Slots`]. Pure (no
//! IO, no clock: `now` comes in the [`Vocabulary`]), bounded (only the first
//! [`MAX_CHARS`] characters are read) and explainable: each intent is a table of words and
//! phrases with weights; the best total wins, ties go to the more specific intent, and below
//! [`THRESHOLD`] the answer is `unknown` with the closest intents as suggestions.
//!
//! Tolerance: case, punctuation, possessives ("checkout's"), one typo in a word of four or more
//! letters (two from eight), and filler words.
//!
//! Mutating intents (`pause`, `resume`, `grant`, `revoke`, `resolve`, `reopen`, `silence`) are
//! taken only from an order: exact words (no typo), a sentence that starts with a command verb
//! ("pause automation", "mark it resolved", "@medic stop all automation now"), never a question
//! (a question mark, or a question word or auxiliary first: "should we pause automation?", "did
//! someone resolve this", "how do I resume automation"), never under a negation ("checkout
//! cannot resolve postgres"), never a statement ("when payments resume we are done"). Such a
//! sentence is answered as the question it is (its best read-only intent; a question about a
//! state change, with none, is `status`) and [`Parsed::note`] says why nothing was done. A
//! message medic overheard ([`Parsed::overheard`]) never acts either.

use crate::time::Millis;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Only this much of a question is read: a 100 kB paste costs what a sentence does.
pub const MAX_CHARS: usize = 500;
/// The score below which a question is `unknown`.
pub const THRESHOLD: u32 = 3;

/// What a question asks for. The names are a contract (JSON, docs, the LLM's tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// How a service is: what the diagnosis found about it, its alerts.
    Health,
    /// When the incident started, how bad it is, whether it still is.
    Onset,
    /// The service's pods as the cluster has them: states, restarts, how many.
    Cluster,
    Changes,
    Dependencies,
    Metric,
    Logs,
    Alerts,
    Why,
    WhoApproved,
    Status,
    Timeline,
    Runbooks,
    Silence,
    Pause,
    Resume,
    /// Give the incident's runbook (or the one named) `auto`, within policy.
    Grant,
    /// Take `auto` away from the incident's runbook (or the one named).
    Revoke,
    Resolve,
    Reopen,
    /// Open a ticket for the incident on the configured trackers (GitHub, Jira).
    Ticket,
    Help,
    Unknown,
}

impl Intent {
    /// Every intent, in tie-break order: on equal scores the earlier (more specific) wins.
    pub const ALL: [Intent; 23] = [
        Intent::WhoApproved,
        Intent::Ticket,
        Intent::Revoke,
        Intent::Grant,
        Intent::Reopen,
        Intent::Resume,
        Intent::Pause,
        Intent::Silence,
        Intent::Resolve,
        Intent::Why,
        Intent::Onset,
        Intent::Cluster,
        Intent::Health,
        Intent::Changes,
        Intent::Dependencies,
        Intent::Metric,
        Intent::Logs,
        Intent::Alerts,
        Intent::Runbooks,
        Intent::Timeline,
        Intent::Status,
        Intent::Help,
        Intent::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Health => "health",
            Intent::Onset => "onset",
            Intent::Cluster => "cluster",
            Intent::Changes => "changes",
            Intent::Dependencies => "dependencies",
            Intent::Metric => "metric",
            Intent::Logs => "logs",
            Intent::Alerts => "alerts",
            Intent::Why => "why",
            Intent::WhoApproved => "who_approved",
            Intent::Status => "status",
            Intent::Timeline => "timeline",
            Intent::Runbooks => "runbooks",
            Intent::Silence => "silence",
            Intent::Pause => "pause",
            Intent::Resume => "resume",
            Intent::Grant => "grant",
            Intent::Revoke => "revoke",
            Intent::Resolve => "resolve",
            Intent::Reopen => "reopen",
            Intent::Ticket => "ticket",
            Intent::Help => "help",
            Intent::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.as_str() == name)
    }

    /// Whether the intent would change something (it is never taken from a typo or an LLM).
    pub fn mutating(self) -> bool {
        matches!(
            self,
            Intent::Silence
                | Intent::Pause
                | Intent::Resume
                | Intent::Grant
                | Intent::Revoke
                | Intent::Resolve
                | Intent::Reopen
                | Intent::Ticket
        )
    }

    /// A question that asks for it, for help texts and suggestions.
    pub fn example(self) -> &'static str {
        match self {
            Intent::Health => "what's wrong with checkout?",
            Intent::Onset => "when did it start, and how bad is it?",
            Intent::Cluster => "are any payments pods crash-looping?",
            Intent::Changes => "what changed in checkout in the last 2 hours?",
            Intent::Dependencies => "who depends on postgres?",
            Intent::Metric => "show checkout latency since 14:00",
            Intent::Logs => "any new errors in the checkout logs?",
            Intent::Alerts => "what else is firing?",
            Intent::Why => "why do you think so?",
            Intent::WhoApproved => "who approved the plan?",
            Intent::Status => "status",
            Intent::Timeline => "timeline",
            Intent::Runbooks => "what can we do here?",
            Intent::Silence => "silence this for 1h",
            Intent::Pause => "pause automation",
            Intent::Resume => "resume automation",
            Intent::Grant => "grant autonomy to this runbook",
            Intent::Revoke => "revoke autonomy of this runbook",
            Intent::Resolve => "resolve this incident",
            Intent::Reopen => "reopen this incident",
            Intent::Ticket => "open a ticket for this incident",
            Intent::Help => "help",
            Intent::Unknown => "",
        }
    }
}

/// Which way along the dependency graph a `dependencies` question looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Who calls the service (upstream of it).
    Callers,
    /// What the service calls (downstream of it).
    Callees,
}

/// The signal a `metric` question names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Latency,
    Errors,
    Traffic,
    Cpu,
    Memory,
    Saturation,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Latency => "latency",
            Signal::Errors => "errors",
            Signal::Traffic => "traffic",
            Signal::Cpu => "cpu",
            Signal::Memory => "memory",
            Signal::Saturation => "saturation",
        }
    }

    /// Whether a context query's name measures this signal.
    pub fn names(self, query: &str) -> bool {
        let q = query.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| q.contains(w));
        match self {
            Signal::Latency => any(&["latency", "duration", "p99", "p95", "p50", "response_time"]),
            Signal::Errors => any(&["error", "5xx", "fail"]),
            Signal::Traffic => any(&["request_rate", "requests", "rps", "qps", "throughput", "traffic"]),
            Signal::Cpu => any(&["cpu"]),
            Signal::Memory => any(&["memory", "mem_", "rss", "heap"]),
            Signal::Saturation => any(&["saturation", "throttl", "cpu", "memory", "pool", "queue"]),
        }
    }
}

/// The pieces of a question besides its intent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slots {
    /// A known service, as the topology or the incidents spell it.
    pub service: Option<String>,
    /// `[start, end]`, UTC milliseconds.
    pub window: Option<(Millis, Millis)>,
    /// How long (a silence), in milliseconds.
    pub duration: Option<Millis>,
    pub signal: Option<Signal>,
    pub direction: Option<Direction>,
    /// An incident named in the question (`#12`, `incident 12`).
    pub incident: Option<i64>,
    /// A hypothesis by rank, from 1 (`why hypothesis 2`).
    pub hypothesis: Option<usize>,
    /// A word where a service is named that is no service medic knows: said back, never
    /// silently replaced by another.
    pub unknown_service: Option<String>,
    /// A time the question names that the parser could not read (`monday`, `13:45` without a
    /// day it can place, `august` without a day): said back, never read as another.
    pub unread_time: Option<String>,
}

impl Slots {
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(s) = &self.service {
            m.insert("service".into(), json!(s));
        }
        if let Some(u) = &self.unknown_service {
            m.insert("unknown_service".into(), json!(u));
        }
        if let Some(t) = &self.unread_time {
            m.insert("unread_time".into(), json!(t));
        }
        if let Some((a, b)) = self.window {
            m.insert("window".into(), json!({"start": crate::time::rfc3339(a), "end": crate::time::rfc3339(b)}));
        }
        if let Some(d) = self.duration {
            m.insert(
                "duration".into(),
                json!(humantime::format_duration(std::time::Duration::from_millis(d as u64)).to_string()),
            );
        }
        if let Some(s) = self.signal {
            m.insert("signal".into(), json!(s.as_str()));
        }
        if let Some(d) = self.direction {
            m.insert("direction".into(), json!(if d == Direction::Callers { "callers" } else { "callees" }));
        }
        if let Some(i) = self.incident {
            m.insert("incident".into(), json!(i));
        }
        if let Some(h) = self.hypothesis {
            m.insert("hypothesis".into(), json!(h));
        }
        Value::Object(m)
    }
}

/// What a question was understood as.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub intent: Intent,
    pub slots: Slots,
    /// For `unknown`: the closest intents, best first. For a refused negation, the intent
    /// that was not taken.
    pub suggestions: Vec<Intent>,
    /// Why a question that reads as a command was not taken as one.
    pub note: Option<&'static str>,
}

/// What the parser knows besides the question: the services it can name, the time, the offset
/// that times of day are read in.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub services: Vec<String>,
    pub now: Millis,
    /// Seconds east of UTC.
    pub offset: i32,
}

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// Each intent's words and phrases, with their weights.
const TABLE: &[(Intent, &[(&str, u32)])] = &[
    (Intent::Help, &[("help", 6), ("commands", 4), ("what can you do", 7), ("how do i use you", 7), ("usage", 3)]),
    (
        Intent::Pause,
        &[
            ("pause", 6),
            ("kill switch", 6),
            ("stop automation", 7),
            ("freeze automation", 7),
            ("automation", 2),
            ("stop", 2),
            ("halt", 2),
            ("disable", 2),
            ("suspend", 2),
        ],
    ),
    (Intent::Grant, &[("grant autonomy", 10), ("grant auto", 10), ("let it run by itself", 10), ("allow auto", 9)]),
    (
        Intent::Revoke,
        &[
            ("revoke autonomy", 10),
            ("revoke auto", 10),
            ("no more auto", 9),
            ("needs approval again", 10),
            ("require approval again", 10),
        ],
    ),
    (
        Intent::Resume,
        &[
            ("resume", 6),
            ("unpause", 7),
            ("un-pause", 7),
            ("restart automation", 8),
            ("automation back on", 8),
            ("automation", 2),
            ("enable", 2),
        ],
    ),
    (
        Intent::Resolve,
        &[
            ("resolve", 6),
            ("resolved", 5),
            ("close this incident", 7),
            ("close the incident", 7),
            ("mark as resolved", 8),
            ("mark resolved", 8),
            ("close incident", 7),
        ],
    ),
    (Intent::Reopen, &[("reopen", 8), ("re-open", 8), ("open it again", 8), ("open again", 7)]),
    (
        Intent::Ticket,
        &[
            ("ticket", 6),
            ("tickets", 5),
            ("open a ticket", 9),
            ("file a ticket", 9),
            ("create a ticket", 9),
            ("raise a ticket", 9),
            ("open an issue", 8),
            ("file an issue", 8),
            ("create an issue", 8),
            ("jira", 4),
        ],
    ),
    (Intent::Silence, &[("silence", 6), ("mute", 6), ("snooze", 6), ("shut up", 6), ("quiet", 4)]),
    (
        Intent::WhoApproved,
        &[
            ("who approved", 9),
            ("approved by", 8),
            ("approved", 4),
            ("approver", 5),
            ("approvers", 5),
            ("signed off", 6),
            ("approval", 3),
        ],
    ),
    (
        Intent::Status,
        &[
            ("status", 5),
            ("state", 3),
            ("sitrep", 6),
            ("summary", 4),
            ("summarize", 4),
            ("summarise", 4),
            ("where are we", 6),
            ("going on", 6),
            ("happening", 5),
            ("overview", 4),
            ("update", 3),
            ("is it resolved", 9),
            ("paused", 3),
            ("progress", 3),
            ("tldr", 5),
        ],
    ),
    (
        Intent::Timeline,
        &[
            ("timeline", 6),
            ("what happened", 5),
            ("sequence of events", 7),
            ("events", 3),
            ("history", 3),
            ("chronology", 6),
            ("audit", 4),
            ("audit trail", 6),
            ("so far", 2),
        ],
    ),
    (
        Intent::Runbooks,
        &[
            ("runbook", 6),
            ("runbooks", 6),
            ("remediation", 5),
            ("remediate", 5),
            ("what can we do", 7),
            ("what can i do", 7),
            ("what should we do", 7),
            ("what could be done", 7),
            ("how to fix", 6),
            ("how do we fix", 6),
            ("how can we fix", 6),
            ("how do i fix", 6),
            ("fix", 3),
            ("plan", 3),
            ("options", 3),
            ("mitigate", 4),
            ("mitigation", 4),
            ("restart", 3),
            ("rollback", 3),
            ("roll back", 3),
            ("scale", 2),
            ("playbook", 5),
        ],
    ),
    (
        Intent::Why,
        &[
            ("why", 5),
            ("y tho", 6),
            ("how come", 6),
            ("reason", 4),
            ("reasons", 4),
            ("reasoning", 4),
            ("explain", 5),
            ("how sure", 6),
            ("how confident", 6),
            ("confidence", 4),
            ("root cause", 5),
            ("cause", 3),
            ("justify", 4),
            ("hypothesis", 4),
            ("diagnosis", 4),
            ("what makes you think", 7),
            ("evidence", 3),
        ],
    ),
    (
        Intent::Cluster,
        &[
            ("pods", 6),
            // One pod, one container: usually where the question looks ("the logs of the
            // checkout pod"), not what it asks about.
            ("pod", 3),
            ("crashloop", 7),
            ("crashlooping", 7),
            ("crash-looping", 7),
            ("crash looping", 7),
            ("crashloopbackoff", 7),
            ("restarts", 6),
            ("restarting", 5),
            ("replicas", 6),
            ("replica", 6),
            ("oomkilled", 7),
            ("oom killed", 7),
            ("evicted", 6),
            ("containers", 5),
            ("container", 3),
            ("running", 3),
        ],
    ),
    (
        Intent::Onset,
        &[
            ("when did it start", 9),
            ("when did this start", 9),
            ("when did it begin", 9),
            ("when did this begin", 9),
            ("since when", 8),
            ("how long", 6),
            ("onset", 7),
            ("start time", 6),
            ("how bad", 8),
            ("blast radius", 8),
            ("impact", 6),
            ("severity", 5),
            ("severe", 5),
            ("affected", 4),
            ("still happening", 7),
            ("still going", 7),
            ("still ongoing", 7),
            ("ongoing", 4),
        ],
    ),
    (
        Intent::Health,
        &[
            ("wrong with", 8),
            ("issue with", 7),
            ("issues with", 7),
            ("problem with", 7),
            ("problems with", 7),
            ("matter with", 7),
            ("healthy", 6),
            ("unhealthy", 6),
            ("health", 5),
            ("broken", 4),
            ("ok", 3),
            ("okay", 3),
            ("doing", 3),
            ("look like", 3),
            ("looks like", 3),
            ("problem", 4),
            ("problems", 4),
            ("issue", 4),
            ("issues", 4),
            ("troubleshoot", 6),
            ("investigate", 5),
            ("debug", 5),
            ("diagnose", 5),
        ],
    ),
    (
        Intent::Changes,
        &[
            ("changed", 5),
            ("change", 4),
            ("changes", 5),
            ("deploy", 5),
            ("deployed", 5),
            ("deploys", 5),
            // A Deployment is also the workload ("the memory of the cart deployment").
            ("deployment", 2),
            ("deployments", 4),
            ("release", 4),
            ("released", 4),
            ("rollout", 4),
            ("rolled out", 5),
            ("shipped", 4),
            ("commit", 3),
            ("commits", 3),
            ("merged", 3),
            ("new version", 5),
            ("previous version", 6),
            ("last version", 6),
            ("config change", 6),
        ],
    ),
    (
        Intent::Dependencies,
        &[
            ("depend", 5),
            ("depends", 5),
            ("dependencies", 6),
            ("dependency", 6),
            ("deps", 5),
            ("upstream", 5),
            ("downstream", 5),
            ("callers", 5),
            ("calls", 4),
            ("call", 3),
            ("uses", 3),
            ("consumers", 4),
            ("talks to", 5),
            ("talk to", 5),
            ("topology", 5),
            ("relies on", 5),
            ("rely on", 5),
        ],
    ),
    (
        Intent::Logs,
        &[
            ("log", 5),
            ("logs", 5),
            ("logging", 4),
            ("errors", 3),
            ("error", 2),
            ("exceptions", 4),
            ("exception", 4),
            ("stack trace", 5),
            ("stack traces", 5),
            ("stacktrace", 5),
            ("error messages", 5),
            ("patterns", 4),
            ("log lines", 6),
            ("panics", 3),
            ("warnings", 3),
        ],
    ),
    (
        Intent::Metric,
        &[
            ("graph", 5),
            ("chart", 5),
            ("plot", 5),
            ("metric", 5),
            ("metrics", 5),
            ("latency", 4),
            ("error rate", 7),
            ("error ratio", 7),
            ("p99", 4),
            ("p95", 4),
            ("p50", 4),
            ("cpu", 4),
            ("memory", 4),
            ("usage", 3),
            ("utilization", 4),
            ("utilisation", 4),
            ("consumption", 4),
            ("traffic", 4),
            ("throughput", 4),
            ("rps", 4),
            ("qps", 4),
            ("requests", 2),
            ("requests per second", 6),
            ("saturation", 4),
            ("show", 1),
            ("trend", 3),
            ("response time", 5),
            ("look like", 2),
            ("slow", 2),
            ("5xx", 3),
        ],
    ),
    (
        Intent::Alerts,
        &[
            ("alerts", 5),
            ("alert", 4),
            ("firing", 5),
            ("what else", 4),
            ("alarms", 4),
            ("alerting", 5),
            ("paging", 3),
            ("other alerts", 8),
            ("anything else", 4),
        ],
    ),
];

/// Words that carry no intent and are never read as a misspelt service or keyword.
const STOPWORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "were",
    "be",
    "what",
    "whats",
    "which",
    "who",
    "whom",
    "how",
    "when",
    "where",
    "does",
    "did",
    "do",
    "done",
    "me",
    "my",
    "us",
    "we",
    "you",
    "your",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "there",
    "here",
    "in",
    "on",
    "of",
    "for",
    "to",
    "from",
    "at",
    "by",
    "with",
    "and",
    "or",
    "but",
    "please",
    "pls",
    "can",
    "could",
    "would",
    "should",
    "will",
    "medic",
    "hey",
    "hi",
    "hello",
    "thanks",
    "about",
    "any",
    "some",
    "all",
    "last",
    "past",
    "since",
    "between",
    "until",
    "till",
    "ago",
    "today",
    "yesterday",
    "hour",
    "hours",
    "minute",
    "minutes",
    "service",
    "services",
    "incident",
    "now",
    "just",
    "else",
    "been",
    "have",
    "has",
    "had",
    "get",
    "give",
    "tell",
    "know",
    "let",
    "see",
    "into",
    "than",
    "then",
    "them",
    "they",
    "their",
    "our",
    "also",
    "right",
    "before",
    "after",
    "during",
    "around",
    "started",
    "start",
    "this",
    "one",
    "new",
];

type Index = HashMap<&'static str, Vec<(Intent, u32)>>;
type Phrases = Vec<(Intent, Vec<&'static str>, u32)>;

/// Single words → their intents; phrases kept apart.
fn index() -> &'static (Index, Phrases) {
    static I: OnceLock<(Index, Phrases)> = OnceLock::new();
    I.get_or_init(|| {
        let mut words: Index = HashMap::new();
        let mut phrases = Vec::new();
        for (intent, entries) in TABLE {
            for (k, w) in *entries {
                if k.contains(' ') {
                    phrases.push((*intent, k.split(' ').collect(), *w));
                } else {
                    words.entry(*k).or_default().push((*intent, *w));
                }
            }
        }
        (words, phrases)
    })
}

/// Lower-cased words of `text` (its first [`MAX_CHARS`] characters): Slack's `<@U…>` and
/// `<#C…|…>` references dropped, possessives cut, apostrophes removed, punctuation split on
/// except inside times (`14:00`), names (`payment-gateway`) and `#12`.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_ref = false;
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        let mut t = cur.trim_matches(|c| matches!(c, '-' | '_' | '.' | ':' | '\'')).to_string();
        if let Some(s) = t.strip_suffix("'s") {
            t = s.to_string();
        }
        t.retain(|c| c != '\'');
        if !t.is_empty() && t.len() <= 64 {
            out.push(t);
        }
        cur.clear();
    };
    for c in text.chars().take(MAX_CHARS) {
        if in_ref {
            in_ref = c != '>';
            continue;
        }
        if c == '<' {
            flush(&mut cur, &mut out);
            in_ref = true;
            continue;
        }
        let c = if c == '\u{2019}' { '\'' } else { c };
        if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '#' | '\'') {
            cur.extend(c.to_lowercase());
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Whether `token` is `word` with a typo: same first letter, close in length, one edit (two
/// from eight letters).
fn near(token: &str, word: &str) -> bool {
    let (n, m) = (token.chars().count(), word.chars().count());
    if n < 4 || m < 4 || n.abs_diff(m) > 2 || token.chars().next() != word.chars().next() {
        return false;
    }
    let max = if m >= 8 { 2 } else { 1 };
    n.abs_diff(m) <= max && strsim::damerau_levenshtein(token, word) <= max
}

fn is_stopword(t: &str) -> bool {
    STOPWORDS.contains(&t)
}

/// `toks` with each misspelt keyword replaced by the keyword (the nearest; known services and
/// stopwords are never corrected), and which tokens were.
fn correct(toks: Vec<String>, services: &[String]) -> (Vec<String>, Vec<bool>) {
    let (words, _) = index();
    let mut fuzzy = vec![false; toks.len()];
    let toks = toks
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if words.contains_key(t.as_str())
                || is_stopword(&t)
                || !t.starts_with(|c: char| c.is_alphabetic())
                || services.iter().any(|s| s.eq_ignore_ascii_case(&t))
            {
                return t;
            }
            // Mutating intents take exact words only, so their words are never a correction
            // ("half" is not "halt", "step" is not "stop").
            let best = words
                .iter()
                .filter(|(k, intents)| near(&t, k) && intents.iter().any(|(i, _)| !i.mutating()))
                .map(|(k, _)| k)
                .min_by_key(|k| (strsim::damerau_levenshtein(&t, k), k.len().abs_diff(t.len()), **k));
            match best {
                Some(k) => {
                    fuzzy[i] = true;
                    k.to_string()
                }
                None => t,
            }
        })
        .collect();
    (toks, fuzzy)
}

/// The scores of every intent for `toks` (a corrected word weighs one less, and never
/// counts for a mutating intent).
fn scores(original: &[String], toks: &[String], fuzzy: &[bool]) -> HashMap<Intent, u32> {
    let (words, phrases) = index();
    let mut score: HashMap<Intent, u32> = HashMap::new();
    let has = |toks: &[String], words: &[&str]| {
        toks.windows(words.len()).any(|win| win.iter().zip(words).all(|(t, p)| t == p))
    };
    for (intent, words, w) in phrases {
        if has(original, words) || has(toks, words) {
            *score.entry(*intent).or_default() += w;
        }
    }
    for (t, fuzzy) in toks.iter().zip(fuzzy) {
        for (i, w) in words.get(t.as_str()).into_iter().flatten() {
            if !*fuzzy {
                *score.entry(*i).or_default() += w;
            } else if !i.mutating() {
                *score.entry(*i).or_default() += w - 1;
            }
        }
    }
    score
}

/// Understands `text`.
pub fn parse(text: &str, vocab: &Vocabulary) -> Parsed {
    let toks = tokens(text);
    let mut slots = Slots::default();
    if toks.is_empty() {
        return Parsed { intent: Intent::Help, slots, suggestions: Vec::new(), note: None };
    }
    let original = toks.clone();
    let (toks, fuzzy) = correct(toks, &vocab.services);
    let mut score = scores(&original, &toks, &fuzzy);
    // "The payment-api pod had issues at 13:45. What happened?": the sentences before the
    // question set the scene (service, time); the question says what is asked, so it counts twice.
    if let Some(question) = question_sentence(text) {
        let original = tokens(question);
        let (toks, fuzzy) = correct(original.clone(), &vocab.services);
        for (i, s) in scores(&original, &toks, &fuzzy) {
            *score.entry(i).or_default() += s;
        }
    }
    let ranked: Vec<(Intent, u32)> = {
        let mut r: Vec<(Intent, u32)> = Intent::ALL.iter().filter_map(|i| score.get(i).map(|s| (*i, *s))).collect();
        // Stable: equal scores keep the tie-break order of `Intent::ALL`.
        r.sort_by_key(|x| std::cmp::Reverse(x.1));
        r
    };
    let mut intent = match ranked.first() {
        Some((i, s)) if *s >= THRESHOLD => *i,
        _ => Intent::Unknown,
    };
    let mut suggestions: Vec<Intent> = Vec::new();
    let mut note = None;
    if intent.mutating() {
        let not_an_order = if negated(&toks) {
            Some(NEGATION)
        } else if asks(text, &original) {
            Some(QUESTION)
        } else if !ordered(&original) {
            Some(STATEMENT)
        } else {
            None
        };
        if let Some(why) = not_an_order {
            suggestions.push(intent);
            note = Some(why);
            // Answered as what it asks: its best read-only intent; a question about a state
            // change with none ("did someone resolve this?") asks for the state.
            let read_only = ranked.iter().find(|(i, s)| !i.mutating() && *s >= THRESHOLD).map(|(i, _)| *i);
            intent = match (why, read_only) {
                (NEGATION, _) => Intent::Unknown,
                (_, Some(i)) => i,
                (QUESTION, None) => Intent::Status,
                (_, None) => Intent::Unknown,
            };
        }
    }
    // Plans are approved, rejected and run by a person's button, never by a sentence.
    if original.iter().any(|t| matches!(t.as_str(), "approve" | "execute" | "reject" | "deny")) {
        intent = Intent::Unknown;
        note = Some("plans are approved or rejected only with the buttons on the incident's message, by a person");
    }
    // An order to act on the system ("roll it back", "restart checkout") is not for a sentence
    // either: it is answered with the plan and the runbooks, whose Approve button runs them.
    if note.is_none()
        && !intent.mutating()
        && !asks(text, &original)
        && !negated(&toks)
        && first_word(&original).is_some_and(|t| ACTS.contains(&t))
    {
        intent = Intent::Runbooks;
        note = Some(ACTION);
    }
    if intent == Intent::Unknown {
        suggestions.extend(ranked.iter().map(|(i, _)| *i).filter(|i| !i.mutating()).take(3));
        if suggestions.is_empty() {
            suggestions = vec![Intent::Help, Intent::Status];
        }
        suggestions.dedup();
    }

    let mut used = vec![false; toks.len()];
    slots.incident = incident_ref(&toks, &mut used);
    slots.window = window(&toks, &mut used, vocab);
    slots.duration = duration(&toks, &mut used, vocab, intent == Intent::Silence);
    let found = service(&toks, &used, &vocab.services);
    if intent == Intent::Metric {
        slots.signal = signal(&toks);
    }
    if intent == Intent::Dependencies {
        slots.direction = direction(&toks, found.as_ref().map(|(_, at)| *at));
    }
    // Only where a service is what the question is about (not a runbook, a hypothesis, help).
    let about_a_service = matches!(
        intent,
        Intent::Health
            | Intent::Changes
            | Intent::Dependencies
            | Intent::Metric
            | Intent::Logs
            | Intent::Alerts
            | Intent::Silence
            | Intent::Status
    );
    if found.is_none() && about_a_service && !vocab.services.is_empty() {
        slots.unknown_service = unknown_service(&toks, &used);
    }
    slots.service = found.map(|(s, _)| s);
    slots.unread_time = unread_time(&toks, &used);
    if intent == Intent::Why {
        slots.hypothesis = hypothesis(&toks);
    }
    Parsed { intent, slots, suggestions, note }
}

/// The last sentence of `text` when it is a question that other sentences precede.
fn question_sentence(text: &str) -> Option<&str> {
    let text = text.trim_end();
    if !text.ends_with('?') {
        return None;
    }
    let body = &text[..text.len() - 1];
    let at = body
        .char_indices()
        .filter(|(i, c)| matches!(c, '.' | '?' | '!') && body[i + 1..].starts_with(char::is_whitespace))
        .map(|(i, _)| i + 1)
        .next_back()?;
    Some(&text[at..])
}

/// Verbs of an order to act on the system itself.
const ACTS: [&str; 13] = [
    "rollback", "roll", "restart", "scale", "undo", "revert", "redeploy", "bounce", "kill", "delete", "drain",
    "cordon", "failover",
];

/// Why an order to act on the system was answered with the plan.
pub const ACTION: &str = "I do not act on the system from a sentence: a plan runs only when a person clicks Approve on the incident's message";

/// Why a sentence that names a state change did not make one.
pub const NEGATION: &str = "it reads as a negation, so nothing was done";
pub const QUESTION: &str = "it reads as a question, so nothing was done";
pub const STATEMENT: &str =
    "it does not read as an order to me (an order starts with its verb: `pause automation`), so nothing was done";
pub const OVERHEARD: &str =
    "it was not addressed to me (mention me, message me directly or use `/medic`), so nothing was done";

impl Parsed {
    /// `self` as medic overheard it (in a thread, with no mention, no DM, no slash command): a
    /// message medic was not told is only ever answered, never acted on.
    pub fn overheard(mut self) -> Parsed {
        if self.intent.mutating() {
            self.suggestions.insert(0, self.intent);
            self.intent = Intent::Unknown;
            self.note = Some(OVERHEARD);
        }
        self
    }
}

/// "don't", "do not", "never", "no", "cannot", "isn't"… anywhere in the sentence.
fn negated(toks: &[String]) -> bool {
    toks.iter().any(|t| {
        matches!(
            t.as_str(),
            "dont"
                | "never"
                | "not"
                | "no"
                | "nope"
                | "shouldnt"
                | "cant"
                | "cannot"
                | "wont"
                | "wouldnt"
                | "couldnt"
                | "isnt"
                | "arent"
                | "wasnt"
                | "werent"
                | "doesnt"
                | "didnt"
                | "hasnt"
                | "havent"
                | "mustnt"
                | "neither"
                | "nor"
        )
    })
}

/// Words that may stand before what a sentence says: addressing medic, politeness, fillers.
fn lead_in(t: &str) -> bool {
    matches!(
        t,
        "medic"
            | "hey"
            | "hi"
            | "hello"
            | "ok"
            | "okay"
            | "please"
            | "pls"
            | "plz"
            | "kindly"
            | "so"
            | "now"
            | "just"
            | "yes"
            | "yeah"
            | "alright"
            | "right"
            | "then"
            | "and"
            | "also"
            | "go"
            | "ahead"
    )
}

/// The first word of what a sentence says, after its lead-in.
fn first_word(toks: &[String]) -> Option<&str> {
    toks.iter().map(String::as_str).find(|t| !lead_in(t))
}

/// Whether a sentence is a question: a question mark, or a question word or an auxiliary
/// first ("should we…", "did someone…", "can you…", "is it…").
fn asks(text: &str, toks: &[String]) -> bool {
    let text: String = text.chars().take(MAX_CHARS).collect();
    text.contains('?')
        || first_word(toks).is_some_and(|t| {
            matches!(
                t,
                "what"
                    | "whats"
                    | "which"
                    | "who"
                    | "whom"
                    | "whose"
                    | "whos"
                    | "how"
                    | "hows"
                    | "why"
                    | "when"
                    | "whens"
                    | "where"
                    | "wheres"
                    | "should"
                    | "could"
                    | "would"
                    | "can"
                    | "may"
                    | "might"
                    | "shall"
                    | "must"
                    | "will"
                    | "did"
                    | "do"
                    | "does"
                    | "is"
                    | "are"
                    | "am"
                    | "was"
                    | "were"
                    | "has"
                    | "have"
                    | "had"
                    | "wonder"
                    | "any"
                    | "anyone"
                    | "somebody"
                    | "someone"
            )
        })
}

/// Whether a sentence is an order: it starts (after its lead-in) with a command verb.
fn ordered(toks: &[String]) -> bool {
    first_word(toks).is_some_and(|t| {
        matches!(
            t,
            "pause"
                | "halt"
                | "freeze"
                | "stop"
                | "disable"
                | "suspend"
                | "kill"
                | "resume"
                | "unpause"
                | "un-pause"
                | "restart"
                | "enable"
                | "turn"
                | "switch"
                | "resolve"
                | "close"
                | "mark"
                | "reopen"
                | "file"
                | "create"
                | "raise"
                | "re-open"
                | "open"
                | "silence"
                | "mute"
                | "snooze"
                | "shut"
                | "quiet"
                | "grant"
                | "give"
                | "allow"
                | "let"
                | "revoke"
                | "remove"
                | "take"
                | "require"
                | "set"
                | "put"
                | "make"
        )
    })
}

/// `#12` or `incident 12`.
fn incident_ref(toks: &[String], used: &mut [bool]) -> Option<i64> {
    for (i, t) in toks.iter().enumerate() {
        let n = match t.strip_prefix('#') {
            Some(n) => n.parse::<i64>().ok(),
            None if t == "incident" => toks
                .get(i + 1)
                .and_then(|n| n.trim_start_matches('#').parse::<i64>().ok())
                .inspect(|_| used[i + 1] = true),
            None => None,
        };
        if let Some(n) = n.filter(|n| *n > 0) {
            used[i] = true;
            return Some(n);
        }
    }
    None
}

fn unit(t: &str) -> Option<Millis> {
    Some(match t {
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "wk" | "week" | "weeks" => 7 * DAY,
        _ => return None,
    })
}

fn number(t: &str) -> Option<i64> {
    if let Ok(n) = t.parse::<i64>() {
        return (0..=100_000).contains(&n).then_some(n);
    }
    Some(match t {
        "a" | "an" | "one" => 1,
        "two" | "couple" => 2,
        "three" | "few" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "ten" => 10,
        "twelve" => 12,
        "fifteen" => 15,
        "twenty" => 20,
        "thirty" => 30,
        "fortyfive" | "forty-five" => 45,
        "ninety" => 90,
        _ => return None,
    })
}

/// An amount of time at `i`: `30m`, `2 hours`, `an hour`, `half an hour`, `hour` (when `bare`).
/// The length and the tokens it took.
fn amount(toks: &[String], i: usize, bare: bool) -> Option<(Millis, usize)> {
    let t = toks.get(i)?;
    let split = t.find(|c: char| !c.is_ascii_digit()).filter(|p| *p > 0);
    if let Some(p) = split
        && let (Ok(n), Some(u)) = (t[..p].parse::<i64>(), unit(&t[p..]))
    {
        return Some((n.min(100_000) * u, 1));
    }
    if t == "half" {
        let skip = usize::from(toks.get(i + 1).is_some_and(|n| n == "an" || n == "a"));
        if toks.get(i + 1 + skip).is_some_and(|u| u == "hour") {
            return Some((30 * MINUTE, 2 + skip));
        }
    }
    if let Some(n) = number(t)
        && let Some(u) = toks.get(i + 1).and_then(|u| unit(u))
    {
        return Some((n * u, 2));
    }
    if bare && let Some(u) = unit(t).filter(|_| t.len() > 1) {
        return Some((u, 1));
    }
    None
}

/// A time of day at `i`: `14:00`, `2pm`, `2:30 pm`, `2 pm`, `noon`, `midnight`. Minutes
/// after midnight and the tokens it took.
fn time_of_day(toks: &[String], i: usize) -> Option<(i64, usize)> {
    let t = toks.get(i)?.as_str();
    match t {
        "noon" | "midday" => return Some((12 * 60, 1)),
        "midnight" => return Some((0, 1)),
        _ => {}
    }
    let (body, mut suffix) = match t.strip_suffix("pm").or_else(|| t.strip_suffix("am")) {
        Some(b) => (b, Some(&t[b.len()..])),
        None => (t, None),
    };
    let (h, m) = match body.split_once(':') {
        Some((h, m)) if m.len() == 2 => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?),
        None if suffix.is_some() || matches!(toks.get(i + 1).map(String::as_str), Some("am" | "pm")) => {
            (body.parse::<i64>().ok()?, 0)
        }
        _ => return None,
    };
    let mut took = 1;
    if suffix.is_none()
        && let Some(s @ ("am" | "pm")) = toks.get(i + 1).map(String::as_str)
    {
        suffix = Some(s);
        took = 2;
    }
    let h = match suffix {
        Some(_) if !(1..=12).contains(&h) => return None,
        Some("pm") if h != 12 => h + 12,
        Some("am") if h == 12 => 0,
        _ => h,
    };
    (h < 24 && (0..60).contains(&m)).then_some((h * 60 + m, took))
}

/// A moment at `i`: `yesterday [at] 3pm`, `today`, `14:00`, `2 hours ago`. The UTC time, the
/// tokens taken, and whether it names a whole day (`yesterday` alone).
fn moment(toks: &[String], i: usize, v: &Vocabulary) -> Option<(Millis, usize, bool)> {
    let off = v.offset as Millis * 1000;
    let today = (v.now + off).div_euclid(DAY) * DAY - off;
    let t = toks.get(i)?.as_str();
    let at_skip = |j: usize| usize::from(toks.get(j).is_some_and(|t| t == "at" || t == "around"));
    match t {
        "yesterday" => {
            let j = i + 1 + at_skip(i + 1);
            return Some(match time_of_day(toks, j) {
                Some((min, took)) => (today - DAY + min * MINUTE, j - i + took, false),
                None => (today - DAY, 1, true),
            });
        }
        "today" => return Some((today, 1, false)),
        _ => {}
    }
    if let Some((len, took)) = amount(toks, i, false)
        && toks.get(i + took).is_some_and(|t| t == "ago")
    {
        return Some((v.now - len, took + 1, false));
    }
    // A date ("August 2", "2 Aug", "2026-08-02"), with a time of day or as a whole day.
    if let Some((date, took)) = date(toks, i, (v.now + off).div_euclid(DAY) * DAY) {
        let j = i + took + at_skip(i + took);
        return Some(match time_of_day(toks, j) {
            Some((min, t2)) => (date - off + min * MINUTE, j - i + t2, false),
            None => (date - off, took, true),
        });
    }
    let (min, took) = time_of_day(toks, i)?;
    let mut at = today + min * MINUTE;
    // A trailing "yesterday" ("3pm yesterday"), else a time still to come today is yesterday's.
    if toks.get(i + took).is_some_and(|t| t == "yesterday") {
        return Some((at - DAY, took + 1, false));
    }
    if at > v.now {
        at -= DAY;
    }
    Some((at, took, false))
}

/// A word that names a time and that no window or duration took: a weekday, a month, a clock
/// time, `3pm`.
fn unread_time(toks: &[String], used: &[bool]) -> Option<String> {
    const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let clock = |t: &str| {
        let t = t.trim_end_matches("am").trim_end_matches("pm");
        let (h, m) = t.split_once(':').unwrap_or((t, "00"));
        let digits = |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
        digits(h) && m.len() == 2 && digits(m)
    };
    toks.iter().zip(used).find_map(|(t, u)| {
        let timeish = DAYS.contains(&t.as_str())
            || (t.len() > 3 && month(t).is_some())
            || (t.contains(':') && clock(t))
            || ((t.ends_with("am") || t.ends_with("pm")) && t.len() > 2 && clock(t));
        (!u && timeish).then(|| t.clone())
    })
}

/// A month by its name or its three-letter abbreviation (`sept` too).
fn month(t: &str) -> Option<u32> {
    const NAMES: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let short = t.len() == 3 || t == "sept";
    NAMES.iter().position(|n| *n == t || (short && n.starts_with(t))).map(|m| m as u32 + 1)
}

/// A day of the month: `2`, `2nd`, `21st`.
fn day_of_month(t: &str) -> Option<u32> {
    let n = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &t[n.len()..];
    if !matches!(suffix, "" | "st" | "nd" | "rd" | "th") {
        return None;
    }
    n.parse::<u32>().ok().filter(|d| (1..=31).contains(d))
}

/// A date at `toks[i]` as the start of its day (in the asker's day: `today` is the start of
/// today there), and how many tokens it took: `August 2`, `Aug 2nd`, `2 August`,
/// `2026-08-02`. Without a year, the latest such date not after today.
fn date(toks: &[String], i: usize, today: Millis) -> Option<(Millis, usize)> {
    let t = toks.get(i)?.as_str();
    let next = toks.get(i + 1).map(String::as_str).unwrap_or("");
    let start_of = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|x| x.and_utc().timestamp_millis());
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some((start_of(d)?, 1));
    }
    let (m, d) = match (month(t), day_of_month(next), day_of_month(t), month(next)) {
        (Some(m), Some(d), _, _) => (m, d),
        (_, _, Some(d), Some(m)) => (m, d),
        _ => return None,
    };
    let now = crate::time::from_millis(today).date_naive();
    let this_year = chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&now), m, d)?;
    let date = if this_year > now {
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&now) - 1, m, d)?
    } else {
        this_year
    };
    Some((start_of(date)?, 2))
}

fn mark(used: &mut [bool], from: usize, n: usize) {
    for u in used.iter_mut().skip(from).take(n) {
        *u = true;
    }
}

/// The window a question names: `last hour`, `past 30m`, `since 14:00`, `between 14:00 and
/// 14:30`, `from 2pm to 3pm`, `yesterday`, `today`, `yesterday 3pm` (a moment: the half hour
/// either side of it).
fn window(toks: &[String], used: &mut [bool], v: &Vocabulary) -> Option<(Millis, Millis)> {
    for i in 0..toks.len() {
        let t = toks[i].as_str();
        match t {
            "last" | "past" | "previous" | "recent" | "trailing" => {
                let j = i + 1 + usize::from(toks.get(i + 1).is_some_and(|t| t == "few"));
                if let Some((len, took)) = amount(toks, j, true) {
                    mark(used, i, j - i + took);
                    return Some((v.now - len, v.now));
                }
            }
            "since" | "after" => {
                if let Some((at, took, _)) = moment(toks, i + 1, v) {
                    mark(used, i, 1 + took);
                    return Some((at.min(v.now), v.now));
                }
            }
            "between" | "from" => {
                if let Some((a, took, _)) = moment(toks, i + 1, v) {
                    let k = i + 1 + took;
                    if toks.get(k).is_some_and(|t| matches!(t.as_str(), "and" | "to" | "until" | "till" | "-"))
                        && let Some((mut b, took2, _)) = moment(toks, k + 1, v)
                    {
                        // "between 23:00 and 01:00": the end is the next day.
                        if b < a {
                            b += DAY;
                        }
                        mark(used, i, k + 1 + took2 - i);
                        return Some((a, b.min(v.now.max(a))));
                    }
                }
            }
            _ => {}
        }
    }
    // A moment alone: a whole day, or the hour around a time.
    for i in 0..toks.len() {
        if used[i]
            || matches!(toks[i].as_str(), "for" | "until")
            || (i > 0 && matches!(toks[i - 1].as_str(), "for" | "until"))
        {
            continue;
        }
        if let Some((at, took, whole_day)) = moment(toks, i, v) {
            mark(used, i, took);
            return Some(if whole_day {
                (at, at + DAY)
            } else if toks[i] == "today" {
                (at, v.now)
            } else {
                (at - 30 * MINUTE, (at + 30 * MINUTE).min(v.now))
            });
        }
    }
    None
}

/// How long: `for 1h`, `for an hour`, `until 16:00`; for a silence, any amount left over.
fn duration(toks: &[String], used: &mut [bool], v: &Vocabulary, silence: bool) -> Option<Millis> {
    for i in 0..toks.len() {
        if used[i] {
            continue;
        }
        if toks[i] == "for"
            && let Some((len, took)) = amount(toks, i + 1, true)
        {
            mark(used, i, 1 + took);
            return Some(len);
        }
        if toks[i] == "until"
            && let Some((min, took)) = time_of_day(toks, i + 1)
        {
            let off = v.offset as Millis * 1000;
            let today = (v.now + off).div_euclid(DAY) * DAY - off;
            let mut at = today + min * MINUTE;
            if at <= v.now {
                at += DAY;
            }
            mark(used, i, 1 + took);
            return Some(at - v.now);
        }
    }
    if silence {
        for i in 0..toks.len() {
            if !used[i]
                && let Some((len, took)) = amount(toks, i, false)
            {
                mark(used, i, took);
                return Some(len);
            }
        }
    }
    None
}

/// The service a question names: exactly (also `payment gateway` for `payment-gateway`, and
/// `checkout-service` or `checkout svc` for `checkout`), else the one a word misspells.
/// The service and the index of its first word.
fn service(toks: &[String], used: &[bool], services: &[String]) -> Option<(String, usize)> {
    if services.is_empty() {
        return None;
    }
    let known: HashMap<String, &String> = services.iter().map(|s| (s.to_lowercase(), s)).collect();
    let lookup = |cand: &str| -> Option<&String> {
        known.get(cand).copied().or_else(|| {
            let bare = cand.strip_suffix("-service").or_else(|| cand.strip_suffix("-svc"))?;
            known.get(bare).copied()
        })
    };
    for n in (1..=3).rev() {
        for (i, win) in toks.windows(n).enumerate() {
            if used[i..i + n].iter().any(|u| *u) {
                continue;
            }
            for sep in ["-", "_", ""] {
                if let Some(s) = lookup(&win.join(sep)) {
                    return Some((s.clone(), i));
                }
            }
        }
    }
    let (words, _) = index();
    for (i, t) in toks.iter().enumerate() {
        if used[i] || is_stopword(t) || words.contains_key(t.as_str()) {
            continue;
        }
        let mut close = services.iter().filter(|s| near(t, &s.to_lowercase()));
        if let (Some(s), None) = (close.next(), close.next()) {
            return Some((s.clone(), i));
        }
    }
    // "the db", "the database": the one known service that is a database, if there is one.
    let at = toks.iter().position(|t| matches!(t.as_str(), "db" | "database"))?;
    let mut dbs = services.iter().filter(|s| {
        let s = s.to_lowercase();
        DATABASES.iter().any(|d| s.contains(d))
    });
    match (dbs.next(), dbs.next()) {
        (Some(s), None) => Some((s.clone(), at)),
        _ => None,
    }
}

/// What a database service's name holds.
const DATABASES: [&str; 12] =
    ["postgres", "mysql", "mariadb", "mongo", "redis", "cassandra", "sql", "db", "dynamo", "elastic", "etcd", "valkey"];

/// Words that follow `in`, `with`, … without naming a service: places, generic nouns, times
/// (and months, see [`month`]).
const NOT_A_SERVICE: &[&str] = &[
    "production",
    "prod",
    "staging",
    "dev",
    "cluster",
    "namespace",
    "system",
    "systems",
    "everything",
    "anything",
    "something",
    "nothing",
    "incident",
    "incidents",
    "thread",
    "channel",
    "here",
    "there",
    "general",
    "service",
    "services",
    "app",
    "apps",
    "db",
    "database",
    "databases",
    "network",
    "infra",
    "infrastructure",
    "backend",
    "frontend",
    "stack",
    "platform",
    "kubernetes",
    "k8s",
    "node",
    "nodes",
    "pod",
    "pods",
    "team",
    "us",
    "me",
    "you",
    "morning",
    "afternoon",
    "evening",
    "night",
    "tonight",
    "hour",
    "hours",
    "minute",
    "minutes",
    "day",
    "days",
    "week",
    "weeks",
    "today",
    "yesterday",
    "now",
    "moment",
    "while",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "weekend",
    "past",
    "last",
    "next",
    "first",
    "second",
    "third",
    "way",
    "meantime",
    "fact",
    "case",
    "detail",
    "details",
    "general",
    "particular",
    "total",
    "order",
    "place",
];

/// A word where a service is named (after `in`, `of`, `with`, `for`, `on`, `about`, `to`, `from`,
/// and an optional `the`, or right before `service`, `svc`, `pod` or `deployment`) that is no
/// word the parser reads, no stopword and no generic noun: the name of a service medic does not
/// know.
fn unknown_service(toks: &[String], used: &[bool]) -> Option<String> {
    let (words, phrases) = index();
    let known_word = |t: &str| {
        words.contains_key(t)
            || phrases.iter().any(|(_, parts, _)| parts.contains(&t))
            || is_stopword(t)
            || NOT_A_SERVICE.contains(&t)
            || month(t).is_some()
    };
    let name_like = |i: usize| {
        let t = toks[i].as_str();
        !used[i] && t.len() >= 2 && t.starts_with(|c: char| c.is_ascii_alphabetic()) && !known_word(t)
    };
    for i in 0..toks.len() {
        let before = |w: &[&str]| i > 0 && w.contains(&toks[i - 1].as_str());
        let after_preposition = before(&["in", "of", "with", "for", "on", "about", "to", "from"])
            || (before(&["the"])
                && i > 1
                && ["in", "of", "with", "for", "on", "about", "to", "from"].contains(&toks[i - 2].as_str()));
        let before_kind =
            toks.get(i + 1).is_some_and(|n| matches!(n.as_str(), "service" | "svc" | "pod" | "deployment"));
        if (after_preposition || before_kind) && name_like(i) {
            return Some(toks[i].clone());
        }
    }
    None
}

fn signal(toks: &[String]) -> Option<Signal> {
    let has = |w: &str| toks.iter().any(|t| t == w);
    let pair = |a: &str, b: &str| toks.windows(2).any(|w| w[0] == a && w[1] == b);
    if pair("error", "rate") || pair("error", "ratio") || has("errors") || has("5xx") || has("failures") || has("error")
    {
        return Some(Signal::Errors);
    }
    for t in toks {
        let s = match t.as_str() {
            "latency" | "slow" | "p99" | "p95" | "p50" | "duration" | "response" | "slowness" => Signal::Latency,
            "traffic" | "requests" | "rps" | "qps" | "throughput" | "load" => Signal::Traffic,
            "cpu" | "throttling" | "throttled" => Signal::Cpu,
            "memory" | "mem" | "ram" | "rss" | "heap" | "oom" => Signal::Memory,
            "saturation" | "saturated" => Signal::Saturation,
            _ => continue,
        };
        return Some(s);
    }
    None
}

/// Callers for "who depends on X" / "who calls X" / "upstream of X"; callees for "what does X
/// depend on" / "X's dependencies" / "downstream of X".
fn direction(toks: &[String], service_at: Option<usize>) -> Option<Direction> {
    let has = |w: &str| toks.iter().any(|t| t == w);
    if has("upstream") || has("callers") || has("consumers") || has("clients") {
        return Some(Direction::Callers);
    }
    if has("downstream") || has("dependencies") || has("dependency") || has("deps") {
        return Some(Direction::Callees);
    }
    let verb = toks.iter().position(|t| {
        matches!(
            t.as_str(),
            "depend" | "depends" | "calls" | "call" | "uses" | "use" | "rely" | "relies" | "talks" | "talk"
        )
    })?;
    match service_at {
        Some(p) if p > verb => Some(Direction::Callers),
        Some(_) => Some(Direction::Callees),
        None => None,
    }
}

/// `hypothesis 2`, `second hypothesis`, `the 2nd one`.
fn hypothesis(toks: &[String]) -> Option<usize> {
    let ordinal = |t: &str| -> Option<usize> {
        Some(match t {
            "first" | "1st" | "top" => 1,
            "second" | "2nd" => 2,
            "third" | "3rd" => 3,
            "fourth" | "4th" => 4,
            "fifth" | "5th" => 5,
            _ => return None,
        })
    };
    for (i, t) in toks.iter().enumerate() {
        if t == "hypothesis" {
            if let Some(n) = toks.get(i + 1).and_then(|n| n.trim_start_matches('#').parse::<usize>().ok()) {
                return Some(n).filter(|n| (1..=20).contains(n));
            }
            if let Some(n) = i.checked_sub(1).and_then(|p| ordinal(&toks[p])) {
                return Some(n);
            }
        }
        if let Some(n) = ordinal(t)
            && toks.get(i + 1).is_some_and(|n| n == "one" || n == "hypothesis")
        {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests;
