//! Alertmanager-style label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`. Regexes are fully anchored, as in Alertmanager. Quoting is optional for
//! values without spaces or special characters; inside quotes, `\"` and `\\` are escapes.

use crate::alert::Labels;
use regex::Regex;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    NotEq,
    Re,
    NotRe,
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::NotEq => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let name_end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("{s:?}: expected a label name, then =, !=, =~ or !~, then a value"));
        }
        let rest = s[name_end..].trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (Op::Re, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (Op::NotRe, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (Op::NotEq, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (Op::Eq, r)
        } else {
            return Err(format!("{s:?}: expected =, !=, =~ or !~ after the label name {name:?}"));
        };
        let value = unquote(rest.trim()).map_err(|e| format!("{s:?}: {e}"))?;
        let re = match op {
            Op::Re | Op::NotRe => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("{s:?}: invalid regex: {e}"))?)
            }
            _ => None,
        };
        Ok(Matcher { name: name.to_string(), op, value, re })
    }

    /// Whether `labels` satisfy this matcher. A missing label counts as the empty string, as in
    /// Alertmanager (so `team!="db"` holds for an alert without a team).
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.re) {
            (Op::Eq, _) => v == self.value,
            (Op::NotEq, _) => v != self.value,
            (Op::Re, Some(re)) => re.is_match(v),
            (Op::NotRe, Some(re)) => !re.is_match(v),
            (Op::Re | Op::NotRe, None) => unreachable!("regex matchers are built with their regex"),
        }
    }
}

fn unquote(s: &str) -> Result<String, String> {
    let Some(inner) = s.strip_prefix('"') else {
        if s.contains(['"', ' ', ',', '{', '}']) {
            return Err("expected the value in double quotes".into());
        }
        return Ok(s.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                Some('n') => out.push('\n'),
                other => return Err(format!("unknown escape \\{}", other.map(String::from).unwrap_or_default())),
            },
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(out)
                } else {
                    Err("unexpected text after the closing quote".into())
                };
            }
            c => out.push(c),
        }
    }
    Err("missing closing quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_and_matches_like_alertmanager() {
        let l = labels(&[("alertname", "HighErrorRate"), ("severity", "critical")]);
        let m = |s: &str| Matcher::parse(s).unwrap().matches(&l);
        assert!(m(r#"alertname="HighErrorRate""#));
        assert!(m("alertname=HighErrorRate"));
        assert!(m(r#"alertname=~"High.*""#));
        assert!(!m(r#"alertname=~"Error""#), "regexes are anchored");
        assert!(m(r#"severity!="info""#));
        assert!(m(r#"team!="db""#), "a missing label is the empty string");
        assert!(!m(r#"team=~".+""#));
        assert!(m(r#"severity !~ "warn|info""#));
        assert_eq!(Matcher::parse(r#"a="x\"y""#).unwrap().value, "x\"y");
    }

    #[test]
    fn errors_name_the_problem() {
        for (s, needle) in [
            ("=x", "expected a label name"),
            ("a>x", "expected =, !=, =~ or !~"),
            (r#"a="x"#, "missing closing quote"),
            (r#"a=~"(""#, "invalid regex"),
            ("a=two words", "double quotes"),
        ] {
            let e = Matcher::parse(s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
