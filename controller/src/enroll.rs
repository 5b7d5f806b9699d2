//! One-time enrollment: [`mint`] makes a code for a site (filed under the
//! sha256 of its lookup id, with its seal key wrapped by a key derived from
//! the lookup id: the store holds nothing that redeems a code), [`redeem`] turns a box's lookup id into a
//! sealed answer with a fresh site token, once. The protocol is
//! `touchline_schemas::enroll`.

use std::time::Duration;

use jiff::Timestamp;
use touchline_schemas::SiteId;
use touchline_schemas::enroll::{EnrollAnswer, EnrollCode, EnrollRequest, SealKey, Sealed};

use crate::fleet::Fleet;
use crate::store::{AuditEntry, Enrollment, Store, StoreError};
use crate::tokens::Token;

/// Codes are forgotten this long after they expired (until then a box
/// that tries one hears "expired" or "used", not "unknown").
const FORGET_AFTER_SECS: i64 = 7 * 86_400;
/// Longest host name kept from a box.
const MAX_HOSTNAME: usize = 64;

/// A code just minted (shown once).
#[derive(Debug)]
pub struct Minted {
    /// The code.
    pub code: EnrollCode,
    /// Its site.
    pub site: SiteId,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl Minted {
    /// The commands that enroll a box with this code, for people.
    pub fn instructions(&self, url: &str) -> String {
        let url = url.trim_end_matches('/');
        let code = self.code.reveal();
        format!(
            "enrollment code for site {site}: {code}\nsingle use, valid until {until}\n\non the box (installs the agent and enrolls):\n  curl -fsSL {url}/install.sh | sudo sh -s -- {code}\nor, with the touchline-agent package already installed:\n  sudo touchline-agent enroll --controller {url} {code} --start\n",
            site = self.site,
            until = self
                .expires_at
                .round(jiff::Unit::Second)
                .unwrap_or(self.expires_at),
        )
    }
}

/// Why a code could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The ttl is 0 or too long.
    #[error("a code lives between 1s and 30d; {0}s was asked")]
    Ttl(u64),
    /// The OS gave no randomness.
    #[error("no randomness for a code: {0}")]
    Random(#[from] getrandom::Error),
    /// The seal key could not be wrapped.
    #[error("cannot wrap the code's key: {0}")]
    Seal(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Mints a code for `site`, valid `ttl` from `now`, and forgets codes
/// long expired.
pub fn mint(
    store: &dyn Store,
    site: &SiteId,
    ttl: Duration,
    actor: &str,
    now: Timestamp,
) -> Result<Minted, MintError> {
    let secs = ttl.as_secs();
    if secs == 0 || secs > crate::config::Enrollment::MAX_TTL_SECS {
        return Err(MintError::Ttl(secs));
    }
    let code = EnrollCode::generate()?;
    // `secs` ≤ 30 days: the sum stays far inside jiff's range.
    let expires_at = now
        .checked_add(jiff::SignedDuration::from_secs(secs.cast_signed()))
        .unwrap_or(now);
    let forget: Vec<String> = store
        .enrollments()?
        .into_iter()
        .filter(|(_, e)| e.expires_at.as_second() + FORGET_AFTER_SECS < now.as_second())
        .map(|(k, _)| k)
        .collect();
    let lookup = code.lookup();
    let seal_key = code
        .seal_key()
        .wrap(&lookup)
        .map_err(|e| MintError::Seal(e.to_string()))?;
    let record = Enrollment {
        site: site.clone(),
        seal_key,
        minted_at: now,
        minted_by: actor.to_owned(),
        expires_at,
        used_at: None,
        used_by: None,
    };
    store.put_enrollment(&lookup.storage_key(), &record, &forget)?;
    store.audit(&AuditEntry {
        at: now,
        actor: actor.to_owned(),
        action: "mint enrollment code".into(),
        target: site.to_string(),
        ..AuditEntry::default()
    })?;
    Ok(Minted {
        code,
        site: site.clone(),
        expires_at,
    })
}

/// Why a code was refused (told to the box as is).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No such code.
    #[error(
        "unknown enrollment code: check it was typed right, and that this is the controller that minted it"
    )]
    Unknown,
    /// Already used.
    #[error(
        "this enrollment code was already used (at {at}{by}): a code works once; mint a new one with `touchline site enroll {site}`"
    )]
    Used {
        /// When.
        at: Timestamp,
        /// `, by <host>`.
        by: String,
        /// Its site.
        site: SiteId,
    },
    /// Expired.
    #[error(
        "this enrollment code expired at {at}: mint a new one with `touchline site enroll {site}`"
    )]
    Expired {
        /// When.
        at: Timestamp,
        /// Its site.
        site: SiteId,
    },
}

