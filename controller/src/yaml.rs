//! Reading one manifest file: typed deserialization (serde_yaml) plus a map
//! from each node's path to its `line:col`, so that semantic errors and
//! `touchline explain` can point at the exact line that set a value.
//!
//! serde_yaml gives positions only for its own errors, so positions come from
//! a second, event-level pass with `saphyr-parser`. Aliases are not expanded
//! in that pass (a YAML bomb costs nothing there; serde_yaml caps repetition).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::DeserializeOwned;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl Pos {
    /// Line 1, column 1.
    pub const START: Pos = Pos { line: 1, col: 1 };
}

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Where every node of a document starts. For a mapping entry, the position
/// of its key (the line an operator reads as "the line that sets it").
#[derive(Debug, Default)]
pub struct Positions {
    map: HashMap<Vec<Seg>, Pos>,
    /// Plain scalars that YAML reads as non-finite floats (`.nan`, `.inf`):
    /// they have no JSON form.
    pub non_finite: Vec<(Vec<Seg>, Pos)>,
    /// Every scalar (keys too) with its path and position; only collected
    /// when locating an error (see [`from_str_located`]).
    scalars: Vec<Scalar>,
}

#[derive(Debug)]
struct Scalar {
    value: String,
    /// For a key, the path of the mapping holding it.
    path: Vec<Seg>,
    pos: Pos,
    is_key: bool,
}

impl Positions {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &[Seg]) -> Pos {
        (0..=path.len())
            .rev()
            .find_map(|n| self.map.get(&path[..n]).copied())
            .unwrap_or(Pos::START)
    }

    /// The exact position of `path`, if it is in the document.
    pub fn get(&self, path: &[Seg]) -> Option<Pos> {
        self.map.get(path).copied()
    }
}

/// Deepest nesting of mappings and sequences a manifest may have. The real
/// ones need 6; serde_yaml's time grows with the square of the depth (400 KB
/// of `[[[…` took 3 min 50 s in `touchline validate` and stalled the sync),
/// so deeper text is refused before either pass reads it.
pub const MAX_DEPTH: usize = 32;

