//! The controller's durable state behind a [`Store`] trait: site tokens,
//! published bundles, commit records, each site's latest report, metrics
//! history, events, the operator audit log, and the alert engine's
//! bookkeeping (alert states, the notification outbox, the digest's day).
//!
//! The backend is the `redb_store` module. Every write method returns only once
//! the change is durable, so an HTTP 2xx means the data survives `kill -9`.
//! The small named values the backends keep are reached through typed
//! methods ([`Store::last_good_commit`], [`Store::alert_states`],
//! [`Store::outbox`], [`Store::write_bookkeeping`]…): their keys are known
//! here and nowhere else. A record that does not decode is a logged
//! [`StoreError::Corrupt`] naming its key, never "no data". Pure helpers
//! shared by backends (`fold_reports`, the key encodings) live here too.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use touchline_schemas::SiteId;
use touchline_schemas::report::{Metrics, Phase, Report};

use crate::alerts::{AlertState, Rule};
use crate::outbox::{OutboxId, Outgoing};
use crate::point::HistoryPoint;
use crate::tokens::TokenHash;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Data on disk does not decode.
    #[error("status store holds a record that does not decode (key `{0}`)")]
    Corrupt(String),
    /// The file could not be read or written (the disk is full, an I/O
    /// error): the store retries by itself ([`Store::write_failure`]).
    #[error("the status store cannot read or write its file: {0}")]
    Io(String),
    /// redb failed.
    #[error("status store failed")]
    Redb(#[source] Box<redb::Error>),
    /// The database is locked by a running controller.
    #[error("the status store `{0}` is in use by a running controller")]
    Locked(String),
    /// The store file exists but cannot be used (empty, or corrupt): the
    /// controller refuses to start rather than serve an empty fleet.
    #[error(
        "the status store `{path}` {why}: restore it from a backup (stop the controller, copy the backup over it), or move it away to start with an empty store (every box then needs a new token: `touchline site token`)"
    )]
    Unusable {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A bundle as served: exact bytes, signature, ETag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The site.
    pub site: SiteId,
    /// Bundle serial.
    pub serial: u64,
    /// Source commit.
    pub commit: Option<String>,
    /// `"<sha256 of body>"`.
    pub etag: String,
    /// Canonical bundle bytes (stored as text: a JSON array of numbers,
    /// as records before 0.13 hold it, is 3.6 times the size).
    #[serde(with = "body_text")]
    pub body: Vec<u8>,
    /// Armored SSHSIG.
    pub signature: String,
    /// Signing time.
    pub issued_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Digest of the desired state without serial, commit and times
    /// (`bundles::desired_digest`).
    #[serde(default)]
    pub desired: Option<String>,
}

/// A bundle body in a stored record: the canonical JSON as a string (a
/// body that is not UTF-8, which a rendered bundle never is, as numbers);
/// either form is read back.
mod body_text {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(body),
        }
    }

    struct Body;

    impl<'de> Visitor<'de> for Body {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bundle bytes, as a string or an array of bytes")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_string<E: Error>(self, v: String) -> Result<Vec<u8>, E> {
            Ok(v.into_bytes())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(Body)
    }
}

/// What happened to a commit the controller saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    /// Validated, rendered and published.
    Accepted,
    /// Refused: boxes stay on the last good commit.
    Refused,
}

/// A commit record (`/api/commits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Commit id.
    pub id: String,
    /// First-parent count (the serial its bundles carry).
    pub serial: u64,
    /// First line of the commit message.
    pub summary: String,
    /// Accepted or refused.
    pub state: CommitState,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Validation diagnostics (`path:line:col: …`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// When the controller processed it.
    pub processed_at: Timestamp,
    /// Sites whose bundle changed with it.
    #[serde(default)]
    pub sites_changed: Vec<SiteId>,
}

/// The latest report of a site, with bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    /// The site.
    pub site: SiteId,
    /// Highest report sequence stored (in `epoch`).
    pub last_seq: u64,
    /// The box's report epoch those sequences belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// When the controller received it.
    pub received_at: Timestamp,
    /// The report.
    pub report: Report,
    /// The latest metrics (reports without metrics keep the previous ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// When those metrics were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_at: Option<Timestamp>,
}

/// What the site's health and the metrics need of its latest state, kept
/// in memory so that a `/metrics` scrape reads no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulse {
    /// When the controller received the latest report.
    pub received_at: Timestamp,
    /// A degraded or stale phase, or an error condition.
    pub troubled: bool,
    /// A stale phase (its accepted bundle expired).
    pub stale: bool,
    /// The release the box runs.
    pub release: Option<String>,
}

impl SiteState {
    /// Its [`Pulse`].
    pub fn pulse(&self) -> Pulse {
        Pulse::of(&self.report, self.received_at)
    }
}

impl Pulse {
    /// The pulse of a site whose latest report is `report`.
    pub fn of(report: &Report, received_at: Timestamp) -> Self {
        let st = &report.status;
        Self {
            received_at,
            stale: st.phase == Phase::Stale,
            troubled: matches!(st.phase, Phase::Degraded | Phase::Stale)
                || st
                    .conditions
                    .iter()
                    .any(|c| c.severity == touchline_schemas::report::Severity::Error),
            release: st.release.as_ref().map(ToString::to_string),
        }
    }
}

/// What kind of thing happened on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The agent's phase changed.
    Phase,
    /// A new serial was applied.
    Applied,
    /// Another release runs.
    Release,
    /// A release was rolled back.
    RolledBack,
    /// The box reported a new error.
    Error,
    /// An alert fired or resolved.
    Alert,
    /// The box's state was wiped: its report sequence restarted.
    Reset,
}

impl EventKind {
    /// As stored and shown (`phase`, `rolled-back`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phase => "phase",
            Self::Applied => "applied",
            Self::Release => "release",
            Self::RolledBack => "rolled-back",
            Self::Error => "error",
            Self::Alert => "alert",
            Self::Reset => "reset",
        }
    }
}

/// Something that happened on a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: Timestamp,
    /// What kind of thing.
    pub kind: EventKind,
    /// Plain words, in English.
    pub message: String,
    /// The same in French, when the controller wrote it (a box's own
    /// error text is the box's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fr: Option<String>,
}

