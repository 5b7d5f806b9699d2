//! A remote action request as it travels to a box: canonical JSON signed
//! by the controller's key in its own SSHSIG namespace
//! ([`ACTION_NAMESPACE`]: a bundle signature never passes for an action),
//! bound to one site, with a nonce the box remembers and an expiry.
//! [`verify_action`] is everything a box checks before it runs one; each
//! refusal says why.
//!
//! This is the contract only: the controller's queue, the delivery on the
//! long-poll and the box's runner build on it.

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
}

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
        let name = serde_json::to_value(req.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(ActionError::NotAllowed(name));
    }
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
                lines: None,
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
        // Too large, before anything is parsed.
        let big = vec![b' '; MAX_ACTION_BYTES + 1];
        assert!(
            check(&big, &sig, t(10), false)
                .unwrap_err()
                .to_string()
                .contains("over the")
        );
    }
}