/// Where the nesting first goes deeper than [`MAX_DEPTH`], if it does: one
/// pass over the parser's events, stopping there.
pub fn too_deep(text: &str) -> Option<Pos> {
    let mut depth = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(e) => e,
            // The scanner's own limit on flow nesting: deep `[[[…` never
            // reaches serde_yaml, whose time grows with the square of the
            // depth (400 KB of it took 4 minutes).
            Err(e) if e.info().contains("recursion limit") => {
                return Some(Pos {
                    line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                    col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
                });
            }
            // Other syntax errors: serde_yaml reports them with its words.
            Err(_) => return None,
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(Pos {
                        line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
                        col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
                    });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Builds the path → position map. Returns `None` when the text holds no
/// document node at all (empty, or only comments).
pub fn positions(text: &str) -> Option<Positions> {
    index(text, false)
}

fn index(text: &str, collect_scalars: bool) -> Option<Positions> {
    enum Frame {
        Map {
            key: Option<(String, Pos)>,
            expecting_key: bool,
        },
        Seq {
            next: usize,
        },
    }
    let mut out = Positions::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<Seg> = Vec::new();
    let mut saw_node = false;

    // The path of the node that starts now, as a child of the top frame.
    // Returns false when the node is a mapping key (not a value).
    fn enter(stack: &mut [Frame], path: &mut Vec<Seg>) -> bool {
        match stack.last_mut() {
            None => true,
            Some(Frame::Map { expecting_key, key }) => {
                if *expecting_key {
                    return false;
                }
                if let Some((k, _)) = key {
                    path.push(Seg::Key(k.clone()));
                }
                true
            }
            Some(Frame::Seq { next }) => {
                path.push(Seg::Index(*next));
                *next += 1;
                true
            }
        }
    }
    // After a value node ends, pop its segment and flip the parent mapping
    // back to expecting a key.
    fn leave(stack: &mut [Frame], path: &mut Vec<Seg>) {
        match stack.last_mut() {
            Some(Frame::Map { expecting_key, key }) => {
                if key.is_some() {
                    path.pop();
                }
                *expecting_key = true;
                *key = None;
            }
            Some(Frame::Seq { .. }) => {
                path.pop();
            }
            None => {}
        }
    }

    for item in Parser::new_from_str(text) {
        // Syntax errors are reported by serde_yaml with their own position;
        // positions found so far are still useful.
        let Ok((event, span)) = item else { break };
        let pos = Pos {
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
        };
        match event {
            Event::Scalar(value, style, _, _) => {
                saw_node = true;
                if !enter(&mut stack, &mut path) {
                    // A mapping key: remember it; its value comes next.
                    if collect_scalars {
                        out.scalars.push(Scalar {
                            value: value.to_string(),
                            path: path.clone(),
                            pos,
                            is_key: true,
                        });
                    }
                    if let Some(Frame::Map { key, expecting_key }) = stack.last_mut() {
                        *key = Some((value.to_string(), pos));
                        *expecting_key = false;
                        let mut p = path.clone();
                        p.push(Seg::Key(value.to_string()));
                        out.map.entry(p).or_insert(pos);
                    }
                    continue;
                }
                out.map.entry(path.clone()).or_insert(pos);
                if collect_scalars {
                    out.scalars.push(Scalar {
                        value: value.to_string(),
                        path: path.clone(),
                        pos,
                        is_key: false,
                    });
                }
                if style == ScalarStyle::Plain && is_non_finite(&value) {
                    out.non_finite.push((path.clone(), pos));
                }
                leave(&mut stack, &mut path);
            }
            Event::Alias(_) => {
                saw_node = true;
                if enter(&mut stack, &mut path) {
                    out.map.entry(path.clone()).or_insert(pos);
                    leave(&mut stack, &mut path);
                } else if let Some(Frame::Map { key, expecting_key }) = stack.last_mut() {
                    *key = None;
                    *expecting_key = false;
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                saw_node = true;
                if !enter(&mut stack, &mut path) {
                    // A complex key (a mapping or list as a key): no manifest
                    // type accepts one, and serde_yaml reports it. Positions
                    // found so far stay.
                    break;
                }
                out.map.entry(path.clone()).or_insert(pos);
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        key: None,
                        expecting_key: true,
                    }
                } else {
                    Frame::Seq { next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                leave(&mut stack, &mut path);
            }
            _ => {}
        }
    }
    saw_node.then_some(out)
}

fn is_non_finite(s: &str) -> bool {
    matches!(
        s,
        ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
    )
}

/// A serde_yaml error split into its message and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where, if known.
    pub pos: Option<Pos>,
    /// What, without the " at line N column M" suffix.
    pub message: String,
}

/// Deserializes `text` into `T`. On error, the position is refined: serde
/// reports errors raised by a field's own parser (an invalid id, a duplicate
/// key) at the start of the enclosing mapping, so the offending value is
/// looked up by the path and the quoted value in the message.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| {
        let pos = e.location().map(|l| Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            col: u32::try_from(l.column()).unwrap_or(u32::MAX),
        });
        let mut message = strip_marks(&e.to_string());
        let mut pos = refine(text, pos, &message).or(pos);
        if message.contains("more than one document") {
            message = "a manifest file holds one YAML document: remove the extra `---` separator and what follows, or move it to its own file".into();
            let starts = text.lines().enumerate().filter(|(_, l)| l.starts_with("---"));
            let second = if text.trim_start().starts_with("---") { starts.clone().nth(1) } else { starts.clone().next() };
            pos = second.map(|(i, _)| Pos { line: u32::try_from(i + 1).unwrap_or(u32::MAX), col: 1 }).or(pos);
        }
        if let Some(p) = pos
            && text
                .lines()
                .nth(p.line.saturating_sub(1) as usize)
                .is_some_and(|l| l.trim_start_matches(' ').starts_with('\t'))
        {
            message.push_str(" (YAML does not allow tabs for indentation; use spaces)");
        }
        YamlError { pos, message }
    })
}

/// Finds the scalar an error message is about: `<path>: ... `value` ...`
/// or `duplicate field `name``.
fn refine(text: &str, reported: Option<Pos>, message: &str) -> Option<Pos> {
    let (prefix, rest) = match message.split_once(": ") {
        Some((p, r)) if !p.contains(' ') => (parse_serde_path(p), r),
        _ => (Vec::new(), message),
    };
    let quoted = rest.split('`').nth(1)?;
    let idx = index(text, true)?;
    let after = reported.unwrap_or(Pos::START);
    let under = |s: &&Scalar| s.path.starts_with(&prefix) && s.pos >= after;
    if rest.starts_with("duplicate field") {
        // The second occurrence of the key in the same mapping.
        let keys: Vec<&Scalar> = idx
            .scalars
            .iter()
            .filter(under)
            .filter(|s| s.is_key && s.value == quoted)
            .collect();
        let first = keys.first()?;
        return keys
            .iter()
            .find(|k| k.path == first.path && k.pos != first.pos)
            .map(|k| k.pos);
    }
    idx.scalars
        .iter()
        .filter(under)
        .find(|s| !s.is_key && s.value == quoted)
        .map(|s| s.pos)
}

/// `videos[1].size` → `[videos, 1, size]`; `.` → `[]`.
fn parse_serde_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p.split('.').filter(|s| !s.is_empty()) {
        let mut name = part;
        let mut indices = Vec::new();
        while let Some(open) = name.rfind('[') {
            let Some(i) = name[open + 1..]
                .strip_suffix(']')
                .and_then(|n| n.parse().ok())
            else {
                break;
            };
            indices.push(i);
            name = &name[..open];
        }
        if !name.is_empty() {
            out.push(Seg::Key(name.to_owned()));
        }
        out.extend(indices.into_iter().rev().map(Seg::Index));
    }
    out
}