impl Event {
    /// Its words in `lang`.
    pub fn text(&self, lang: crate::i18n::Lang) -> &str {
        match (lang, &self.fr) {
            (crate::i18n::Lang::Fr, Some(fr)) => fr,
            _ => &self.message,
        }
    }
}

/// The result of storing a batch of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestOutcome {
    /// Reports stored.
    pub accepted: usize,
    /// Reports already stored before (a retried batch).
    pub duplicates: usize,
    /// Highest sequence stored for the site.
    pub last_seq: u64,
}

/// An operator action, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: Timestamp,
    /// Who (operator name, or `local-admin`, `webhook`, `box:<site>`).
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where (the client's address), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How it ended (`ok`, `refused: …`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// The named value of the last published commit.
pub(crate) const LAST_GOOD: &str = "last_good";
/// The named value of the last commit looked at.
pub(crate) const LAST_SEEN: &str = "last_seen";
const ALERT_PREFIX: &str = "alert/";
const OUTBOX_PREFIX: &str = "outbox/";
const DIGEST_DAY: &str = "digest/last";
/// The current rollout, and the one before it (JSON records of the
/// `rollout` module, kept as text so that the store does not depend on it).
const ROLLOUT_CURRENT: &str = "rollout/current";
const ROLLOUT_PREVIOUS: &str = "rollout/previous";
const ENROLL_PREFIX: &str = "enroll/";
/// Remote actions: `action/<site>/<id>` (ids sort by time).
pub(crate) const ACTION_PREFIX: &str = "action/";

/// A one-time enrollment code, as stored: under the sha256 of its lookup
/// id (`LookupId::storage_key`), never the code itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The site the code enrolls a box into.
    pub site: SiteId,
    /// The key the answer is sealed with (derived from the code), wrapped
    /// with a key derived from the lookup id (`SealKey::wrap`; hex).
    pub seal_key: String,
    /// When it was minted.
    pub minted_at: Timestamp,
    /// Who minted it.
    pub minted_by: String,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When a box used it (a code works once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<Timestamp>,
    /// The host name the box gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
}

/// One atomic write of the alert engine's bookkeeping.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    /// Alert states that changed (`None`: gone).
    pub alerts: Vec<(SiteId, Rule, Option<AlertState>)>,
    /// Outbox items to add or replace (`Some`) or remove (`None`).
    pub outbox: Vec<(OutboxId, Option<Outgoing>)>,
    /// The day a digest was queued.
    pub digest_day: Option<String>,
    /// Site events (an alert fired or resolved).
    pub events: Vec<(SiteId, Event)>,
}

