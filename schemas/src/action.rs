//! A remote action request as it travels to a box: canonical JSON signed
//! by the controller's key in its own SSHSIG namespace
//! ([`ACTION_NAMESPACE`]: a bundle signature never passes for an action),
//! bound to one site, with a nonce the box remembers and an expiry.
//! [`verify_action`] is everything a box checks before it runs one; each
//! refusal says why.
//!
//! The box answers with [`ActionUpdate`]s (`received` → `running` →
//! `done` / `failed`, or `refused` with the reason), posted to
//! `/v1/sites/{id}/actions/{action-id}`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::manifest::RemoteAction;
use crate::sign::{SignatureError, TrustedKeys};
use crate::{SigningKey, SiteId};

/// The SSHSIG namespace of action requests.
pub const ACTION_NAMESPACE: &str = "action@touchline";
/// The request format.
pub const ACTION_FORMAT: u32 = 1;
/// Largest request body a box reads.
pub const MAX_ACTION_BYTES: usize = 4096;
/// How far a request's issue time may be ahead of the box's clock (clocks
/// differ).
pub const MAX_CLOCK_AHEAD_SECS: i64 = 300;
/// Longest life of a request.
pub const MAX_LIFETIME_SECS: i64 = 7 * 86_400;

/// What an action is given (checked by the box against its own lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionArgs {
    /// `restart_service`, `get_logs`: the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `get_logs`: how many lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
    /// `get_logs`: from when (journalctl's `--since`, e.g. `-1h`,
    /// `2026-12-03 14:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Log lines sent when none are asked for.
pub const DEFAULT_LOG_LINES: u32 = 200;
/// Most log lines one action reads.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Largest output a box sends with a result (logs are cut to their last
/// bytes, other output too); the body goes gzip-compressed.
pub const MAX_ACTION_OUTPUT: usize = 256 * 1024;
/// Largest result a controller reads, once decompressed.
pub const MAX_UPDATE_BYTES: usize = MAX_ACTION_OUTPUT + 16 * 1024;
/// Default life of a request.
pub const DEFAULT_LIFETIME_SECS: i64 = 15 * 60;

/// Why an action's arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// `restart-service` or `logs` without a service.
    #[error("`{0}` needs a service name")]
    NoService(&'static str),
    /// Not a systemd unit name.
    #[error(
        "service `{0}` is not a unit name (letters, digits and `:_.@-`, at most 128, not starting with `-`)"
    )]
    BadService(String),
    /// Lines out of range.
    #[error("lines must be from 1 to {MAX_LOG_LINES}, not {0}")]
    Lines(u32),
    /// `since` in a form journalctl would not be given.
    #[error(
        "since `{0}` is not a time: write e.g. `-1h`, `today` or `2026-12-03 14:00` (letters, digits, space and `:+-.`, at most 40)"
    )]
    Since(String),
    /// An argument the action does not take.
    #[error("`{action}` takes no {arg}")]
    Unexpected {
        /// The action.
        action: &'static str,
        /// The argument.
        arg: &'static str,
    },
}

impl ActionArgs {
    /// Checks the arguments against the action (both the controller, before
    /// it signs, and the box, before it runs, call this).
    pub fn check(&self, action: RemoteAction) -> Result<(), ArgsError> {
        let name = action.command_name();
        let needs_service = matches!(action, RemoteAction::RestartService | RemoteAction::GetLogs);
        match (&self.service, needs_service) {
            (None, true) => return Err(ArgsError::NoService(name)),
            (Some(_), false) => {
                return Err(ArgsError::Unexpected {
                    action: name,
                    arg: "service",
                });
            }
            (Some(s), true) if !is_unit_name(s) => return Err(ArgsError::BadService(s.clone())),
            _ => {}
        }
        let logs = action == RemoteAction::GetLogs;
        if let Some(n) = self.lines {
            if !logs {
                return Err(ArgsError::Unexpected {
                    action: name,
                    arg: "lines",
                });
            }
            if n == 0 || n > MAX_LOG_LINES {
                return Err(ArgsError::Lines(n));
            }
        }
        if let Some(t) = &self.since {
            if !logs {
                return Err(ArgsError::Unexpected {
                    action: name,
                    arg: "since",
                });
            }
            let ok = !t.is_empty()
                && t.len() <= 40
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " :+-.".contains(c));
            if !ok {
                return Err(ArgsError::Since(t.clone()));
            }
        }
        Ok(())
    }
}

