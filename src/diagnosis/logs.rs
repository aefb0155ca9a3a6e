//! An online log template miner in the manner of Drain (He et al., ICWS 2017), with one
//! configuration for every log source: a line's variable parts are masked first (any token with
//! a digit, hex ids, IPs, paths with numbers), then a fixed-depth tree keyed by the token count
//! and the first tokens leads to a few candidate groups, and the line joins the most similar one
//! (or starts a new group). A group's template keeps the tokens all its lines share and `<*>`
//! where they differ. Groups that later lines show are one template merge (see
//! [`Miner::root`]): across token counts when the extra tokens are a value or its unit, a word
//! seen with three values at one place, and an odd first line once the same place shows a
//! variable. Lines are added one at a time, so it works on a stream. Tokens are
//! scanned as bytes without allocating and matched by their FNV-1a hashes; strings are built only
//! for a new group's template.

use std::borrow::Cow;
use std::collections::HashMap;

/// The one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Leading tokens that key the tree below the token count.
    pub depth: usize,
    /// A line joins a group when at least this share of its tokens equal the template's.
    pub similarity: f64,
    /// Groups per leaf before new lines share the most similar one anyway.
    pub max_children: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { depth: 2, similarity: 0.85, max_children: 100 }
    }
}

pub const WILDCARD: &str = "<*>";

/// At most this many lines make a group an odd first line's (see `Miner::merge_values`).
const ODD: usize = 2;

/// Templates longer than this (in tokens) are not aligned with others of another length.
const MAX_ALIGNED: usize = 256;

#[derive(Debug, Clone)]
struct Group {
    template: Vec<String>,
    /// Each template token's hash, so matching compares integers.
    ids: Vec<u64>,
    /// Lines that joined this group.
    size: usize,
    /// On a group no other was merged into's root: its lines and those of every group merged
    /// into it.
    lines: usize,
}

/// The miner: add lines, read groups and templates.
#[derive(Debug, Default)]
pub struct Miner {
    config: Config,
    groups: Vec<Group>,
    /// A hash of (token count, first `depth` tokens, variables as the wildcard) → groups.
    leaves: HashMap<u64, Vec<usize>>,
    /// A hash of the first `depth` tokens alone → groups, whatever their token count.
    prefixes: HashMap<u64, Vec<usize>>,
    /// Each group's parent in the merges (a union-find; a group that was never merged is its
    /// own): groups that later lines show are the same template.
    parent: Vec<usize>,
}

/// One token of a line: its text, where its core (without surrounding punctuation) lies, whether
/// that core is a variable, and the hash of the masked token. Nothing is allocated.
struct Tok<'a> {
    raw: &'a str,
    core: (usize, usize),
    variable: bool,
    id: u64,
}

impl Tok<'_> {
    /// The masked token: `(pool`, `<*>)`.
    fn text(&self) -> Cow<'_, str> {
        if self.variable {
            Cow::Owned(format!("{}{WILDCARD}{}", &self.raw[..self.core.0], &self.raw[self.core.1..]))
        } else {
            Cow::Borrowed(self.raw)
        }
    }
}

fn punctuation(b: u8) -> bool {
    matches!(b, b',' | b';' | b'(' | b')' | b'[' | b']' | b'"' | b'\'' | b'.' | b':')
}

/// FNV-1a over more bytes: tokens are short, and this is several times faster than SipHash on
/// them. (A loop rather than a fold, so the wildcard's hash is a constant.)
const fn fnv_extend(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
}

const FNV_START: u64 = 0xcbf29ce484222325;

/// The hash of the bare wildcard token.
const WILDCARD_ID: u64 = fnv_extend(FNV_START, WILDCARD.as_bytes());

/// A code location names the log statement, so it is part of the template, not a variable:
/// `t.s.TravelServiceImpl#451`, `handler.go:88`, `Main.java:120` (a dotted name without digits,
/// then `#` or `:`, then the line number).
fn code_location(core: &[u8]) -> bool {
    const SOURCES: [&[u8]; 12] =
        [b".java", b".go", b".py", b".rs", b".c", b".cc", b".cpp", b".h", b".js", b".ts", b".rb", b".scala"];
    let Some(sep) = core.iter().rposition(|c| *c == b'#' || *c == b':') else { return false };
    let (name, line) = (&core[..sep], &core[sep + 1..]);
    // `host.example.org:8080` is an address: after `:` only a source file's name counts.
    let file = core[sep] == b'#' || SOURCES.iter().any(|ext| name.ends_with(ext));
    file && !line.is_empty()
        && line.iter().all(u8::is_ascii_digit)
        && name.contains(&b'.')
        && name.last().is_some_and(u8::is_ascii_alphabetic)
        && name.iter().all(|c| c.is_ascii_alphabetic() || matches!(c, b'.' | b'_' | b'$' | b'/' | b'-'))
}

