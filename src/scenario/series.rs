//! promtool's expanding notation for series values, so scenario authors write what they already
//! know from `promtool test rules`:
//! - `a+bxn`: `a`, then `n` further samples incrementing by `b` (`a a+b … a+n·b`);
//! - `a-bxn`: the same, decrementing;
//! - `axn`: `a` repeated `n+1` times (shorthand for `a+0xn`);
//! - `_`: a missing sample; `_xn`: `n` missing samples;
//! - `stale`: a stale marker (treated as missing here).

/// Expands `text` into samples; `None` is a missing (or stale) sample.
pub fn expand(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        expand_token(token, &mut out).map_err(|e| format!("{token:?}: {e}"))?;
    }
    if out.is_empty() {
        return Err("expected at least one value, e.g. \"1+1x10\"".into());
    }
    Ok(out)
}

fn expand_token(token: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if token == "_" || token == "stale" {
        out.push(None);
        return Ok(());
    }
    if let Some(n) = token.strip_prefix("_x") {
        let n: usize = n.parse().map_err(|_| "expected a count after _x")?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    let Some((head, n)) = token.rsplit_once('x') else {
        out.push(Some(number(token)?));
        return Ok(());
    };
    let n: usize = n.parse().map_err(|_| "expected a whole number of further samples after x")?;
    if n > 100_000 {
        return Err("at most 100000 samples per expression".into());
    }
    // Split `a+b` / `a-b` at the sign that follows the start value (not a leading sign, not an
    // exponent's sign).
    let bytes = head.as_bytes();
    let split = (1..bytes.len())
        .rev()
        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, step) = match split {
        Some(i) => (number(&head[..i])?, number(&head[i..])?),
        None => (number(head)?, 0.0),
    };
    out.extend((0..=n).map(|k| Some(start + step * k as f64)));
    Ok(())
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|_| format!("expected a number, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn vals(s: &str) -> Vec<Option<f64>> {
        expand(s).unwrap()
    }

    #[test]
    fn promtool_documented_examples() {
        assert_eq!(vals("-2+4x3"), [-2.0, 2.0, 6.0, 10.0].map(Some));
        assert_eq!(vals(" 1-2x4"), [1.0, -1.0, -3.0, -5.0, -7.0].map(Some));
        assert_eq!(vals(" 1x4"), [1.0; 5].map(Some));
        assert_eq!(vals(" 1 _x3 stale"), [Some(1.0), None, None, None, None]);
    }

    #[test]
    fn mixes_and_exponents() {
        assert_eq!(vals("0.5x2 0.5+0.25x2"), [0.5, 0.5, 0.5, 0.5, 0.75, 1.0].map(Some));
        assert_eq!(vals("1e3+1e2x1"), [1000.0, 1100.0].map(Some));
        assert_eq!(vals("2e-1x1"), [0.2, 0.2].map(Some));
    }

    #[test]
    fn errors_name_the_token() {
        assert!(expand("1+1xq").unwrap_err().contains("\"1+1xq\""));
        assert!(expand("abc").unwrap_err().contains("expected a number"));
        assert!(expand("").unwrap_err().contains("at least one value"));
        assert!(expand("1x1000000").unwrap_err().contains("at most"));
    }
}