/// A systemd unit name as an operator may give one.
pub fn is_unit_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c))
}

/// Where an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Signed and waiting for the box.
    Queued,
    /// The box has it and checked it.
    Received,
    /// The box waits for the update lock (a match is on).
    Waiting,
    /// Running on the box.
    Running,
    /// Finished well.
    Done,
    /// Ran and failed.
    Failed,
    /// The box refused it (with the reason).
    Refused,
    /// Not delivered before its expiry.
    Expired,
}

impl ActionState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Queued => "queued",
            ActionState::Received => "received",
            ActionState::Waiting => "waiting",
            ActionState::Running => "running",
            ActionState::Done => "done",
            ActionState::Failed => "failed",
            ActionState::Refused => "refused",
            ActionState::Expired => "expired",
        }
    }

    /// No later state follows.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionState::Done | ActionState::Failed | ActionState::Refused | ActionState::Expired
        )
    }
}

/// What a box says about an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionUpdate {
    /// The new state (never `queued` or `expired`: those are the
    /// controller's).
    pub state: ActionState,
    /// When, on the box's (corrected) clock.
    pub at: Timestamp,
    /// One line: why refused, what it waits for, how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A command's exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Its output (at most [`MAX_ACTION_OUTPUT`] bytes; the last ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The output was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One request as delivered: its signed bytes (canonical JSON, as a string)
/// and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// [`ActionRequest::to_canonical_json`], as text.
    pub request: String,
    /// SSHSIG, armored.
    pub signature: String,
}

/// `GET /v1/sites/{id}/actions`: what waits for the box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbox {
    /// Oldest first.
    pub actions: Vec<Delivery>,
}

/// Most requests one inbox carries.
pub const MAX_INBOX: usize = 16;
/// Largest inbox a box reads.
pub const MAX_INBOX_BYTES: usize = MAX_INBOX * (MAX_ACTION_BYTES + 1024) + 64;
/// The header on a bundle answer that says requests wait (their count).
pub const PENDING_HEADER: &str = "touchline-actions";

/// A remote action request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// [`ACTION_FORMAT`].
    pub format: u32,
    /// The request's id (the controller's; results refer to it).
    pub id: String,
    /// The one site it is for.
    pub site: SiteId,
    /// What to do.
    pub action: RemoteAction,
    /// With what.
    #[serde(default)]
    pub args: ActionArgs,
    /// When the controller signed it.
    pub issued_at: Timestamp,
    /// After this the box refuses it.
    pub expires_at: Timestamp,
    /// Random, once: the box remembers it and refuses a replay.
    pub nonce: String,
    /// Run even while the update lock is held (an operator's choice,
    /// audited).
    #[serde(default)]
    pub force: bool,
}