/// Whether a whole token (punctuation around it aside) is a code location.
pub fn is_code_location(token: &str) -> bool {
    let b = token.as_bytes();
    let (start, end) = core(b);
    code_location(&b[start..end])
}

/// Where a token's core lies: without the punctuation around it.
fn core(b: &[u8]) -> (usize, usize) {
    let start = b.iter().position(|c| !punctuation(*c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !punctuation(*c)).map_or(start, |i| i + 1);
    (start, end)
}

/// Splits a line at ASCII whitespace and masks each token: a token whose core carries a digit (ids,
/// numbers, addresses, durations) is a variable; so is a long hex string. Punctuation around
/// the core is shown, so `(pool size 10)` masks to `(pool size <*>)`, but it is not part of a
/// variable's identity: `(4.9`, `4.9,` and `4.9` match each other. A word glued to a value by
/// `=` or a run of dots is the template's (`size=<*>`). (All the punctuation is ASCII, so
/// scanning bytes never splits a character.)
fn scan(line: &str) -> impl Iterator<Item = Tok<'_>> {
    line.split_ascii_whitespace().map(|raw| {
        let b = raw.as_bytes();
        let (mut start, end) = core(b);
        let core = &b[start..end];
        let variable = !core.is_empty()
            && ((core.iter().any(u8::is_ascii_digit) && !code_location(core))
                || (core.len() >= 8 && core.iter().all(u8::is_ascii_hexdigit)));
        if !variable {
            return Tok { raw, core: (start, end), variable, id: fnv_extend(FNV_START, b) };
        }
        // A word glued to the value by `=` or a run of dots (`size=10`, `instruction......0x0`)
        // is the template's, not the value's.
        let glue = (1..core.len())
            .rev()
            .find(|&i| core[i - 1] == b'=' || (i >= 2 && core[i - 1] == b'.' && core[i - 2] == b'.'));
        let id = match glue {
            Some(i) if core[..i].iter().any(u8::is_ascii_alphabetic) && !core[..i].iter().any(u8::is_ascii_digit) => {
                start += i;
                fnv_extend(fnv_extend(FNV_START, &b[..start]), WILDCARD.as_bytes())
            }
            _ => WILDCARD_ID,
        };
        Tok { raw, core: (start, end), variable, id }
    })
}

/// The masked tokens of a line (see [`scan`]).
pub fn tokens(line: &str) -> Vec<String> {
    scan(line).map(|t| t.text().into_owned()).collect()
}

impl Miner {
    pub fn new(config: Config) -> Miner {
        Miner { config, ..Default::default() }
    }

    /// The leaf's key and the prefix's key of a line.
    fn key(&self, toks: &[Tok]) -> (u64, u64) {
        // A leading token that is a variable keys as the wildcard, so values do not split groups.
        let mut h: u64 = 0;
        for t in toks.iter().take(self.config.depth) {
            let id = if t.variable { WILDCARD_ID } else { t.id };
            h = (h.rotate_left(5) ^ id).wrapping_mul(0x9e3779b97f4a7c15);
        }
        ((h ^ toks.len() as u64).wrapping_mul(0x9e3779b97f4a7c15), h)
    }

