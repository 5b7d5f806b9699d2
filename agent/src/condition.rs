//! The conditions a pass reports, keyed by a typed [`Item`]: what is wrong
//! (or waiting) on the box, each with a severity, a message an operator can
//! act on, and since when. The wire key (`Condition::item`) is
//! [`Item::key`]; nothing else spells it.

use jiff::Timestamp;
use touchline_schemas::TargetPath;
use touchline_schemas::report::{Condition, Severity};

/// The key prefix of [`Item::File`].
const FILE_PREFIX: &str = "file:";

/// What a condition is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The last bundle received was refused.
    Bundle,
    /// The controller does not answer.
    Controller,
    /// The box's clock is off.
    Clock,
    /// Not enough space.
    Disk,
    /// A download failed.
    Fetch,
    /// Writing the files failed.
    Apply,
    /// `configuration.json` keys were changed on the box.
    Config,
    /// The reload command failed.
    Reload,
    /// The software release (staged, waiting, held back, rolled back…).
    Release,
    /// The agent's own release (staged, refused, waiting, rolled back…).
    Agent,
    /// A file the club put where the bundle wants one of ours.
    File(TargetPath),
}

impl Item {
    /// The key in reports and `state.json` (`disk`, `file:<path>`…).
    pub fn key(&self) -> String {
        match self {
            Self::Bundle => "bundle".into(),
            Self::Controller => "controller".into(),
            Self::Clock => "clock".into(),
            Self::Disk => "disk".into(),
            Self::Fetch => "fetch".into(),
            Self::Apply => "apply".into(),
            Self::Config => "config".into(),
            Self::Reload => "reload".into(),
            Self::Release => "release".into(),
            Self::Agent => "agent".into(),
            Self::File(p) => format!("{FILE_PREFIX}{p}"),
        }
    }
}

/// Sets (or updates) the condition of `item`; `since` moves only when the
/// message or the severity changes.
pub fn set(
    list: &mut Vec<Condition>,
    item: &Item,
    severity: Severity,
    message: String,
    now: Timestamp,
) {
    let key = item.key();
    match list.iter_mut().find(|c| c.item == key) {
        Some(c) if c.message == message && c.severity == severity => {}
        Some(c) => {
            c.message = message;
            c.severity = severity;
            c.since = now;
        }
        None => list.push(Condition {
            item: key,
            severity,
            message,
            since: now,
        }),
    }
}

/// Clears the condition of `item`.
pub fn clear(list: &mut Vec<Condition>, item: &Item) {
    let key = item.key();
    list.retain(|c| c.item != key);
}

/// Clears every [`Item::File`] condition.
pub fn clear_files(list: &mut Vec<Condition>) {
    list.retain(|c| !c.item.starts_with(FILE_PREFIX));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_condition_keeps_its_since_until_its_message_changes() {
        let mut l = Vec::new();
        let t0 = at("2026-12-01T10:00:00Z");
        let t1 = at("2026-12-01T11:00:00Z");
        set(&mut l, &Item::Disk, Severity::Error, "full".into(), t0);
        set(&mut l, &Item::Disk, Severity::Error, "full".into(), t1);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].since, t0);
        set(&mut l, &Item::Disk, Severity::Error, "fuller".into(), t1);
        assert_eq!(l[0].since, t1);
        assert_eq!(l[0].item, "disk");
        clear(&mut l, &Item::Disk);
        assert!(l.is_empty());
    }

    #[test]
    fn file_conditions_are_keyed_by_path_and_cleared_together() {
        let mut l = Vec::new();
        let now = at("2026-12-01T10:00:00Z");
        let p = TargetPath::new("Sponsors/a.mp4").unwrap();
        set(
            &mut l,
            &Item::File(p),
            Severity::Warning,
            "club".into(),
            now,
        );
        set(
            &mut l,
            &Item::Config,
            Severity::Warning,
            "drift".into(),
            now,
        );
        assert_eq!(l[0].item, "file:Sponsors/a.mp4");
        clear_files(&mut l);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].item, "config");
    }
}