/// Why a box refuses an action request.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Over [`MAX_ACTION_BYTES`].
    #[error("the action request is {0} bytes, over the {MAX_ACTION_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not signed by a trusted key in the action namespace.
    #[error("the action request is not signed by a trusted key: {0}")]
    Signature(#[from] SignatureError),
    /// Not a request.
    #[error("the action request does not read: {0}")]
    Malformed(String),
    /// Another format.
    #[error("action request format {0}; this agent reads {ACTION_FORMAT}")]
    Format(u32),
    /// For another site.
    #[error("the action is for site `{0}`, not this box's")]
    OtherSite(String),
    /// Expired.
    #[error("the action expired at {0}")]
    Expired(Timestamp),
    /// Issued in the future (beyond clock skew), or lives too long.
    #[error("the action's times do not hold: issued {issued}, expires {expires}")]
    Times {
        /// Issue time.
        issued: Timestamp,
        /// Expiry.
        expires: Timestamp,
    },
    /// Its nonce was seen.
    #[error("the action was delivered before (nonce {0}): a replay is not run again")]
    Replay(String),
    /// Not in the box's allow-list.
    #[error("`{0}` is not allowed on this box (agent.allowed_actions in the manifests)")]
    NotAllowed(String),
    /// Bad arguments.
    #[error(transparent)]
    Args(#[from] ArgsError),
}

impl ActionRequest {
    /// The canonical bytes that are signed.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and timestamps: cannot fail.
        crate::canonical::to_canonical_vec(self).unwrap_or_default()
    }

    /// The bytes and their signature.
    pub fn sign(&self, key: &SigningKey) -> Result<(Vec<u8>, String), SignatureError> {
        let body = self.to_canonical_json();
        let sig = key.sign_in(ACTION_NAMESPACE, &body)?;
        Ok((body, sig))
    }
}