    /// Whether `short`'s tokens all appear, in order, in `long` (a template of more tokens),
    /// and every run of `long`'s extra tokens is a value or its unit: it holds or borders a
    /// variable, at most one word that is not one, and no named field. A field whose value
    /// spans a varying number of tokens (`5 bytes` / `5 bytes (0.1 KB)`), not another message.
    fn same_template(short: &Group, long: &Group) -> bool {
        let (a, b) = (&short.ids, &long.ids);
        // The alignment costs a table of both lengths: a huge line is not aligned.
        if a.len() < 3 || a.len() >= b.len() || 2 * a.len() < b.len() || b.len() > MAX_ALIGNED {
            return false;
        }
        // The longest common subsequence, then its path back.
        let w = b.len() + 1;
        let mut t = vec![0u16; (a.len() + 1) * w];
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                t[i * w + j] = if a[i - 1] == b[j - 1] {
                    t[(i - 1) * w + j - 1] + 1
                } else {
                    t[(i - 1) * w + j].max(t[i * w + j - 1])
                };
            }
        }
        if t[a.len() * w + b.len()] as usize != a.len() {
            return false;
        }
        let variable = |j: usize| long.template.get(j).is_some_and(|s| s.contains(WILDCARD));
        let mut extra = vec![false; b.len()];
        let (mut i, mut j) = (a.len(), b.len());
        while j > 0 {
            if i > 0 && a[i - 1] == b[j - 1] && t[i * w + j] == t[(i - 1) * w + j - 1] + 1 {
                i -= 1;
            } else {
                extra[j - 1] = true;
            }
            j -= 1;
        }
        let mut k = 0;
        while k < b.len() {
            if !extra[k] {
                k += 1;
                continue;
            }
            let start = k;
            while k < b.len() && extra[k] {
                k += 1;
            }
            let borders = (start > 0 && variable(start - 1)) || variable(k);
            // A named field (`user=<*>`, `port: <*>`) present in one and absent in the other
            // makes two messages.
            let named = (start..k).any(|j| long.template[j].contains('=') || long.template[j].ends_with(':'));
            // A value with its unit (`(0.1 KB)`, `sec`), not a phrase (`over <*> seconds`).
            let words = (start..k).filter(|&j| !variable(j)).count();
            if named || words > 1 || (!borders && words == k - start) {
                return false;
            }
        }
        true
    }

    /// Groups of one leaf alike but for the token at one place are one when they show three
    /// values there (`session closed for user root` / `… cyrus` / `… news`), or when a new
    /// group has a variable there and the other holds no more than `ODD` lines (an odd first
    /// line, `Invalid user webmaster from <*>`, before `Invalid user <*> from <*>`): that token
    /// is a value. They merge, and each takes the wildcard there.
    fn merge_values(&mut self, key: u64, g: usize) {
        let ids = &self.groups[g].ids;
        // By place, in order, so the same lines always merge the same way.
        let mut at: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for &h in &self.leaves[&key] {
            let other = &self.groups[h].ids;
            if h == g || other.len() != ids.len() {
                continue;
            }
            let mut differ = (0..ids.len()).filter(|&i| ids[i] != other[i]);
            if let (Some(p), None) = (differ.next(), differ.next()) {
                at.entry(p).or_default().push(h);
            }
        }
        let groups = &self.groups;
        let Some((p, mut alike)) = at.into_iter().find(|(p, alike)| {
            alike.len() >= 2 || (groups[g].template[*p] == WILDCARD && groups[alike[0]].size <= ODD)
        }) else {
            return;
        };
        alike.push(g);
        let root = self.root(alike[0]);
        for h in alike {
            let r = self.root(h);
            if r != root {
                self.parent[r] = root;
                self.groups[root].lines += self.groups[r].lines;
            }
            self.groups[h].template[p] = WILDCARD.to_string();
            self.groups[h].ids[p] = WILDCARD_ID;
        }
    }

    /// The group `g` was merged into (itself if none).
    pub fn root(&self, mut g: usize) -> usize {
        while self.parent[g] != g {
            g = self.parent[g];
        }
        g
    }

    /// The share of positions where `template` and `toks` agree (a wildcard agrees with anything
    /// masked), and the number of exact agreements (to break ties).
    fn similarity(template: &[u64], ids: &[u64]) -> (f64, usize) {
        let mut same = 0;
        let mut exact = 0;
        for (a, b) in template.iter().zip(ids) {
            if a == b {
                same += 1;
                exact += 1;
            } else if *a == WILDCARD_ID {
                same += 1;
            }
        }
        (same as f64 / template.len().max(1) as f64, exact)
    }

    /// Adds a line; returns its group's id. Groups merge as evidence comes (see `root`), so
    /// read a line's group at the end as `root(id)`.
    pub fn add(&mut self, line: &str) -> usize {
        let toks: Vec<Tok> = scan(line).collect();
        let ids: Vec<u64> = toks.iter().map(|t| t.id).collect();
        let (key, prefix) = self.key(&toks);
        let candidates: &[usize] = self.leaves.get(&key).map(Vec::as_slice).unwrap_or_default();
        let best = candidates
            .iter()
            .map(|&g| (g, Self::similarity(&self.groups[g].ids, &ids)))
            .max_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.1.1.cmp(&b.1.1)));
        let threshold = self.config.similarity;
        let chosen = match best {
            Some((g, (sim, _))) if sim >= threshold || candidates.len() >= self.config.max_children => Some(g),
            _ => None,
        };
        match chosen {
            Some(g) => {
                let group = &mut self.groups[g];
                for ((t, id), new) in group.template.iter_mut().zip(group.ids.iter_mut()).zip(&ids) {
                    if id != new && *id != WILDCARD_ID {
                        *t = WILDCARD.to_string();
                        *id = WILDCARD_ID;
                    }
                }
                group.size += 1;
                let r = self.root(g);
                self.groups[r].lines += 1;
                g
            }
            None => {
                let group =
                    Group { template: toks.iter().map(|t| t.text().into_owned()).collect(), ids, size: 1, lines: 1 };
                let g = self.groups.len();
                // A group of another token count with the same start that is the same template
                // with a field one or more tokens longer: the two are one.
                let others = self.prefixes.get(&prefix).map(Vec::as_slice).unwrap_or_default();
                let same = others.iter().copied().find(|&h| {
                    let other = &self.groups[h];
                    match other.ids.len().cmp(&group.ids.len()) {
                        std::cmp::Ordering::Less => Self::same_template(other, &group),
                        std::cmp::Ordering::Greater => Self::same_template(&group, other),
                        std::cmp::Ordering::Equal => false,
                    }
                });
                let root = same.map_or(g, |h| self.root(h));
                self.parent.push(root);
                self.groups.push(group);
                if root != g {
                    self.groups[root].lines += 1;
                }
                self.leaves.entry(key).or_default().push(g);
                self.prefixes.entry(prefix).or_default().push(g);
                self.merge_values(key, g);
                g
            }
        }
    }

    /// The template of group `g`, tokens joined by spaces.
    pub fn template(&self, g: usize) -> String {
        self.groups[self.root(g)].template.join(" ")
    }

    /// Lines in the group `g` belongs to now (with every group merged into it).
    pub fn size(&self, g: usize) -> usize {
        self.groups[self.root(g)].lines
    }

    /// The groups as they stand, merged ones once: the ids `root` gives.
    pub fn groups(&self) -> Vec<usize> {
        (0..self.groups.len()).filter(|&g| self.parent[g] == g).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_groups() {
        assert_eq!(
            tokens("ERROR pool exhausted: waited 5003ms (pool size 10)").join(" "),
            "ERROR pool exhausted: waited <*> (pool size <*>)"
        );
        let mut m = Miner::new(Config::default());
        let a = m.add("PacketResponder 1 for block blk_38865049064139660 terminating");
        let b = m.add("PacketResponder 0 for block blk_-6952295868487656571 terminating");
        let c = m.add("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010");
        let d = m.add("Verification succeeded for blk_-4980916519894289629");
        assert_eq!(a, b);
        assert!(c != a && d != a && c != d);
        assert_eq!(m.template(a), "PacketResponder <*> for block <*> terminating");
        let e = m.add("session opened for user alice by sshd service on the gateway");
        let f = m.add("session opened for user bob by sshd service on the gateway");
        let g = m.add("session closed for user bob by sshd service on the gateway");
        assert_eq!(e, f, "a differing word in the same position merges");
        assert_eq!(m.template(e), "session opened for user <*> by sshd service on the gateway");
        assert_ne!(e, g, "the leading words key the tree");
        // A code location is the statement's identity; an address is not.
        assert_eq!(
            tokens("INFO t.s.TravelServiceImpl#451 at handler.go:88 from 10.0.0.1:80 localhost:8080").join(" "),
            "INFO t.s.TravelServiceImpl#451 at handler.go:88 from <*> <*>"
        );
        // Text beyond ASCII passes through whole, and its numbers are still masked.
        assert_eq!(tokens("Fehler beim Öffnen: «datei-7» nach 30s").join(" "), "Fehler beim Öffnen: <*> nach <*>");
        let h = m.add("Fehler beim Öffnen: «datei-7» nach 30s");
        assert_eq!(m.template(h), "Fehler beim Öffnen: <*> nach <*>");
        // A word glued to a value by `=` or a run of dots stays in the template; a token with a
        // digit before the glue is a value throughout.
        assert_eq!(
            tokens("size=10 instruction......0x0 user=bob a1=5 (timeout=30s)").join(" "),
            "size=<*> instruction......<*> user=bob <*> (timeout=<*>)"
        );
        let (g1, g2) = (m.add("flushed size=10 bytes"), m.add("flushed count=10 bytes"));
        assert_ne!(g1, g2, "the glued word tells two templates apart");
        // Punctuation that clings to a value does not split its template, however many lines
        // come each way.
        let wrapped: Vec<usize> = (0..3).map(|n| m.add(&format!("refill took ({n}.5) s"))).collect();
        let plain: Vec<usize> = (0..3).map(|n| m.add(&format!("refill took {n}.5 s"))).collect();
        let i = m.add("refill took 7.5, s");
        assert!(plain.iter().chain(&wrapped).all(|g| m.root(*g) == m.root(i)), "{plain:?} {wrapped:?} {i}");
        assert_eq!(m.template(m.root(i)), "refill took (<*>) s", "the first line's punctuation");
    }

    /// Lines in order; the group each belongs to at the end.
    fn mine(lines: &[&str]) -> (Miner, Vec<usize>) {
        let mut m = Miner::new(Config::default());
        let ids: Vec<usize> = lines.iter().map(|l| m.add(l)).collect();
        let roots = ids.iter().map(|g| m.root(*g)).collect();
        (m, roots)
    }

    #[test]
    fn a_value_spanning_more_tokens_is_the_same_template() {
        let (m, g) = mine(&[
            "proxy.cse.cuhk.edu.hk:5070 close, 1190 bytes sent, 1671 bytes received, lifetime 00:02",
            "proxy.cse.cuhk.edu.hk:5070 close, 1190 bytes sent, 1671 bytes received, lifetime <1 sec",
            "proxy.cse.cuhk.edu.hk:5070 close, 451 bytes sent, 18846 bytes (18.4 KB) received, lifetime 00:03",
            "proxy.cse.cuhk.edu.hk:5070 close, 2036 bytes (1.98 KB) sent, 8910 bytes (8.70 KB) received, lifetime 02:01",
        ]);
        assert!(
            g.iter().all(|x| *x == g[0]),
            "{g:?}: {:?}",
            m.groups().iter().map(|x| m.template(*x)).collect::<Vec<_>>()
        );
        assert_eq!(m.size(g[0]), 4);
        assert_eq!(m.groups().len(), 1);
        // A named field present in one and absent in the other, or a phrase, makes two messages.
        let (_, g) = mine(&[
            "authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=10.0.0.1",
            "authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=10.0.0.1 user=root",
            "total of 12 ddr error(s) detected and corrected",
            "total of 12 ddr error(s) detected and corrected over 3600 seconds",
        ]);
        assert_ne!(g[0], g[1]);
        assert_ne!(g[2], g[3]);
    }

    #[test]
    fn a_word_seen_with_three_values_or_an_odd_first_line_is_a_value() {
        let (m, g) = mine(&[
            "session closed for user root",
            "session closed for user cyrus",
            "session closed for user news",
            "session closed for user test",
        ]);
        assert!(g.iter().all(|x| *x == g[0]), "{g:?}");
        assert_eq!(m.template(g[0]), "session closed for user <*>");
        // Two values are not enough: they may be two messages.
        let (_, g) = mine(&["link state is up on port", "link state is down on port"]);
        assert_ne!(g[0], g[1]);
        // An odd first line does not keep its own group once the value shows as a variable.
        let (_, g) = mine(&[
            "Invalid user webmaster from 173.234.31.186",
            "Invalid user test9 from 52.80.34.196",
            "Invalid user webmaster from 173.234.31.186",
            "Invalid user admin1 from 5.188.10.180",
        ]);
        assert!(g.iter().all(|x| *x == g[0]), "{g:?}");
        // But a big group is not an odd line: `SOCKS5` masked is not evidence that `HTTPS` varies.
        let mut lines = vec!["proxy.cse.cuhk.edu.hk:5070 open through proxy HTTPS"; 5];
        lines.push("proxy.cse.cuhk.edu.hk:5070 open through proxy SOCKS5");
        let (_, g) = mine(&lines);
        assert_ne!(g[0], g[5]);
    }

    #[test]
    fn a_huge_line_is_mined_without_aligning_it() {
        let long = format!("start of a record {}", "field value ".repeat(50_000));
        let longer = format!("start of a record {} (1 KB)", "field value ".repeat(50_000));
        let (m, g) = mine(&[&long, &longer]);
        assert_ne!(g[0], g[1]);
        assert_eq!(m.groups().len(), 2);
    }
}