/// The controller's durable state. The named values (`meta*`) are the
/// backends' business: everything else reads and writes them through the
/// typed methods at the end of the trait.
pub trait Store: Send + Sync + 'static {
    /// Why writes fail right now (the disk is full…), or `None` when the
    /// last write landed.
    fn write_failure(&self) -> Option<String> {
        None
    }
    /// Every site's token hash.
    fn site_tokens(&self) -> Result<Vec<(SiteId, TokenHash)>, StoreError>;
    /// Sets (replaces) a site's token hash.
    fn set_site_token(&self, site: &SiteId, hash: &TokenHash) -> Result<(), StoreError> {
        self.set_site_token_with_meta(site, hash, Vec::new())
    }
    /// Sets a site's token hash and sets (`Some`) or removes (`None`)
    /// named values in the same atomic, durable write.
    fn set_site_token_with_meta(
        &self,
        site: &SiteId,
        hash: &TokenHash,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<(), StoreError>;
    /// Stores reports not stored yet (by sequence within the box's report
    /// `epoch`: a new epoch restarts the sequence); durable on return.
    fn ingest(
        &self,
        site: &SiteId,
        epoch: Option<&str>,
        reports: &[Report],
        received_at: Timestamp,
    ) -> Result<IngestOutcome, StoreError>;
    /// The latest state of every site that reported.
    fn latest_all(&self) -> Result<Vec<SiteState>, StoreError>;
    /// The latest state of one site.
    fn latest(&self, site: &SiteId) -> Result<Option<SiteState>, StoreError>;
    /// Metrics history of a site in `[from, to)`, oldest first.
    fn history(
        &self,
        site: &SiteId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<HistoryPoint>, StoreError>;
    /// Drops metrics older than `before` (retention).
    fn prune_history(&self, before: Timestamp) -> Result<usize, StoreError>;
    /// Merges the points older than `before` into one point per `bucket`
    /// ([`HistoryPoint::merge`]); returns how many points were merged away.
    /// Idempotent, and safe to interrupt: each site's bucket is replaced in
    /// one atomic batch.
    fn downsample_history(
        &self,
        before: Timestamp,
        bucket: jiff::SignedDuration,
    ) -> Result<usize, StoreError>;
    /// The most recent events of a site, newest first.
    fn events(&self, site: &SiteId, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// Publishes bundles and records the commit that produced them, in one
    /// transaction; durable on return.
    fn publish(
        &self,
        bundles: &[Published],
        commit: Option<&CommitRecord>,
    ) -> Result<(), StoreError>;
    /// Every published bundle.
    fn published(&self) -> Result<Vec<Published>, StoreError>;
    /// Records a commit (refused ones, typically).
    fn record_commit(&self, commit: &CommitRecord) -> Result<(), StoreError>;
    /// The most recent commit records, newest first.
    fn commits(&self, limit: usize) -> Result<Vec<CommitRecord>, StoreError>;
    /// A small named value (`last_good`, `last_seen`).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a small named value; durable on return.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Named values whose key starts with `prefix`, in key order (alert
    /// states, the notification outbox).
    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Sets (`Some`) and removes (`None`) named values in one atomic,
    /// durable write.
    fn meta_write(&self, changes: Vec<(String, Option<String>)>) -> Result<(), StoreError> {
        self.meta_write_with_events(changes, Vec::new())
    }
    /// [`Store::meta_write`] and site events (an alert that fired or
    /// resolved) in the same atomic, durable write.
    fn meta_write_with_events(
        &self,
        changes: Vec<(String, Option<String>)>,
        events: Vec<(SiteId, Event)>,
    ) -> Result<(), StoreError>;
    /// Appends to the audit log; durable on return.
    fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Writes a consistent copy of everything to a new store file at
    /// `path` (one read transaction), while writers go on; returns the
    /// rows copied.
    fn snapshot_to(&self, path: &std::path::Path) -> Result<u64, StoreError>;

    // Typed bookkeeping over the named values: the only place that knows
    // their keys.

    /// The last commit whose bundles were published.
    fn last_good_commit(&self) -> Result<Option<String>, StoreError> {
        self.meta(LAST_GOOD)
    }

    /// The last commit the controller looked at (published or refused).
    fn last_seen_commit(&self) -> Result<Option<String>, StoreError> {
        self.meta(LAST_SEEN)
    }

    /// Every (site, rule) alert state. A state that does not decode is an
    /// error (logged), not a missing alert.
    fn alert_states(&self) -> Result<BTreeMap<(SiteId, Rule), AlertState>, StoreError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.meta_scan(ALERT_PREFIX)? {
            let mut parts = k[ALERT_PREFIX.len()..].splitn(2, '/');
            let (Some(site), Some(rule)) = (parts.next(), parts.next()) else {
                return Err(corrupt(&k, &"not alert/<site>/<rule>"));
            };
            let site = SiteId::new(site).map_err(|e| corrupt(&k, &e))?;
            let rule = serde_json::from_value::<Rule>(serde_json::Value::String(rule.to_owned()))
                .map_err(|e| corrupt(&k, &e))?;
            let state = serde_json::from_str::<AlertState>(&v).map_err(|e| corrupt(&k, &e))?;
            out.insert((site, rule), state);
        }
        Ok(out)
    }

    /// How many notifications wait.
    fn outbox_len(&self) -> Result<usize, StoreError> {
        Ok(self.meta_scan(OUTBOX_PREFIX)?.len())
    }

    /// The notifications waiting, oldest first, each decoded on its own:
    /// an item that does not decode is an error (logged) that the caller
    /// reports, and does not hide the others.
    #[allow(clippy::type_complexity)]
    fn outbox(&self) -> Result<Vec<(OutboxId, Result<Outgoing, StoreError>)>, StoreError> {
        Ok(self
            .meta_scan(OUTBOX_PREFIX)?
            .into_iter()
            .map(|(k, v)| {
                let item = serde_json::from_str(&v).map_err(|e| corrupt(&k, &e));
                (OutboxId::from_stored(&k[OUTBOX_PREFIX.len()..]), item)
            })
            .collect())
    }

    /// The enrollment code filed under `lookup` (a storage key).
    fn enrollment(&self, lookup: &str) -> Result<Option<Enrollment>, StoreError> {
        let key = format!("{ENROLL_PREFIX}{lookup}");
        self.meta(&key)?
            .map(|v| serde_json::from_str(&v).map_err(|e| corrupt(&key, &e)))
            .transpose()
    }

    /// Every stored enrollment code (pending, used or expired), by lookup id.
    fn enrollments(&self) -> Result<Vec<(String, Enrollment)>, StoreError> {
        self.meta_scan(ENROLL_PREFIX)?
            .into_iter()
            .map(|(k, v)| {
                let e = serde_json::from_str(&v).map_err(|e| corrupt(&k, &e))?;
                Ok((k[ENROLL_PREFIX.len()..].to_owned(), e))
            })
            .collect()
    }

    /// Stores a new code and forgets the codes in `forget`, in one write.
    fn put_enrollment(
        &self,
        lookup: &str,
        e: &Enrollment,
        forget: &[String],
    ) -> Result<(), StoreError> {
        let value = serde_json::to_string(e).map_err(|e| corrupt("enrollment", &e))?;
        let mut changes = vec![(format!("{ENROLL_PREFIX}{lookup}"), Some(value))];
        changes.extend(forget.iter().map(|k| (format!("{ENROLL_PREFIX}{k}"), None)));
        self.meta_write(changes)
    }

    /// Marks a code used (`e` as it now is) and sets its site's new token
    /// hash, in one atomic, durable write: a crash leaves either both or
    /// neither.
    fn redeem_enrollment(
        &self,
        lookup: &str,
        e: &Enrollment,
        hash: &TokenHash,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_string(e).map_err(|e| corrupt("enrollment", &e))?;
        self.set_site_token_with_meta(
            &e.site,
            hash,
            vec![(format!("{ENROLL_PREFIX}{lookup}"), Some(value))],
        )
    }

    /// The current and the previous rollout records (JSON), and the keys
    /// they are under (to name them when they do not decode).
    fn rollout_records(&self) -> Result<[(&'static str, Option<String>); 2], StoreError> {
        Ok([
            (ROLLOUT_CURRENT, self.meta(ROLLOUT_CURRENT)?),
            (ROLLOUT_PREVIOUS, self.meta(ROLLOUT_PREVIOUS)?),
        ])
    }

    /// Replaces the current rollout record and, when given, the previous
    /// one, in one durable write.
    fn write_rollout(&self, current: &str, previous: Option<&str>) -> Result<(), StoreError> {
        let mut changes = vec![(ROLLOUT_CURRENT.to_owned(), Some(current.to_owned()))];
        if let Some(p) = previous {
            changes.push((ROLLOUT_PREVIOUS.to_owned(), Some(p.to_owned())));
        }
        self.meta_write(changes)
    }

    /// The day (`YYYY-MM-DD`, fleet time) the last daily digest was queued.
    fn digest_day(&self) -> Result<Option<String>, StoreError> {
        self.meta(DIGEST_DAY)
    }

    /// Writes alert states, outbox changes (`None` removes an item), the
    /// digest's day and site events in one atomic, durable write.
    fn write_bookkeeping(&self, b: Bookkeeping) -> Result<(), StoreError> {
        let mut changes: Vec<(String, Option<String>)> = Vec::new();
        for (site, rule, state) in &b.alerts {
            let value = state
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| corrupt("alert state", &e))?;
            changes.push((format!("{ALERT_PREFIX}{site}/{}", rule.name()), value));
        }
        for (id, item) in &b.outbox {
            let value = item
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| corrupt("outbox item", &e))?;
            changes.push((format!("{OUTBOX_PREFIX}{id}"), value));
        }
        if let Some(day) = b.digest_day {
            changes.push((DIGEST_DAY.to_owned(), Some(day)));
        }
        self.meta_write_with_events(changes, b.events)
    }
    /// The most recent audit entries, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The key of an event the controller itself records (an alert): report
/// events use `seq × 8 + i` as their last part, these the top half of the
/// range, so the two never collide.
pub(crate) fn controller_event_key(site: &SiteId, at: Timestamp, i: usize) -> Vec<u8> {
    site_key(site, ts_key(at), (1 << 63) | i as u64)
}

pub(crate) fn site_key(site: &SiteId, n: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.as_str().len() + 17);
    k.extend_from_slice(site.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn ts_key(t: Timestamp) -> u64 {
    // Offset so that times before 1970 still sort (they should not happen).
    (t.as_nanosecond() / 1000).saturating_add(i128::from(i64::MAX)) as u64
}

pub(crate) fn from_key(n: u64) -> Timestamp {
    let micros = i128::from(n) - i128::from(i64::MAX);
    Timestamp::from_nanosecond(micros * 1000).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn decode_point(key: &[u8], v: &[u8]) -> Result<HistoryPoint, StoreError> {
    let n = key.len();
    let corrupt = || StoreError::Corrupt(String::from_utf8_lossy(key).into_owned());
    let ts = key
        .get(n.wrapping_sub(16)..n.wrapping_sub(8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(corrupt)?;
    HistoryPoint::decode(from_key(ts), v).ok_or_else(corrupt)
}

pub(crate) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn dec<T: for<'de> Deserialize<'de>>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| corrupt(&String::from_utf8_lossy(key), &e))
}

/// A record that does not decode: logged here, returned to the caller
/// (never read as "no data").
pub(crate) fn corrupt(key: &str, why: &dyn std::fmt::Display) -> StoreError {
    tracing::error!(key, error = %why, "a stored record does not decode");
    StoreError::Corrupt(key.to_owned())
}

/// Where the downsampling of history into `bucket`-long points left off
/// (meta key; one per tier, so that each tier resumes on its own).
pub(crate) fn downsample_mark(bucket: jiff::SignedDuration) -> String {
    format!("history_downsampled_until/{}s", bucket.as_secs())
}

/// The bucket arithmetic of a downsampling run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Downsample {
    bucket_us: i128,
    /// Merge points in `[start, end)`.
    pub start: Timestamp,
    /// End (a bucket boundary).
    pub end: Timestamp,
}

impl Downsample {
    /// The window of a run: whole buckets before `before`, from a little
    /// before where the previous run (`mark`) ended, so that points which
    /// arrived late (a box that was offline) are merged too.
    pub(crate) fn window(
        mark: Option<String>,
        before: Timestamp,
        bucket: jiff::SignedDuration,
    ) -> Option<Self> {
        let mut d = Self {
            bucket_us: bucket.as_micros().max(1),
            start: Timestamp::UNIX_EPOCH,
            end: Timestamp::UNIX_EPOCH,
        };
        d.end = d.align(before);
        if let Some(t) = mark.and_then(|v| v.parse::<Timestamp>().ok()) {
            d.start = d.align(
                t.saturating_sub(jiff::SignedDuration::from_hours(48))
                    .unwrap_or(t),
            );
        }
        (d.start < d.end).then_some(d)
    }

    /// The start of the bucket holding `t`.
    pub(crate) fn align(&self, t: Timestamp) -> Timestamp {
        let us = t.as_microsecond();
        let start = i128::from(us).div_euclid(self.bucket_us) * self.bucket_us;
        Timestamp::from_microsecond(i64::try_from(start).unwrap_or(us)).unwrap_or(t)
    }
}

/// The writes of an ingest, computed from the stored state (pure, so that
/// both stores share it and a retried transaction recomputes it).
#[derive(Debug)]
pub struct Folded {
    /// History rows (key, encoded point).
    pub history: Vec<(Vec<u8>, Vec<u8>)>,
    /// Event rows.
    pub events: Vec<(Vec<u8>, Vec<u8>)>,
    /// The new latest state, when a report was accepted.
    pub state: Option<SiteState>,
    /// The answer.
    pub outcome: IngestOutcome,
}

/// Folds reports (sorted by sequence) into a site's stored state: reports
/// at or below the stored sequence are duplicates of a retried batch.
pub fn fold_reports(
    site: &SiteId,
    prev: Option<SiteState>,
    epoch: Option<&str>,
    sorted: &[Report],
    received_at: Timestamp,
) -> Folded {
    // Another epoch than the stored one: the box's state was wiped and its
    // sequence restarted. (A box that starts sending an epoch, after an
    // upgrade, keeps its sequence: no epoch before is not another one.)
    let stored_epoch = prev.as_ref().and_then(|p| p.epoch.clone());
    let reset = matches!((&stored_epoch, epoch), (Some(a), Some(b)) if a != b);
    let mut last_seq = if reset {
        0
    } else {
        prev.as_ref().map_or(0, |p| p.last_seq)
    };
    let mut last_report = prev.as_ref().map(|p| p.report.clone());
    let mut metrics = prev.as_ref().and_then(|p| p.metrics.clone());
    let mut metrics_at = prev.as_ref().and_then(|p| p.metrics_at);
    let (mut accepted, mut duplicates) = (0, 0);
    let mut history = Vec::new();
    let mut events = Vec::new();
    if let (true, Some(first)) = (reset, sorted.first()) {
        events.push((
            site_key(site, ts_key(first.at), 0),
            enc(&Event {
                at: first.at,
                kind: EventKind::Reset,
                message: format!(
                    "the box's state was wiped (reflashed, a new SD card): its reports start again at seq {}",
                    first.seq
                ),
                fr: Some(format!(
                    "l'état du boîtier a été effacé (réinstallé, nouvelle carte SD) : ses rapports reprennent au numéro {}",
                    first.seq
                )),
            }),
        ));
    }
    for r in sorted {
        if r.seq <= last_seq {
            duplicates += 1;
            continue;
        }
        if let Some(m) = &r.metrics {
            history.push((
                site_key(site, ts_key(r.at), r.seq),
                HistoryPoint::from_metrics(r.at, m).encode().to_vec(),
            ));
            metrics = Some(m.clone());
            metrics_at = Some(r.at);
        }
        for (i, e) in transition_events(last_report.as_ref(), r)
            .into_iter()
            .enumerate()
        {
            events.push((site_key(site, ts_key(e.at), r.seq * 8 + i as u64), enc(&e)));
        }
        last_seq = r.seq;
        last_report = Some(r.clone());
        accepted += 1;
    }
    let state = match last_report {
        Some(report) if accepted > 0 => Some(SiteState {
            site: site.clone(),
            last_seq,
            epoch: epoch.map(str::to_owned).or(stored_epoch),
            received_at,
            report,
            metrics,
            metrics_at,
        }),
        _ => None,
    };
    Folded {
        history,
        events,
        state,
        outcome: IngestOutcome {
            accepted,
            duplicates,
            last_seq,
        },
    }
}

fn transition_events(prev: Option<&Report>, r: &Report) -> Vec<Event> {
    let mut out = Vec::new();
    let prev_phase = prev.map(|p| p.status.phase);
    if prev_phase != Some(r.status.phase) {
        let to = phase_name(r.status.phase);
        let from = prev_phase.map(phase_name);
        let word = |lang, p: &str| crate::i18n::phase_word(p, lang);
        out.push(Event {
            at: r.at,
            kind: EventKind::Phase,
            message: format!(
                "{} → {}",
                from.as_deref()
                    .map_or("nothing".to_owned(), |f| word(crate::i18n::Lang::En, f)),
                word(crate::i18n::Lang::En, &to)
            ),
            fr: Some(format!(
                "{} → {}",
                from.as_deref()
                    .map_or("rien".to_owned(), |f| word(crate::i18n::Lang::Fr, f)),
                word(crate::i18n::Lang::Fr, &to)
            )),
        });
    }
    let prev_applied = prev.and_then(|p| p.status.applied_serial);
    if let Some(a) = r.status.applied_serial
        && prev_applied != Some(a)
    {
        out.push(Event {
            at: r.at,
            kind: EventKind::Applied,
            message: format!("applied serial {a}"),
            fr: Some(format!("numéro {a} appliqué")),
        });
    }
    // Releases: a switch, and a rollback (with the health check's output).
    let prev_sw = prev.and_then(|p| p.status.software.as_ref());
    if let Some(sw) = &r.status.software {
        if let Some(cur) = &sw.current
            && prev_sw.and_then(|p| p.current.as_ref()) != Some(cur)
            && prev.is_some()
        {
            out.push(Event {
                at: r.at,
                kind: EventKind::Release,
                message: match prev_sw.and_then(|p| p.current.as_deref()) {
                    Some(old) => format!("applied release {cur} (was {old})"),
                    None => format!("applied release {cur}"),
                },
                fr: Some(match prev_sw.and_then(|p| p.current.as_deref()) {
                    Some(old) => format!("version {cur} appliquée (avant : {old})"),
                    None => format!("version {cur} appliquée"),
                }),
            });
        }
        if let Some(rb) = &sw.last_rollback
            && prev_sw.and_then(|p| p.last_rollback.as_ref()) != Some(rb)
        {
            out.push(Event {
                at: rb.at,
                kind: EventKind::RolledBack,
                message: format!(
                    "rolled back from {} to {}: {}",
                    rb.from,
                    rb.to.as_deref().unwrap_or("(none)"),
                    rb.output.chars().take(2048).collect::<String>()
                ),
                fr: Some(format!(
                    "retour de {} à {} : {}",
                    rb.from,
                    rb.to.as_deref().unwrap_or("(aucune)"),
                    rb.output.chars().take(2048).collect::<String>()
                )),
            });
        }
    }
    let prev_err = prev.and_then(|p| p.status.last_error.as_deref());
    if let Some(e) = &r.status.last_error
        && prev_err != Some(e.as_str())
    {
        out.push(Event {
            at: r.at,
            kind: EventKind::Error,
            message: e.chars().take(500).collect(),
            fr: None,
        });
    }
    out
}

/// The snake_case name of a phase.
pub fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::redb_store::RedbStore;

    /// Every store test runs on each backend (redb today).
    trait Open: Store + Sized + Clone + std::fmt::Debug {
        fn open(p: &Path) -> Result<Self, StoreError>;
        fn writes_and_syncs(&self) -> (u64, u64);
    }
    impl Open for RedbStore {
        fn open(p: &Path) -> Result<Self, StoreError> {
            RedbStore::open(p)
        }
        fn writes_and_syncs(&self) -> (u64, u64) {
            self.writes_and_commits()
        }
    }

    macro_rules! both {
        ($($name:ident),*) => {
            mod redb_backend {
                $( #[test] fn $name() { super::$name::<super::RedbStore>() } )*
            }
        };
    }
    both!(
        ingest_is_idempotent_by_sequence_and_survives_reopen,
        a_new_epoch_restarts_the_sequence_and_nothing_is_lost_or_counted_twice,
        downsampling_merges_old_points_per_bucket_and_is_idempotent,
        housekeeping_walks_the_tiers_finest_first_and_drops_what_retention_drops,
        publish_is_atomic_with_its_commit,
        concurrent_ingests_share_flushes_and_all_land,
        a_second_open_of_a_locked_store_says_so,
        meta_writes_are_atomic_and_scans_stay_in_their_prefix,
        bookkeeping_round_trips_and_a_record_that_does_not_decode_is_an_error
    );

    fn bookkeeping_round_trips_and_a_record_that_does_not_decode_is_an_error<S: Open>() {
        use crate::alerts::{Level, Stage};
        use crate::outbox::Target;
        let tmp = tempfile::tempdir().unwrap();
        let s = S::open(tmp.path()).unwrap();
        let site = SiteId::new("cesson-handball").unwrap();
        let at: Timestamp = "2026-11-22T09:00:00Z".parse().unwrap();
        let state = AlertState {
            state: Stage::Firing,
            level: Level::Critical,
            value: "85 °C".into(),
            message: "too hot".into(),
            wording: None,
            since: at,
            fired_at: Some(at),
            resolved_at: None,
            clear_since: None,
            notified_at: None,
        };
        let item = Outgoing {
            target: Target::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
                body: serde_json::json!({"text": "x"}),
            },
            attempts: 0,
            next_at: at,
            last_error: None,
        };
        let id = OutboxId::new(at, "cesson-handball-temperature", 0);
        s.write_bookkeeping(Bookkeeping {
            alerts: vec![(site.clone(), Rule::Temperature, Some(state.clone()))],
            outbox: vec![(id.clone(), Some(item.clone()))],
            digest_day: Some("2026-11-22".into()),
            events: Vec::new(),
        })
        .unwrap();
        assert_eq!(
            s.alert_states()
                .unwrap()
                .get(&(site.clone(), Rule::Temperature)),
            Some(&state)
        );
        let outbox = s.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].0, id);
        assert_eq!(outbox[0].1.as_ref().unwrap(), &item);
        assert_eq!(s.digest_day().unwrap().as_deref(), Some("2026-11-22"));
        // Regression: an undecodable record was silently skipped ("no
        // alert"); it is an error naming its key now.
        s.meta_write(vec![
            (
                "alert/vannes-rugby/temperature".into(),
                Some("{not json".into()),
            ),
            ("outbox/00000000000000000001-x-0".into(), Some("[]".into())),
        ])
        .unwrap();
        let err = s.alert_states().unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(k) if k == "alert/vannes-rugby/temperature"),
            "{err:?}"
        );
        let outbox = s.outbox().unwrap();
        assert_eq!(outbox.len(), 2, "the bad item does not hide the good one");
        assert!(
            matches!(&outbox[0].1, Err(StoreError::Corrupt(k)) if k == "outbox/00000000000000000001-x-0")
        );
        assert!(outbox[1].1.is_ok());
        // Removing through the bookkeeping.
        s.write_bookkeeping(Bookkeeping {
            alerts: vec![(
                SiteId::new("vannes-rugby").unwrap(),
                Rule::Temperature,
                None,
            )],
            outbox: vec![(id, None)],
            ..Bookkeeping::default()
        })
        .unwrap();
        assert_eq!(s.alert_states().unwrap().len(), 1);
        assert_eq!(s.outbox_len().unwrap(), 1);
    }
    use touchline_schemas::report::Status;

    fn report(seq: u64, at: &str, phase: Phase, cpu: Option<f64>) -> Report {
        Report {
            seq,
            at: at.parse().unwrap(),
            status: Status {
                agent_release: None,
                phase,
                desired_serial: Some(3),
                applied_serial: Some(seq),
                release: None,
                software: None,
                conditions: vec![],
                last_error: None,
                agent_version: None,
            },
            metrics: cpu.map(|c| Metrics {
                cpu_percent: Some(c),
                ..Metrics::default()
            }),
        }
    }

    fn a_new_epoch_restarts_the_sequence_and_nothing_is_lost_or_counted_twice<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        let site = SiteId::new("a").unwrap();
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let s = S::open(tmp.path()).unwrap();
        let at = |m: u32| format!("2026-11-22T09:{m:02}:00Z");
        // A box without an epoch (an older agent) that starts sending one
        // keeps its sequence.
        let old: Vec<Report> = (1..=5)
            .map(|q| report(q, &at(q as u32), Phase::Converged, Some(1.0)))
            .collect();
        s.ingest(&site, None, &old[..3], now).unwrap();
        let o = s.ingest(&site, Some("e1"), &old, now).unwrap();
        assert_eq!((o.accepted, o.duplicates, o.last_seq), (2, 3, 5));
        // Reflashed: epoch e2, seq from 1 again. Accepted, not duplicates.
        let fresh: Vec<Report> = (1..=3)
            .map(|q| report(q, &at(10 + q as u32), Phase::Starting, Some(2.0)))
            .collect();
        let o = s.ingest(&site, Some("e2"), &fresh[..2], now).unwrap();
        assert_eq!((o.accepted, o.duplicates, o.last_seq), (2, 0, 2));
        // Its retry (the answer was lost) is a duplicate within e2.
        let o = s.ingest(&site, Some("e2"), &fresh, now).unwrap();
        assert_eq!((o.accepted, o.duplicates, o.last_seq), (1, 2, 3));
        drop(s);
        let s = S::open(tmp.path()).unwrap();
        let latest = s.latest(&site).unwrap().unwrap();
        assert_eq!((latest.last_seq, latest.epoch.as_deref()), (3, Some("e2")));
        let h = s
            .history(&site, "2026-11-22T00:00:00Z".parse().unwrap(), now)
            .unwrap();
        assert_eq!(h.len(), 8, "5 before the reflash, 3 after, each once");
        let ev = s.events(&site, 20).unwrap();
        assert_eq!(
            ev.iter().filter(|e| e.kind == EventKind::Reset).count(),
            1,
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|e| e.message.ends_with("start again at seq 1"))
        );
    }

    fn ingest_is_idempotent_by_sequence_and_survives_reopen<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        let site = SiteId::new("a").unwrap();
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        {
            let s = S::open(tmp.path()).unwrap();
            let batch = [
                report(1, "2026-11-22T09:00:00Z", Phase::Starting, None),
                report(2, "2026-11-22T09:05:00Z", Phase::Converged, Some(10.0)),
            ];
            let o = s.ingest(&site, None, &batch, now).unwrap();
            assert_eq!((o.accepted, o.duplicates, o.last_seq), (2, 0, 2));
            // The same batch again (a retry) stores nothing.
            let o = s.ingest(&site, None, &batch, now).unwrap();
            assert_eq!((o.accepted, o.duplicates, o.last_seq), (0, 2, 2));
            // A batch overlapping the stored range stores only the new report.
            let o = s
                .ingest(
                    &site,
                    None,
                    &[
                        batch[1].clone(),
                        report(3, "2026-11-22T09:10:00Z", Phase::Degraded, Some(20.0)),
                    ],
                    now,
                )
                .unwrap();
            assert_eq!((o.accepted, o.duplicates, o.last_seq), (1, 1, 3));
        }
        let s = S::open(tmp.path()).unwrap();
        let latest = s.latest(&site).unwrap().unwrap();
        assert_eq!(latest.last_seq, 3);
        assert_eq!(latest.report.status.phase, Phase::Degraded);
        let h = s
            .history(&site, "2026-11-22T00:00:00Z".parse().unwrap(), now)
            .unwrap();
        assert_eq!(
            h.iter().map(|p| p.cpu_percent.unwrap()).collect::<Vec<_>>(),
            vec![10.0, 20.0]
        );
        let ev = s.events(&site, 10).unwrap();
        assert_eq!(ev[0].message, "applied serial 3");
        assert!(
            ev.iter().any(|e| e.message == "converged → degraded"),
            "{ev:?}"
        );
        assert_eq!(
            s.prune_history("2026-11-22T09:07:00Z".parse().unwrap())
                .unwrap(),
            1
        );
    }

    fn downsampling_merges_old_points_per_bucket_and_is_idempotent<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        let site = SiteId::new("a").unwrap();
        let s = S::open(tmp.path()).unwrap();
        // Three hours of 5-minute reports, cpu = minute of the hour.
        let start: Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
        let reports: Vec<Report> = (0..36u64)
            .map(|i| {
                let at = start + jiff::SignedDuration::from_mins(5 * i as i64);
                let mut r = report(i + 1, &at.to_string(), Phase::Converged, None);
                r.metrics = Some(Metrics {
                    cpu_percent: Some(((i % 12) * 5) as f64),
                    temperature_c: Some(50.0 + i as f64),
                    disk_used_bytes: Some(i),
                    ..Metrics::default()
                });
                r
            })
            .collect();
        s.ingest(&site, None, &reports, start).unwrap();
        let all = |s: &S| {
            s.history(&site, start, "2026-11-21T00:00:00Z".parse().unwrap())
                .unwrap()
        };
        // Everything before 12:00 is merged per hour; 12:00–13:00 stays raw.
        let merged = s
            .downsample_history(
                "2026-11-20T12:00:00Z".parse().unwrap(),
                jiff::SignedDuration::from_hours(1),
            )
            .unwrap();
        assert_eq!(merged, 22);
        let h = all(&s);
        assert_eq!(h.len(), 2 + 12);
        assert_eq!(h[0].at, start);
        assert_eq!(h[0].samples, 12);
        assert_eq!(h[0].cpu_percent, Some(27.5));
        assert_eq!(h[0].temperature_max_c, Some(61.0));
        assert_eq!(h[0].disk_used_bytes, Some(11));
        assert_eq!(h[1].at.to_string(), "2026-11-20T11:00:00Z");
        assert_eq!(h[1].temperature_c, Some(67.5));
        assert!(h[2..].iter().all(|p| p.samples == 1));
        // Running again changes nothing; a later cutoff merges the rest.
        let merged = s
            .downsample_history(
                "2026-11-20T12:30:00Z".parse().unwrap(),
                jiff::SignedDuration::from_hours(1),
            )
            .unwrap();
        assert_eq!(merged, 0, "only whole buckets are merged");
        assert_eq!(all(&s), h);
        // A late report for an already merged hour is folded into it.
        let late = {
            let mut r = report(100, "2026-11-20T10:02:00Z", Phase::Converged, None);
            r.metrics = Some(Metrics {
                cpu_percent: Some(92.5),
                ..Metrics::default()
            });
            r
        };
        s.ingest(&site, None, &[late], start).unwrap();
        drop(s);
        let s = S::open(tmp.path()).unwrap();
        let merged = s
            .downsample_history(
                "2026-11-20T13:00:00Z".parse().unwrap(),
                jiff::SignedDuration::from_hours(1),
            )
            .unwrap();
        assert_eq!(merged, 1 + 11);
        let h = all(&s);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].samples, 13);
        assert_eq!(h[0].cpu_percent, Some((27.5 * 12.0 + 92.5) / 13.0));
        assert_eq!(h.iter().map(|p| p.samples).sum::<u32>(), 37);
    }

    fn housekeeping_walks_the_tiers_finest_first_and_drops_what_retention_drops<S: Open>() {
        use crate::config::HistoryTier;
        use touchline_schemas::HumanDuration;
        let tmp = tempfile::tempdir().unwrap();
        let site = SiteId::new("a").unwrap();
        let s = S::open(tmp.path()).unwrap();
        // Seven hours of 5-minute reports.
        let start: Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
        let reports: Vec<Report> = (0..84u64)
            .map(|i| {
                let at = start + jiff::SignedDuration::from_mins(5 * i as i64);
                let mut r = report(i + 1, &at.to_string(), Phase::Converged, None);
                r.metrics = Some(Metrics {
                    cpu_percent: Some(i as f64),
                    ..Metrics::default()
                });
                r
            })
            .collect();
        s.ingest(&site, None, &reports, start).unwrap();
        // Raw for 2 h, 15-minute points after that, hourly after 4 h, gone
        // after 6 h.
        let tiers = [
            HistoryTier {
                after: HumanDuration::from_secs(2 * 3600),
                bucket: HumanDuration::from_secs(900),
            },
            HistoryTier {
                after: HumanDuration::from_secs(4 * 3600),
                bucket: HumanDuration::from_secs(3600),
            },
        ];
        let now = start + jiff::SignedDuration::from_hours(7);
        let done =
            crate::history::housekeeping(&s, now, jiff::SignedDuration::from_hours(6), &tiers)
                .unwrap();
        assert_eq!(done.pruned, 12, "the first hour is past the retention");
        // 11:00–13:00 hourly (2 points of 12), 13:00–15:00 by 15 minutes
        // (8 of 3), 15:00–17:00 raw (24).
        assert_eq!(done.merged, (24 - 2) + (24 - 8));
        let h = s.history(&site, start, now).unwrap();
        let shape: Vec<(String, u32)> = h.iter().map(|p| (p.at.to_string(), p.samples)).collect();
        assert_eq!(shape.len(), 2 + 8 + 24, "{shape:?}");
        assert_eq!(shape[0], ("2026-11-20T11:00:00Z".into(), 12));
        assert_eq!(shape[1], ("2026-11-20T12:00:00Z".into(), 12));
        assert_eq!(shape[2], ("2026-11-20T13:00:00Z".into(), 3));
        assert_eq!(shape[9], ("2026-11-20T14:45:00Z".into(), 3));
        assert!(shape[10..].iter().all(|(_, n)| *n == 1));
        // The hourly means are the means of the raw samples (12..24 → 17.5).
        assert_eq!(h[0].cpu_percent, Some(17.5));
        // Idempotent; an hour later one more hour moves down each tier.
        let again =
            crate::history::housekeeping(&s, now, jiff::SignedDuration::from_hours(6), &tiers)
                .unwrap();
        assert_eq!(again, crate::history::Housekept::default());
        drop(s);
        let s = S::open(tmp.path()).unwrap();
        let later = crate::history::housekeeping(
            &s,
            now + jiff::SignedDuration::from_hours(1),
            jiff::SignedDuration::from_hours(6),
            &tiers,
        )
        .unwrap();
        assert_eq!(later.pruned, 1, "11:00 is dropped");
        assert_eq!(later.merged, (4 - 1) + (12 - 4));
        let h = s.history(&site, start, now).unwrap();
        assert_eq!(h.len(), 2 + 8 + 12);
        assert_eq!(h.iter().map(|p| p.samples).sum::<u32>(), 84 - 12 - 12);
    }

    fn meta_writes_are_atomic_and_scans_stay_in_their_prefix<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = S::open(tmp.path()).unwrap();
            s.meta_write(vec![
                ("alert/a/1".into(), Some("x".into())),
                ("alert/b/1".into(), Some("y".into())),
                ("alerts".into(), Some("not mine".into())),
                ("outbox/0001".into(), Some("n1".into())),
            ])
            .unwrap();
            s.meta_write(vec![
                ("alert/a/1".into(), None),
                ("outbox/0002".into(), Some("n2".into())),
            ])
            .unwrap();
        }
        let s = S::open(tmp.path()).unwrap();
        assert_eq!(
            s.meta_scan("alert/").unwrap(),
            vec![("alert/b/1".to_owned(), "y".to_owned())]
        );
        assert_eq!(
            s.meta_scan("outbox/").unwrap(),
            vec![
                ("outbox/0001".to_owned(), "n1".to_owned()),
                ("outbox/0002".to_owned(), "n2".to_owned())
            ]
        );
        assert_eq!(s.meta("alerts").unwrap().as_deref(), Some("not mine"));
    }

    #[test]
    fn a_bundle_body_is_stored_as_text_and_the_old_array_form_still_reads() {
        let entry = r#"{"path":"vid\u00e9o.mp4","size":1234}"#;
        let body = format!(r#"{{"format":1,"files":[{}]}}"#, [entry; 100].join(",")).into_bytes();
        let p = Published {
            site: SiteId::new("a").unwrap(),
            serial: 1,
            commit: None,
            etag: "\"e\"".into(),
            body: body.clone(),
            signature: "sig".into(),
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            desired: None,
        };
        let stored = enc(&p);
        let fixed = stored.len() - body.len();
        // The body costs its own length and a few escapes, not 3-4 bytes a byte.
        assert!(
            fixed < 1000,
            "{} bytes for a {}-byte body",
            stored.len(),
            body.len()
        );
        assert_eq!(dec::<Published>(b"k", &stored).unwrap(), p);
        let mut old = serde_json::to_value(&p).unwrap();
        old["body"] = serde_json::json!(body);
        let old = serde_json::to_vec(&old).unwrap();
        assert_eq!(dec::<Published>(b"k", &old).unwrap(), p);
        let raw = Published {
            body: vec![0xff, 0, 7],
            ..p
        };
        assert_eq!(dec::<Published>(b"k", &enc(&raw)).unwrap(), raw);
    }

    fn publish_is_atomic_with_its_commit<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        let s = S::open(tmp.path()).unwrap();
        let p = Published {
            site: SiteId::new("a").unwrap(),
            serial: 4,
            commit: Some("c4".into()),
            etag: "\"x\"".into(),
            body: b"{}".to_vec(),
            signature: "sig".into(),
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            desired: None,
        };
        let rec = CommitRecord {
            id: "c4".into(),
            serial: 4,
            summary: "four".into(),
            state: CommitState::Accepted,
            reason: None,
            diagnostics: vec![],
            processed_at: Timestamp::UNIX_EPOCH,
            sites_changed: vec![p.site.clone()],
        };
        s.publish(std::slice::from_ref(&p), Some(&rec)).unwrap();
        assert_eq!(s.published().unwrap(), vec![p]);
        assert_eq!(s.meta("last_good").unwrap().as_deref(), Some("c4"));
        let refused = CommitRecord {
            id: "c5".into(),
            state: CommitState::Refused,
            reason: Some("invalid".into()),
            ..rec
        };
        s.record_commit(&refused).unwrap();
        assert_eq!(s.meta("last_good").unwrap().as_deref(), Some("c4"));
        assert_eq!(s.meta("last_seen").unwrap().as_deref(), Some("c5"));
        assert_eq!(s.commits(10).unwrap()[0].id, "c5");
    }

    fn concurrent_ingests_share_flushes_and_all_land<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        let s = S::open(tmp.path()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let s = &s;
                scope.spawn(move || {
                    let site = SiteId::new(&format!("site-{t}")).unwrap();
                    for seq in 1..=25 {
                        let o = s
                            .ingest(
                                &site,
                                None,
                                &[report(
                                    seq,
                                    "2026-11-22T09:00:00Z",
                                    Phase::Converged,
                                    Some(1.0),
                                )],
                                Timestamp::UNIX_EPOCH,
                            )
                            .unwrap();
                        assert_eq!(o.accepted, 1);
                    }
                });
            }
        });
        let (writes, syncs) = s.writes_and_syncs();
        assert_eq!(writes, 200);
        assert!(
            syncs < writes,
            "{syncs} syncs for {writes} writes: none shared"
        );
        assert_eq!(s.latest_all().unwrap().len(), 8);
        assert!(s.latest_all().unwrap().iter().all(|x| x.last_seq == 25));
    }

    fn a_second_open_of_a_locked_store_says_so<S: Open>() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = S::open(tmp.path()).unwrap();
        let err = S::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
    }
}