/// Why a redemption failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The code does not enroll (anything).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored record is damaged, or no randomness.
    #[error("{0}")]
    Internal(String),
}

/// Redeems a box's request: marks the code used and gives its site a new
/// token in one durable write, and answers with the token, the trusted
/// key and the agent settings, sealed with the code's key. Call from a
/// blocking thread.
pub fn redeem(fleet: &Fleet, req: &EnrollRequest, now: Timestamp) -> Result<Sealed, RedeemError> {
    let _one_at_a_time = fleet.enrollment_lock();
    let stored_under = req.lookup.storage_key();
    let lookup = stored_under.as_str();
    let mut e = fleet.store.enrollment(lookup)?.ok_or(Refused::Unknown)?;
    if let Some(at) = e.used_at {
        return Err(Refused::Used {
            at,
            by: e
                .used_by
                .as_deref()
                .map(|h| format!(", by {h}"))
                .unwrap_or_default(),
            site: e.site,
        }
        .into());
    }
    if e.expires_at <= now {
        return Err(Refused::Expired {
            at: e.expires_at,
            site: e.site,
        }
        .into());
    }
    let key = SealKey::unwrap(&req.lookup, &e.seal_key).map_err(|err| {
        RedeemError::Internal(format!(
            "enrollment {lookup}: the stored key does not unwrap ({err})"
        ))
    })?;
    let token = Token::generate().map_err(|e| RedeemError::Internal(e.to_string()))?;
    let answer = EnrollAnswer {
        site_id: e.site.clone(),
        token: token.reveal().to_owned(),
        trusted_keys: format!("{}\n", fleet.public_key_openssh()),
        controller_url: fleet.config.enrollment.public_url.clone(),
        agent: fleet.config.enrollment.agent_settings(),
    };
    let plain = serde_json::to_vec(&answer).map_err(|e| RedeemError::Internal(e.to_string()))?;
    // Sealed before anything is written: a failure here leaves the code
    // usable.
    let sealed = key
        .seal(&req.lookup, &plain)
        .map_err(|e| RedeemError::Internal(e.to_string()))?;
    e.used_at = Some(now);
    e.used_by = req.hostname.as_deref().map(clean_hostname);
    fleet.redeem_enrollment(lookup, &e, token.hash())?;
    // The code is spent and the token stored: a failed audit write must
    // not lose the answer (the box could not come back for it).
    if let Err(err) = fleet.store.audit(&AuditEntry {
        at: now,
        actor: format!("enrollment ({})", e.used_by.as_deref().unwrap_or("a box")),
        action: "enroll box (new site token)".into(),
        target: e.site.to_string(),
        ..AuditEntry::default()
    }) {
        tracing::error!(site = %e.site, error = %err, "a box enrolled but the audit log could not be written");
    }
    tracing::info!(site = %e.site, host = e.used_by.as_deref().unwrap_or(""), "a box enrolled");
    Ok(sealed)
}

/// A host name as a box gave it, cut and without control characters.
fn clean_hostname(h: &str) -> String {
    h.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(MAX_HOSTNAME)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_cut_and_cleaned() {
        assert_eq!(clean_hostname("neopro-cesson"), "neopro-cesson");
        assert_eq!(clean_hostname("a\u{1b}[31mb\nc"), "a31mbc");
        assert_eq!(clean_hostname(&"x".repeat(500)).len(), MAX_HOSTNAME);
    }
}
