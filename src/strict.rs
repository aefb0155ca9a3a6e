//! Strict YAML that reports every unknown key at once: serde stops at the first one, so a file
//! with three typos took three runs of `medic check`. Used for the config and for runbooks.

/// After the first parse error `first` (with its line and column): each unknown key is taken
/// out of the document and the rest parsed again, so that every unknown key is reported in one
/// run. Returns the problems (the first one first) and the value, if the rest parses.
pub fn unknown_keys<T: serde::de::DeserializeOwned>(text: &str, first: String) -> (Vec<String>, Option<T>) {
    static UNKNOWN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"unknown field `([^`]+)`").expect("a valid pattern"));
    let mut problems = vec![first.clone()];
    let Ok(mut tree) = serde_norway::from_str::<serde_norway::Value>(text) else { return (problems, None) };
    for round in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(config) => return (problems, Some(config)),
            Err(e) => e,
        };
        let message = err.inner().to_string();
        let Some(key) = UNKNOWN.captures(&message).map(|c| c[1].to_string()) else {
            if round > 0 {
                problems.push(format!("{}: {message}", err.path()));
            }
            return (problems, None);
        };
        let mut at: Vec<String> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        if at.last() == Some(&key) {
            at.pop();
        }
        if round > 0 || !first.contains(&format!("unknown field `{key}`")) {
            let mut full = at.clone();
            full.push(key.clone());
            let location = locate(text, &full).map(|(l, c)| format!(" at line {l} column {c}")).unwrap_or_default();
            let parent = if at.is_empty() { String::new() } else { format!("{}: ", at.join(".")) };
            problems.push(format!("{parent}{message}{location}"));
        }
        let mut node = &mut tree;
        for k in &at {
            match node.get_mut(k.as_str()) {
                Some(n) => node = n,
                None => return (problems, None),
            }
        }
        if node.as_mapping_mut().and_then(|m| m.remove(key.as_str())).is_none() {
            return (problems, None);
        }
    }
    (problems, None)
}

/// The line and column (1-based) of the block-style key at `path` in `text`, if it can be found.
fn locate(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = None;
    for key in path {
        let (i, col) = text.lines().enumerate().skip(from).find_map(|(i, line)| {
            let trimmed = line.trim_start();
            let col = line.len() - trimmed.len();
            let bare = trimmed.strip_prefix("- ").unwrap_or(trimmed);
            let deeper = indent.is_none_or(|d| col > d);
            (deeper && bare.strip_prefix(key.as_str()).is_some_and(|r| r.trim_start().starts_with(':')))
                .then_some((i, col))
        })?;
        from = i + 1;
        indent = Some(col);
        found = Some((i + 1, col + 1));
    }
    found
}
