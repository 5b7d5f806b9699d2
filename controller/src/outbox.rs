//! Notifications waiting for delivery: where each goes ([`Target`]), its
//! attempts ([`Outgoing`]) and its id in the store ([`OutboxId`], which
//! sorts by the time it was queued).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// POST `body` to `url`.
    Webhook {
        /// The webhook URL.
        url: String,
        /// The JSON body.
        body: Value,
    },
    /// A commit status on the configured git host (`[commit_status]`).
    #[serde(rename = "commit_status")]
    CommitStatus {
        /// The commit.
        commit: String,
        /// Its state.
        state: StatusState,
        /// One line (at most 140 characters).
        description: String,
    },
    /// An email to the configured recipients.
    Email {
        /// Subject line.
        subject: String,
        /// Plain-text part.
        text: String,
        /// HTML part.
        html: String,
    },
}

/// A commit status's state, in GitHub's words (GitLab's are mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    /// Boxes are still on their way.
    Pending,
    /// Every reachable box runs it.
    Success,
    /// Refused, or its rollout halted.
    Failure,
    /// A newer commit took its place before it was final (GitHub:
    /// `error`, Gitea: `warning`, GitLab: `canceled`).
    Superseded,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Where it goes.
    pub target: Target,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before.
    pub next_at: Timestamp,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An outbox item's id: the time it was queued (nanoseconds, zero-padded),
/// a tag (`<site>-<rule>`, `digest`) and its index among the targets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxId(String);

impl OutboxId {
    /// The id of the `i`-th target of a notification queued at `at`.
    pub fn new(at: Timestamp, tag: &str, i: usize) -> Self {
        Self(format!("{:020}-{tag}-{i}", at.as_nanosecond()))
    }

    /// As stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// From its stored form.
    pub(crate) fn from_stored(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Display for OutboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
