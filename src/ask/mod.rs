//! Ask: people talk to medic in plain language (spec §2.11).
//!
//! Every front end — Slack mentions, thread messages, DMs and `/medic`; Discord's `/medic`
//! commands; `POST /v1/ask`; `medic ask`; the demo's prompt — hands its text to one pure
//! parser ([`parse`]), which names an [`Intent`] and fills its [`Slots`] (service, window,
//! duration, signal…) with no IO and no external service. [`answer`] turns that into an
//! [`answer::Answer`] from the store and the context sources, citing its evidence the way a
//! diagnosis does; each platform renders it from `templates/<platform>/answer.hbs`.
//!
//! Mutating intents never act by themselves: `pause`/`resume` are carried out only for the
//! configured control groups (and audited with who and where); `silence` only proposes.
//! Text from logs, alerts and chat is data: nothing an answer quotes is ever parsed again.

pub mod answer;
pub mod chart;
pub mod llm;
pub mod parse;

pub use parse::{Intent, Parsed, Slots, Vocabulary, parse};

/// The `ask` section of the config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The offset that times without one ("since 14:00", "yesterday 3pm") are read in, as
    /// `UTC` or `±HH:MM`. Answers show times in it too.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Responder groups (see `responders.groups`) whose members may pause and resume
    /// automation from chat; empty: `responders.default_approvers`.
    #[serde(default)]
    pub control_groups: Vec<String>,
    /// Questions one person may ask per minute; more get a short refusal.
    #[serde(default = "per_minute")]
    pub per_minute: u32,
    /// An OpenAI-compatible model for what the parser cannot place; none by default.
    #[serde(default)]
    pub llm: Option<llm::Config>,
}

fn utc() -> String {
    "UTC".into()
}

fn per_minute() -> u32 {
    20
}

impl Default for Config {
    fn default() -> Self {
        Config { timezone: utc(), control_groups: Vec::new(), per_minute: per_minute(), llm: None }
    }
}

impl Config {
    /// The configured offset in seconds east of UTC, or what is wrong with it.
    pub fn offset(&self) -> Result<i32, String> {
        parse_offset(&self.timezone)
    }
}

/// `UTC`, `Z`, `+02:00`, `-0530` → seconds east of UTC.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Ok(0);
    }
    let bad = || format!("ask.timezone: expected UTC or an offset like +02:00, got {s:?}");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (digits[..2].parse().map_err(|_| bad())?, digits[2..].parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("UTC"), Ok(0));
        assert_eq!(parse_offset("+02:00"), Ok(7200));
        assert_eq!(parse_offset("-0530"), Ok(-19800));
        assert!(parse_offset("Europe/Paris").unwrap_err().contains("ask.timezone"));
        assert!(parse_offset("+25:00").is_err());
    }
}
