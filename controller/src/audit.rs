//! The audit log: filters over it, and its CSV form. The entries are
//! written by each operator action (`Store::audit`), never edited.

use jiff::Timestamp;
use serde::Deserialize;

use crate::store::AuditEntry;

/// A `since` filter that is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("since `{given}` is not an RFC 3339 time: {why}")]
pub struct BadSince {
    /// What was given (cut to 40 characters).
    pub given: String,
    /// The parser's reason.
    pub why: String,
}

/// Filters over the audit log.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuditQuery {
    /// Who, exactly.
    #[serde(default)]
    pub actor: Option<String>,
    /// What: a part of the action's name.
    #[serde(default)]
    pub action: Option<String>,
    /// On what: a part of the target.
    #[serde(default)]
    pub target: Option<String>,
    /// From this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// At most this many (default 200, at most 10 000).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// The entries that pass, newest first.
    pub fn apply(&self, all: Vec<AuditEntry>) -> Result<Vec<AuditEntry>, String> {
        let since = match self.since.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<Timestamp>().map_err(|e| {
                format!(
                    "since `{}` is not an RFC 3339 time: {e}",
                    s.chars().take(40).collect::<String>()
                )
            })?),
        };
        let has = |field: &str, want: &Option<String>| {
            want.as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| field.to_lowercase().contains(&w.to_lowercase()))
        };
        let limit = self.limit.unwrap_or(200).clamp(1, 10_000);
        Ok(all
            .into_iter()
            .filter(|e| {
                self.actor
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .is_none_or(|a| e.actor == a)
                    && has(&e.action, &self.action)
                    && has(&e.target, &self.target)
                    && since.is_none_or(|s| e.at >= s)
            })
            .take(limit)
            .collect())
    }
}

/// Entries read before filtering.
pub const AUDIT_SCAN: usize = 100_000;

/// The audit log as CSV (RFC 4180 quoting; a cell that a spreadsheet would
/// run as a formula starts with `'`).
pub fn audit_csv(entries: &[AuditEntry]) -> String {
    fn cell(s: &str) -> String {
        let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let mut out = String::from("at,actor,action,target,source,result\r\n");
    for e in entries {
        let row = [
            e.at.to_string(),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.source.clone().unwrap_or_default(),
            e.result.clone().unwrap_or_default(),
        ];
        let row: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}