/// Removes every ` at line N column M` from a libyaml/serde_yaml message.
fn strip_marks(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &after[digits..];
        if digits > 0 && tail.starts_with(" column ") {
            let t = &tail[" column ".len()..];
            let d2 = t.bytes().take_while(u8::is_ascii_digit).count();
            rest = &t[d2..];
        } else {
            out.push_str(" at line ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A place in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Relative path.
    pub file: Arc<str>,
    /// Line and column.
    pub pos: Pos,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos.line)
    }
}

impl serde::Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_deeper_than_the_cap_is_found_where_it_starts() {
        let ok = format!(
            "a: {}1{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(too_deep(&ok), None);
        let deep = format!("a:\n  b: {}1{}\n", "[".repeat(40), "]".repeat(40));
        // Two mappings, then the 31st `[` is level 33.
        assert_eq!(
            too_deep(&deep),
            Some(Pos {
                line: 2,
                col: 6 + 30
            })
        );
        // 200,000 unclosed: the scanner's own limit, found at once.
        let bomb = format!("a:\n  b: {}\n", "[".repeat(200_000));
        assert!(too_deep(&bomb).is_some_and(|p| p.line == 2));
    }

    fn p(segs: &[Seg]) -> Vec<Seg> {
        segs.to_vec()
    }

    #[test]
    fn positions_of_keys_and_items() {
        let text =
            "id: a\nlabels:\n  sport: rugby\ngroups:\n  - beta\n  - north\nconfig: {x: {y: 1}}\n";
        let pos = positions(text).unwrap();
        assert_eq!(pos.get(&p(&["id".into()])), Some(Pos { line: 1, col: 1 }));
        assert_eq!(
            pos.get(&p(&["labels".into(), "sport".into()])),
            Some(Pos { line: 3, col: 3 })
        );
        assert_eq!(
            pos.get(&p(&["groups".into(), 1.into()])),
            Some(Pos { line: 6, col: 5 })
        );
        assert_eq!(
            pos.get(&p(&["config".into(), "x".into(), "y".into()])),
            Some(Pos { line: 7, col: 14 })
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(
            pos.find(&p(&["groups".into(), 7.into()])),
            Pos { line: 4, col: 1 }
        );
    }

    #[test]
    fn empty_and_comment_only_files_have_no_document() {
        assert!(positions("").is_none());
        assert!(positions("# nothing\n\n").is_none());
    }

    #[test]
    fn non_finite_floats_are_found() {
        let pos = positions("config:\n  a: .nan\n  b: '.inf'\n  c: -.inf\n").unwrap();
        let lines: Vec<u32> = pos.non_finite.iter().map(|(_, p)| p.line).collect();
        assert_eq!(lines, vec![2, 4]);
    }

    #[test]
    fn serde_errors_keep_the_position_apart() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let err = from_str::<T>("a: 1\nb: 2\n").unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 2, col: 1 }));
        assert_eq!(err.message, "unknown field `b`, expected `a`");
        let err = from_str::<T>("a: [1\n").unwrap_err();
        assert!(err.pos.is_some());
        assert!(!err.message.contains(" at line "), "{}", err.message);
    }

    #[test]
    fn errors_from_field_parsers_point_at_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct V {
            id: touchline_schemas::SiteId,
            n: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            items: Vec<V>,
        }
        let text = "items:\n  - id: ok\n    n: 1\n  - n: 2\n    id: Not_Ok\n";
        let err = from_str::<T>(text).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 5, col: 9 }), "{}", err.message);
        let err = from_str::<V>("id: a\nn: 1\nid: b\n").unwrap_err();
        assert_eq!(err.message, "duplicate field `id`");
        assert_eq!(err.pos, Some(Pos { line: 3, col: 1 }));
        let err = from_str::<V>("id: a\n\tn: 1\n").unwrap_err();
        assert!(err.message.ends_with("use spaces)"), "{}", err.message);
    }

    #[test]
    fn serde_paths() {
        assert_eq!(
            parse_serde_path("videos[1].size"),
            vec![Seg::from("videos"), Seg::from(1), Seg::from("size")]
        );
        assert_eq!(parse_serde_path("."), Vec::<Seg>::new());
        assert_eq!(
            parse_serde_path("a[0][2]"),
            vec![Seg::from("a"), Seg::from(0), Seg::from(2)]
        );
    }

    #[test]
    fn strip_marks_leaves_other_text() {
        assert_eq!(
            strip_marks(
                "did not find expected key at line 3 column 1, while parsing a block mapping at line 1 column 1"
            ),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(strip_marks("look at line spacing"), "look at line spacing");
    }
}