/// What a box checks before it runs a request: size, signature (action
/// namespace), format, site, times, nonce (`seen` says whether the box
/// remembers it), allow-list. The request, or why not.
pub fn verify_action(
    body: &[u8],
    signature: &[u8],
    trusted: &TrustedKeys,
    site: &SiteId,
    allowed: &[RemoteAction],
    now: Timestamp,
    seen: impl Fn(&str) -> bool,
) -> Result<ActionRequest, ActionError> {
    if body.len() > MAX_ACTION_BYTES {
        return Err(ActionError::TooLarge(body.len()));
    }
    trusted.verify_in(ACTION_NAMESPACE, body, signature)?;
    let req: ActionRequest =
        serde_json::from_slice(body).map_err(|e| ActionError::Malformed(e.to_string()))?;
    if req.format != ACTION_FORMAT {
        return Err(ActionError::Format(req.format));
    }
    if &req.site != site {
        return Err(ActionError::OtherSite(req.site.to_string()));
    }
    if req.expires_at <= now {
        return Err(ActionError::Expired(req.expires_at));
    }
    let (issued, expires) = (req.issued_at.as_second(), req.expires_at.as_second());
    if issued > now.as_second() + MAX_CLOCK_AHEAD_SECS
        || expires <= issued
        || expires - issued > MAX_LIFETIME_SECS
    {
        return Err(ActionError::Times {
            issued: req.issued_at,
            expires: req.expires_at,
        });
    }
    if seen(&req.nonce) {
        return Err(ActionError::Replay(req.nonce));
    }
    if !allowed.contains(&req.action) {
        return Err(ActionError::NotAllowed(req.action.as_str().to_owned()));
    }
    req.args.check(req.action)?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_795_000_000 + s).unwrap()
    }

    fn request() -> ActionRequest {
        ActionRequest {
            format: ACTION_FORMAT,
            id: "a1".into(),
            site: SiteId::new("cesson-handball").unwrap(),
            action: RemoteAction::RestartService,
            args: ActionArgs {
                service: Some("neopro-app".into()),
                ..ActionArgs::default()
            },
            issued_at: t(0),
            expires_at: t(900),
            nonce: "0f3c9a".into(),
            force: false,
        }
    }

    #[test]
    fn a_box_runs_only_a_signed_fresh_allowed_action_for_itself_once() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::parse(&key.public_key_openssh()).unwrap();
        let site = SiteId::new("cesson-handball").unwrap();
        let allowed = [RemoteAction::RestartService, RemoteAction::SystemInfo];
        let check = |body: &[u8], sig: &str, now: Timestamp, seen: bool| {
            verify_action(body, sig.as_bytes(), &trusted, &site, &allowed, now, |_| {
                seen
            })
        };
        let (body, sig) = request().sign(&key).unwrap();
        assert_eq!(check(&body, &sig, t(10), false).unwrap(), request());

        let refused = |r: ActionRequest, now: Timestamp, seen: bool| {
            let (b, s) = r.sign(&key).unwrap();
            check(&b, &s, now, seen).unwrap_err().to_string()
        };
        let mut other = request();
        other.site = SiteId::new("vannes-rugby").unwrap();
        assert!(refused(other, t(10), false).contains("for site `vannes-rugby`"));
        assert!(refused(request(), t(900), false).contains("expired at"));
        assert!(refused(request(), t(10), true).contains("a replay is not run again"));
        let mut reboot = request();
        reboot.action = RemoteAction::Reboot;
        assert!(refused(reboot, t(10), false).contains("`reboot` is not allowed on this box"));
        let mut ahead = request();
        ahead.issued_at = t(3600);
        ahead.expires_at = t(4000);
        assert!(refused(ahead, t(10), false).contains("times do not hold"));
        let mut long = request();
        long.expires_at = t(30 * 86_400);
        assert!(refused(long, t(10), false).contains("times do not hold"));

        // A bundle signature by the same key is not an action signature.
        let bundle_sig = key.sign(&body).unwrap();
        let e = check(&body, &bundle_sig, t(10), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not signed by a trusted key"), "{e}");
        // Another key, a changed byte.
        let other_key = SigningKey::generate();
        let (_, foreign) = request().sign(&other_key).unwrap();
        assert!(check(&body, &foreign, t(10), false).is_err());
        let mut tampered = body.clone();
        let i = tampered.iter().position(|&b| b == b'a').unwrap();
        tampered[i] = b'b';
        assert!(check(&tampered, &sig, t(10), false).is_err());
        // Arguments are checked after the signature.
        let mut bad = request();
        bad.args.service = Some("-evil".into());
        assert!(refused(bad, t(10), false).contains("is not a unit name"));
        // Too large, before anything is parsed.
        let big = vec![b' '; MAX_ACTION_BYTES + 1];
        assert!(
            check(&big, &sig, t(10), false)
                .unwrap_err()
                .to_string()
                .contains("over the")
        );
    }

    #[test]
    fn arguments_fit_their_action() {
        let a = |service: Option<&str>, lines: Option<u32>, since: Option<&str>| ActionArgs {
            service: service.map(str::to_owned),
            lines,
            since: since.map(str::to_owned),
        };
        let logs = RemoteAction::GetLogs;
        assert!(
            a(Some("neopro-app"), Some(500), Some("-1h"))
                .check(logs)
                .is_ok()
        );
        assert!(
            a(Some("neopro-app"), None, Some("2026-12-03 14:00"))
                .check(logs)
                .is_ok()
        );
        let e = |args: ActionArgs, action| args.check(action).unwrap_err().to_string();
        assert_eq!(e(a(None, None, None), logs), "`logs` needs a service name");
        assert!(e(a(Some("a b"), None, None), logs).contains("not a unit name"));
        assert!(e(a(Some("app"), Some(0), None), logs).contains("from 1 to 10000"));
        assert!(e(a(Some("app"), Some(10_001), None), logs).contains("not 10001"));
        assert!(e(a(Some("app"), None, Some("$(reboot)")), logs).contains("is not a time"));
        assert!(
            e(a(Some("app"), None, None), RemoteAction::Reboot)
                .contains("`reboot` takes no service")
        );
        assert!(e(a(None, Some(3), None), RemoteAction::SystemInfo).contains("takes no lines"));
        assert!(a(None, None, None).check(RemoteAction::ReportNow).is_ok());
        assert_eq!(
            RemoteAction::parse("restart-service"),
            Some(RemoteAction::RestartService)
        );
        assert_eq!(RemoteAction::parse("get_logs"), Some(RemoteAction::GetLogs));
        assert_eq!(RemoteAction::parse("logs"), Some(RemoteAction::GetLogs));
        assert_eq!(
            RemoteAction::parse("report-now"),
            Some(RemoteAction::ReportNow)
        );
        assert_eq!(RemoteAction::parse("shutdown"), None);
    }
}
