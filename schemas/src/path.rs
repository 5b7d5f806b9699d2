//! [`TargetPath`]: a path that will be written on a box, validated before
//! anything touches the disk (modelled on tough's `TargetName`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted target path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest accepted path component, in bytes (ext4's limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Deepest accepted nesting.
pub const MAX_DEPTH: usize = 8;
/// Names starting with this prefix are the agent's own temporaries.
pub const RESERVED_PREFIX: &str = ".touchline";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty string.
    #[error("unsafe path: empty")]
    Empty,
    /// Starts with `/` (or a drive letter / backslash).
    #[error("unsafe path `{0}`: absolute paths are not allowed")]
    Absolute(String),
    /// Contains a `..` component.
    #[error("unsafe path `{0}`: `..` is not allowed")]
    ParentDir(String),
    /// Contains NUL or another control character.
    #[error("unsafe path `{0}`: control characters are not allowed")]
    Control(String),
    /// Contains `\`.
    #[error("unsafe path `{0}`: backslashes are not allowed")]
    Backslash(String),
    /// `.`, an empty component (`a//b`) or a trailing `/`.
    #[error("unsafe path `{0}`: not normalized (empty or `.` component, or trailing `/`)")]
    NotNormalized(String),
    /// A component uses the agent's reserved prefix.
    #[error("unsafe path `{0}`: names starting with `{RESERVED_PREFIX}` are reserved")]
    Reserved(String),
    /// Too long or too deep.
    #[error(
        "unsafe path `{0}`: too long (at most {MAX_PATH_LEN} bytes, {MAX_COMPONENT_LEN} per component, {MAX_DEPTH} levels)"
    )]
    TooLong(String),
}

/// A relative, normalized path below a box's managed directory.
///
/// Guarantees: not empty, relative, `/`-separated, no empty, `.` or `..`
/// component, no NUL, control character or backslash, bounded length and
/// depth, no component with the agent's reserved prefix. It does not convert
/// back into a `String` implicitly; use [`TargetPath::as_str`] or
/// [`TargetPath::components`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetPath(String);

impl TargetPath {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<Self, PathError> {
        let shown = || {
            s.chars()
                .take(120)
                .collect::<String>()
                .escape_debug()
                .to_string()
        };
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.chars().any(char::is_control) {
            return Err(PathError::Control(shown()));
        }
        if s.starts_with('/') || s.as_bytes().get(1) == Some(&b':') {
            return Err(PathError::Absolute(shown()));
        }
        if s.contains('\\') {
            return Err(PathError::Backslash(shown()));
        }
        let mut depth = 0;
        for c in s.split('/') {
            depth += 1;
            match c {
                ".." => return Err(PathError::ParentDir(shown())),
                "" | "." => return Err(PathError::NotNormalized(shown())),
                c if c.starts_with(RESERVED_PREFIX) => return Err(PathError::Reserved(shown())),
                c if c.len() > MAX_COMPONENT_LEN => return Err(PathError::TooLong(shown())),
                _ => {}
            }
        }
        if s.len() > MAX_PATH_LEN || depth > MAX_DEPTH {
            return Err(PathError::TooLong(shown()));
        }
        Ok(Self(s.to_owned()))
    }

    /// Joins validated components (each must be a single component).
    pub fn from_components<'a>(
        parts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PathError> {
        let parts: Vec<&str> = parts.into_iter().collect();
        for p in &parts {
            if p.contains('/') {
                return Err(PathError::NotNormalized(parts.join("/")));
            }
        }
        Self::new(&parts.join("/"))
    }

    /// The path as `/`-separated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for TargetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TargetPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TargetPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for TargetPath {
    fn schema_name() -> Cow<'static, str> {
        "TargetPath".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PATH_LEN,
            "pattern": r"^(?!/)(?!.*(^|/)\.\.?(/|$))(?!.*//)(?!.*/$)[^\\\u0000-\u001f\u007f]+$",
            "description": "relative path below the managed directory: no leading '/', no '..' or '.', no control characters",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_video_paths() {
        for ok in [
            "Sponsors/Partenaires/credit-agricole.mp4",
            "Échauffement/Cardio/warm up 1.mp4",
            "a",
            "a/.hidden",
        ] {
            assert_eq!(TargetPath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_escapes_with_the_reason() {
        let cases = [
            ("../../etc/passwd", "`..` is not allowed"),
            ("a/../b", "`..` is not allowed"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("C:/x", "absolute paths are not allowed"),
            ("a\0b", "control characters"),
            ("a\nb", "control characters"),
            ("a\\b", "backslashes"),
            ("a//b", "not normalized"),
            ("./a", "not normalized"),
            ("a/", "not normalized"),
            ("a/.touchline-tmp-1", "reserved"),
            ("", "empty"),
        ];
        for (bad, why) in cases {
            let err = TargetPath::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(TargetPath::new("a/".repeat(9).trim_end_matches('/')).is_err());
        assert!(TargetPath::new(&"x".repeat(256)).is_err());
    }

    #[test]
    fn components_cannot_smuggle_separators() {
        assert!(TargetPath::from_components(["a/..", "b"]).is_err());
        assert_eq!(
            TargetPath::from_components(["Sponsors", "Club", "x.mp4"])
                .unwrap()
                .as_str(),
            "Sponsors/Club/x.mp4"
        );
    }

    proptest! {
        /// Whatever is accepted can be joined under a root and stays under it.
        #[test]
        fn accepted_paths_stay_below_the_root(s in "[a-z./\\\\\0-]{1,20}") {
            if let Ok(p) = TargetPath::new(&s) {
                let root = std::path::Path::new("/root-dir");
                let joined = root.join(p.as_str());
                let mut depth: i64 = 0;
                for c in joined.strip_prefix(root).unwrap().components() {
                    match c {
                        std::path::Component::Normal(_) => depth += 1,
                        other => prop_assert!(false, "component {other:?} in {s:?}"),
                    }
                }
                prop_assert!(depth >= 1);
            }
        }
    }
}
