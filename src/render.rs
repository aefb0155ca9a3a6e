//! Values placed into languages that other systems parse: PromQL and LogQL queries, URLs, and
//! script arguments. Anyone who can send an alert chooses its label values, so a value is data
//! and must never change the structure of what it is placed into.
//!
//! Templates render with handlebars, but every `{{value}}` comes out wrapped in two private-use
//! marks instead of being escaped blindly. A second pass walks the result, knows for each value
//! where it landed (inside a PromQL string or a regex matcher, in a URL path or query, at the
//! head of an argument), and escapes it for that position — or refuses it with an error that
//! names the position. Triple-stash `{{{…}}}`, which would bypass this, is refused.

use serde_json::Value;

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

fn mark(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 6);
    out.push(OPEN);
    out.extend(s.chars().map(|c| if c == OPEN || c == CLOSE { '\u{FFFD}' } else { c }));
    out.push(CLOSE);
    out
}

/// A rendered template, cut into the template's own text and the values placed into it.
enum Piece<'a> {
    Text(&'a str),
    Value(&'a str),
}

/// Renders `template` with every value marked. `strict`: a missing value is an error naming it.
fn fill(template: &str, ctx: &Value, strict: bool) -> Result<String, String> {
    if template.contains(OPEN) || template.contains(CLOSE) {
        return Err("the template contains a reserved character (U+E000 or U+E001)".into());
    }
    let unescaped = unescaped_form(template);
    if let Some(at) = unescaped {
        return Err(format!("`{at}` places a value unescaped; use `{{{{…}}}}`"));
    }
    let mut hb = handlebars::Handlebars::new();
    hb.register_escape_fn(mark);
    hb.set_strict_mode(strict);
    hb.render_template(template, ctx).map_err(|e| e.reason().to_string())
}

/// The first `{{{` or `{{&` (with or without `~`), the two handlebars forms that skip escaping.
fn unescaped_form(template: &str) -> Option<&str> {
    template.match_indices("{{").find_map(|(i, _)| {
        let rest = template[i + 2..].strip_prefix('~').unwrap_or(&template[i + 2..]);
        (rest.starts_with('{') || rest.starts_with('&')).then(|| &template[i..(i + 4).min(template.len())])
    })
}

fn pieces(marked: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = marked;
    while let Some(open) = rest.find(OPEN) {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + OPEN.len_utf8()..];
        let close = after.find(CLOSE).expect("every mark is closed");
        out.push(Piece::Value(&after[..close]));
        rest = &after[close + CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

/// Plain text: values as they are (chat adapters escape for their platform).
pub fn text(template: &str, ctx: &Value, strict: bool) -> Result<String, String> {
    Ok(pieces(&fill(template, ctx, strict)?)
        .into_iter()
        .map(|p| match p {
            Piece::Text(s) | Piece::Value(s) => s,
        })
        .collect())
}

/// How a value is shown in an error: short, and never a secret.
fn shown(v: &str) -> String {
    let v = crate::redact::redact(v);
    let mut s: String = v.chars().take(40).collect();
    if v.chars().count() > 40 {
        s.push('…');
    }
    format!("{s:?}")
}

/// A PromQL or LogQL query (both use Go's string syntax: `"…"` and `'…'` with backslash
/// escapes, `` `…` `` raw, `#` to the end of the line a comment). A value inside a string is
/// escaped for it, and, after `=~`, `!~` or `|~`, escaped as a regex too, so it matches only
/// itself. Outside a string only a number, duration or name (`[A-Za-z0-9_:.]`) may stand.
pub fn query(template: &str, ctx: &Value, strict: bool) -> Result<String, String> {
    let marked = fill(template, ctx, strict)?;
    let mut out = String::with_capacity(marked.len());
    // The open quote and whether it is a regex; a pending backslash; inside a comment.
    let mut string: Option<(char, bool)> = None;
    let mut backslash = false;
    let mut comment = false;
    for piece in pieces(&marked) {
        match piece {
            Piece::Text(s) => {
                for c in s.chars() {
                    match string {
                        Some((q, _)) if backslash => backslash = q == '`' && c == '\\',
                        Some(('`', _)) if c == '`' => string = None,
                        Some(('`', _)) => {}
                        Some((q, _)) if c == q => string = None,
                        Some(_) => backslash = c == '\\',
                        None if comment => comment = c != '\n',
                        None => match c {
                            '"' | '\'' | '`' => string = Some((c, out.trim_end().ends_with('~'))),
                            '#' => comment = true,
                            _ => {}
                        },
                    }
                    out.push(c);
                }
            }
            Piece::Value(v) => match string {
                Some(_) if backslash => {
                    return Err(format!("a value ({}) follows a backslash inside a query string", shown(v)));
                }
                Some((q, regex)) => {
                    let v = if regex { regex::escape(v) } else { v.to_string() };
                    out.push_str(&quoted(q, &v).ok_or_else(|| {
                        format!("the value {} contains a backquote and cannot be placed in a raw string", shown(&v))
                    })?);
                }
                None if comment => out.push_str(&v.replace(['\n', '\r'], " ")),
                None if v.chars().all(|c| c.is_ascii_alphanumeric() || "_:.".contains(c)) => out.push_str(v),
                None => {
                    return Err(format!(
                        "the value {} stands outside a quoted string in the query, where only a number, duration or name may",
                        shown(v)
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// `v` escaped for the inside of a Go string opened by `q`; `None` when it cannot be (a
/// backquote inside a raw string).
fn quoted(q: char, v: &str) -> Option<String> {
    if q == '`' {
        return (!v.contains('`')).then(|| v.to_string());
    }
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    Some(out)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP action's URL, normalised: the exact URL that is shown at approval and called.
/// - A value at the very start is a base URL (`{{vars.api}}/v1/…`): it must be an absolute
///   http(s) URL without credentials, query or fragment.
/// - In the host, a value may hold only letters, digits, `.` and `-`.
/// - In the path, a value is one percent-encoded segment (`/`, `?`, `#`, `\`, `%` included);
///   `.` or `..` is refused.
/// - In the query or fragment, a value is percent-encoded.
///
/// Dot segments are refused wherever they come from, so normalising changes nothing.
pub fn url(template: &str, ctx: &Value) -> Result<String, String> {
    #[derive(PartialEq, Clone, Copy)]
    enum At {
        Authority,
        Path,
        Query,
    }
    let region = |s: &str| {
        let after_scheme = s.find("://").map(|i| &s[i + 3..]);
        match after_scheme {
            _ if s.contains(['?', '#']) => At::Query,
            Some(rest) if rest.contains('/') => At::Path,
            _ => At::Authority,
        }
    };
    let marked = fill(template, ctx, true)?;
    let mut out = String::with_capacity(marked.len());
    for piece in pieces(&marked) {
        match piece {
            Piece::Text(s) => out.push_str(s),
            Piece::Value(v) if out.is_empty() => {
                let base = url::Url::parse(v).map_err(|e| format!("the base URL {} is not a URL: {e}", shown(v)))?;
                if !matches!(base.scheme(), "http" | "https")
                    || base.password().is_some()
                    || !base.username().is_empty()
                    || base.query().is_some()
                    || base.fragment().is_some()
                    || v.contains('\\')
                {
                    return Err(format!(
                        "the base URL {} must be http(s) with no credentials, query or fragment",
                        shown(v)
                    ));
                }
                out.push_str(v);
            }
            Piece::Value(v) => match region(&out) {
                At::Authority if v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') => {
                    out.push_str(v)
                }
                At::Authority => return Err(format!("the value {} cannot stand in a URL's host", shown(v))),
                At::Path if v == "." || v == ".." => {
                    return Err(format!("the value {} would be a dot segment in the URL's path", shown(v)));
                }
                At::Path | At::Query => out.push_str(&percent(v)),
            },
        }
    }
    let parsed = url::Url::parse(&out).map_err(|e| format!("{}: not a URL: {e}", shown(&out)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{}: only http and https URLs are called", shown(&out)));
    }
    let path_end = out.find(['?', '#']).unwrap_or(out.len());
    let path_start = out.find("://").map(|i| i + 3).and_then(|i| out[i..path_end].find('/').map(|j| i + j));
    if let Some(start) = path_start
        && out[start..path_end].split(['/', '\\']).any(|seg| {
            let seg = seg.to_ascii_lowercase().replace("%2e", ".");
            seg == "." || seg == ".."
        })
    {
        return Err(format!("{}: the path has a dot segment", shown(&out)));
    }
    Ok(parsed.to_string())
}

/// One script argument. A value at its head that begins with `-` would be read as an option,
/// and is refused.
pub fn arg(template: &str, ctx: &Value) -> Result<String, String> {
    let marked = fill(template, ctx, true)?;
    let parts = pieces(&marked);
    let head = parts.iter().find(|p| !matches!(p, Piece::Text("") | Piece::Value("")));
    if let Some(Piece::Value(v)) = head
        && v.starts_with('-')
    {
        return Err(format!("the value {} begins with '-' and would be read as an option", shown(v)));
    }
    Ok(parts
        .into_iter()
        .map(|p| match p {
            Piece::Text(s) | Piece::Value(s) => s,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A query lexed the way Prometheus does: each string literal as one token with its decoded
    /// content, every other non-blank character as a token of its own.
    #[derive(Debug, PartialEq, Clone)]
    enum Tok {
        Str(String),
        Char(char),
    }

    fn lex(q: &str) -> Vec<Tok> {
        let mut out = Vec::new();
        let mut it = q.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '"' | '\'' => {
                    let mut s = String::new();
                    loop {
                        match it.next().expect("string terminated") {
                            x if x == c => break,
                            '\\' => match it.next().expect("escape") {
                                'n' => s.push('\n'),
                                'r' => s.push('\r'),
                                't' => s.push('\t'),
                                'u' => {
                                    let hex: String = (0..4).map(|_| it.next().unwrap()).collect();
                                    s.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                                }
                                e @ ('\\' | '"' | '\'') => {
                                    assert!(e == '\\' || e == c, "\\{e} is no escape in a {c} string");
                                    s.push(e)
                                }
                                other => panic!("unknown escape \\{other}"),
                            },
                            x => s.push(x),
                        }
                    }
                    out.push(Tok::Str(s));
                }
                '`' => out.push(Tok::Str(it.by_ref().take_while(|&x| x != '`').collect())),
                '#' => {
                    it.by_ref().take_while(|&x| x != '\n').for_each(drop);
                }
                c if c.is_whitespace() => {}
                c => out.push(Tok::Char(c)),
            }
        }
        out
    }

    /// A small deterministic generator of hostile strings (xorshift).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn string(&mut self) -> String {
            const HOSTILE: &[char] = &[
                '"', '\'', '`', '\\', '{', '}', '[', ']', '(', ')', '#', '~', '=', '!', '|', ',', '.', '*', '+', '?',
                '^', '$', '/', '%', '&', '-', ' ', '\n', '\r', '\t', '\0', '\u{7f}', 'é', '𝄞', '\u{E000}', '\u{E001}',
                'a', 'Z', '0', '9', ':', '_',
            ];
            let len = (self.next() % 24) as usize;
            (0..len).map(|_| HOSTILE[(self.next() % HOSTILE.len() as u64) as usize]).collect()
        }
    }

    const MARKER: &str = "MARKERVALUE";

    #[test]
    fn no_value_changes_the_structure_of_a_query() {
        let templates = [
            r#"node_filesystem_avail_bytes{instance="{{x}}"} < 0.02"#,
            r#"sum(rate(http_requests_total{service=~"{{x}}",code=~"5.."}[5m])) / sum(rate(http_requests_total{service="{{x}}"}[5m]))"#,
            r#"{service='{{x}}'} |= "{{x}}" |~ "(?i){{x}}""#,
            "up{job=`{{x}}`} # a comment with {{x}}\n+ 1",
            r#"count(up{instance!~'{{x}}.*'}) > 1"#,
        ];
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for t in templates {
            let reference = lex(&query(t, &json!({"x": MARKER}), true).unwrap());
            for _ in 0..1500 {
                let v = g.string();
                let Ok(q) = query(t, &json!({"x": v}), true) else {
                    assert!(v.contains('`') && t.contains('`'), "{t} refused {v:?}");
                    continue;
                };
                let got = lex(&q);
                assert_eq!(got.len(), reference.len(), "{t} with {v:?} gave {q}");
                let clean = v.replace(['\u{E000}', '\u{E001}'], "\u{FFFD}");
                for (i, (a, b)) in got.iter().zip(&reference).enumerate() {
                    match (a, b) {
                        (Tok::Str(s), Tok::Str(r)) if r.contains(MARKER) => {
                            let (prefix, suffix) = r.split_once(MARKER).unwrap();
                            let middle = s.strip_prefix(prefix).and_then(|m| m.strip_suffix(suffix));
                            let middle = middle.unwrap_or_else(|| panic!("{t} with {v:?}: {s:?}"));
                            if i > 0 && reference[i - 1] == Tok::Char('~') {
                                // After =~, !~ or |~: a regex that matches the value and nothing else.
                                let re = regex::Regex::new(&format!("^(?:{middle})$")).unwrap();
                                assert!(re.is_match(&clean), "{middle:?} does not match {clean:?}");
                                assert!(!re.is_match(&format!("{clean}x")), "{middle:?} matches more than {clean:?}");
                            } else {
                                assert_eq!(middle, clean, "{t} with {v:?}");
                            }
                        }
                        _ => assert_eq!(a, b, "{t} with {v:?} gave {q}"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_probe_that_verified_a_failed_fix_is_now_a_literal() {
        let t = r#"node_filesystem_avail_bytes{instance="{{labels.instance}}"} < 0.02"#;
        let q = query(t, &json!({"labels": {"instance": "node1:9100\"} * 0 or vector(0) #"}}), true).unwrap();
        assert_eq!(q, r#"node_filesystem_avail_bytes{instance="node1:9100\"} * 0 or vector(0) #"} < 0.02"#);
        assert_eq!(lex(&q).iter().filter(|t| matches!(t, Tok::Str(_))).count(), 1);
        assert!(lex(&q).ends_with(&[Tok::Char('<'), Tok::Char('0'), Tok::Char('.'), Tok::Char('0'), Tok::Char('2')]));
    }

    #[test]
    fn a_regex_matcher_gets_a_literal_regex() {
        let q = query(r#"up{service=~"{{s}}"}"#, &json!({"s": "a.*|b"}), true).unwrap();
        assert_eq!(q, r#"up{service=~"a\\.\\*\\|b"}"#);
        let q = query(r#"up{service="{{s}}"}"#, &json!({"s": "a.*|b"}), true).unwrap();
        assert_eq!(q, r#"up{service="a.*|b"}"#, "an equality matcher takes the value as it is");
    }

    #[test]
    fn outside_a_string_only_names_numbers_and_durations_stand() {
        assert_eq!(query("rate(x[{{w}}])", &json!({"w": "5m"}), true).unwrap(), "rate(x[5m])");
        let e = query("rate(x[{{w}}])", &json!({"w": "5m]) or vector(1"}), true).unwrap_err();
        assert!(e.contains("outside a quoted string"), "{e}");
        assert!(query("{{{w}}}", &json!({"w": "x"}), true).unwrap_err().contains("unescaped"));
        assert!(query("{{~{w}}}", &json!({"w": "x"}), true).unwrap_err().contains("unescaped"));
    }

    #[test]
    fn url_values_are_segments_and_query_values() {
        let ctx = json!({"api": "http://deploy-api.internal", "service": "../../admin/drop-all?x="});
        let e = url("{{api}}/v1/services/{{service}}/restart", &ctx).unwrap();
        assert_eq!(e, "http://deploy-api.internal/v1/services/..%2F..%2Fadmin%2Fdrop-all%3Fx%3D/restart");
        let ctx = json!({"api": "http://h", "service": "a\\..\\admin"});
        assert_eq!(url("{{api}}/s/{{service}}/r", &ctx).unwrap(), "http://h/s/a%5C..%5Cadmin/r");
        let ctx = json!({"api": "http://h", "service": ".."});
        assert!(url("{{api}}/s/{{service}}/r", &ctx).unwrap_err().contains("dot segment"));
        assert!(url("{{api}}/s/%2E%2e/r", &ctx).unwrap_err().contains("dot segment"));
        let ctx = json!({"api": "http://h", "q": "a&b=c#d"});
        assert_eq!(url("{{api}}/s?x={{q}}&y=1", &ctx).unwrap(), "http://h/s?x=a%26b%3Dc%23d&y=1");
        let ctx = json!({"host": "evil.example/x?"});
        assert!(url("http://{{host}}.internal/r", &ctx).unwrap_err().contains("host"));
        let ctx = json!({"api": "http://u:p@h"});
        assert!(url("{{api}}/r", &ctx).unwrap_err().contains("credentials"));
        assert!(url("file:///etc/passwd", &json!({})).unwrap_err().contains("http"));
    }

    #[test]
    fn url_normalises_to_what_is_called() {
        assert_eq!(url("HTTP://Deploy-API.internal:80/a", &json!({})).unwrap(), "http://deploy-api.internal/a");
    }

    #[test]
    fn an_argument_cannot_become_an_option() {
        let ctx = json!({"p": "-rf /", "q": "/var/log"});
        assert!(arg("{{p}}", &ctx).unwrap_err().contains("option"));
        assert_eq!(arg("--path={{p}}", &ctx).unwrap(), "--path=-rf /", "after a literal prefix it is a value");
        assert_eq!(arg("{{q}}", &ctx).unwrap(), "/var/log");
    }
}
