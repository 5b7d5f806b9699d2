//! Remote actions: the controller's queue.
//!
//! An operator's request is checked (the site's allow-list from its
//! published bundle, the arguments), signed with the controller's key in
//! the action namespace, stored (`action/<site>/<id>` in the store, so a
//! restart keeps the queue) and announced to the site's long-poll, which
//! answers at once with the [`PENDING_HEADER`]. The box takes its inbox,
//! checks each request itself, and posts [`ActionUpdate`]s; every final
//! state goes into the audit log.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use touchline_schemas::HumanDuration;
#[cfg(doc)]
use touchline_schemas::action::PENDING_HEADER;
use touchline_schemas::action::{
    ACTION_FORMAT, ActionArgs, ActionRequest, ActionState, ActionUpdate, ArgsError,
    DEFAULT_LIFETIME_SECS, Delivery, Inbox, MAX_ACTION_OUTPUT, MAX_INBOX, MAX_LIFETIME_SECS,
};
use touchline_schemas::manifest::RemoteAction;
use touchline_schemas::{Bundle, SigningKey, SiteId};

use crate::store::{ACTION_PREFIX, AuditEntry, Store, StoreError};

/// An action as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Its id (sorts by request time).
    pub id: String,
    /// The site.
    pub site: SiteId,
    /// What.
    pub action: RemoteAction,
    /// With what.
    #[serde(default)]
    pub args: ActionArgs,
    /// Run even while the update lock is held.
    #[serde(default)]
    pub force: bool,
    /// Who asked.
    pub requested_by: String,
    /// From where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When.
    pub requested_at: Timestamp,
    /// Refused by the box after this.
    pub expires_at: Timestamp,
    /// Where it is.
    pub state: ActionState,
    /// When the box took it from its inbox (memory of delivery: the
    /// long-poll is not woken again for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    /// The box's updates, oldest first (without their output).
    #[serde(default)]
    pub updates: Vec<UpdateRecord>,
    /// The final exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The final output (capped by the box, and again here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The output was cut.
    #[serde(default)]
    pub truncated: bool,
    /// The signed request, as delivered.
    pub request: String,
    /// Its signature.
    pub signature: String,
}

/// One update from the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The state it moved to.
    pub state: ActionState,
    /// The box's time.
    pub at: Timestamp,
    /// The controller's time.
    pub received_at: Timestamp,
    /// Its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ActionRecord {
    /// The state now: a queued action past its expiry is expired.
    pub fn state_at(&self, now: Timestamp) -> ActionState {
        if self.state == ActionState::Queued && self.expires_at <= now {
            ActionState::Expired
        } else {
            self.state
        }
    }

    /// The last message the box sent.
    pub fn message(&self) -> Option<&str> {
        self.updates.iter().rev().find_map(|u| u.message.as_deref())
    }

    /// `restart-service neopro-app`, `logs neopro-app --lines 50`.
    pub fn command_line(&self) -> String {
        let mut s = self.action.command_name().to_owned();
        if let Some(svc) = &self.args.service {
            s.push(' ');
            s.push_str(svc);
        }
        if let Some(n) = self.args.lines {
            s.push_str(&format!(" --lines {n}"));
        }
        if let Some(t) = &self.args.since {
            s.push_str(&format!(" --since '{t}'"));
        }
        if self.force {
            s.push_str(" --force");
        }
        s
    }

    fn key(&self) -> String {
        key(&self.site, &self.id)
    }
}

/// The body of an action request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// `system-info`, `restart-service`… (or the manifests' `system_info`).
    pub action: String,
    /// `restart-service`, `logs`: the service.
    #[serde(default)]
    pub service: Option<String>,
    /// `logs`: how many lines.
    #[serde(default)]
    pub lines: Option<u32>,
    /// `logs`: since when.
    #[serde(default)]
    pub since: Option<String>,
    /// Run during a match (reboot, restart, resync): audited as forced.
    #[serde(default)]
    pub force: bool,
    /// How long the box may take to get it (default 15m).
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
    /// `POST /api/actions`: the sites.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// An action name that is none of [`RemoteAction::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action `{0}`: one of system-info, report-now, logs, restart-service, resync, reboot"
)]
pub struct UnknownAction(pub String);

/// Turns a body into the action to queue for one site.
pub fn new_action(
    body: &ActionBody,
    site: SiteId,
    actor: String,
    source: Option<String>,
) -> Result<NewAction, UnknownAction> {
    let action = RemoteAction::parse(body.action.trim())
        .ok_or_else(|| UnknownAction(body.action.chars().take(40).collect()))?;
    let ttl = body.ttl.map_or(DEFAULT_LIFETIME_SECS, |t| {
        i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
    });
    Ok(NewAction {
        site,
        action,
        args: ActionArgs {
            service: body.service.clone().filter(|s| !s.is_empty()),
            lines: body.lines,
            since: body.since.clone().filter(|s| !s.is_empty()),
        },
        force: body.force,
        ttl: SignedDuration::from_secs(ttl),
        actor,
        source,
    })
}

fn json(r: &ActionRecord) -> String {
    // Strings, numbers and timestamps: cannot fail.
    serde_json::to_string(r).unwrap_or_default()
}

fn key(site: &SiteId, id: &str) -> String {
    format!("{ACTION_PREFIX}{site}/{id}")
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct NewAction {
    /// The site.
    pub site: SiteId,
    /// What.
    pub action: RemoteAction,
    /// With what.
    pub args: ActionArgs,
    /// Even during a match.
    pub force: bool,
    /// How long it may wait for the box.
    pub ttl: SignedDuration,
    /// Who.
    pub actor: String,
    /// From where.
    pub source: Option<String>,
}

/// Why an action was not queued.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No such site in the manifests.
    #[error("no site `{0}` in the manifests")]
    UnknownSite(String),
    /// Nothing published for it: it has no allow-list yet.
    #[error("site `{0}` has no published bundle yet, so no allow-list: sync first")]
    NoBundle(String),
    /// The allow-list says no.
    #[error(
        "`{action}` is not allowed on site `{site}` (agent.allowed_actions: {allowed}); change the manifests to allow it"
    )]
    NotAllowed {
        /// The site.
        site: String,
        /// The action.
        action: &'static str,
        /// What is allowed.
        allowed: String,
    },
    /// Bad arguments.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A lifetime out of range.
    #[error("an action lives from 1 minute to 7 days, not {0}")]
    Ttl(String),
    /// Too many waiting for one box.
    #[error("{0} actions already wait for site `{1}`; let the box take them first")]
    Full(usize, String),
    /// Signing.
    #[error("cannot sign the action: {0}")]
    Sign(String),
    /// The random source.
    #[error("cannot read random bytes: {0}")]
    Random(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a box's update was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Not an action of this site.
    #[error("no action `{0}` for this site")]
    Unknown(String),
    /// After a final state, or back to `queued`.
    #[error("action `{id}` is {from}; it cannot become {to}")]
    Transition {
        /// The action.
        id: String,
        /// Its state.
        from: &'static str,
        /// The one asked.
        to: &'static str,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The queue's memory: how many actions wait per site (undelivered ones
/// wake the long-poll), and a lock for read-modify-write of records.
#[derive(Debug)]
pub struct Queue {
    waiting: Mutex<HashMap<SiteId, Waiting>>,
    write: Mutex<()>,
    wake: watch::Sender<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Waiting {
    /// Queued, not received yet.
    queued: usize,
    /// Of those, not handed to the box yet.
    undelivered: usize,
}

impl Queue {
    /// Counts what waits in the store.
    pub fn load(store: &dyn Store, now: Timestamp) -> Result<Self, StoreError> {
        let mut waiting: HashMap<SiteId, Waiting> = HashMap::new();
        for (k, v) in store.meta_scan(ACTION_PREFIX)? {
            let r: ActionRecord =
                serde_json::from_str(&v).map_err(|e| crate::store::corrupt(&k, &e))?;
            if r.state_at(now) == ActionState::Queued {
                let w = waiting.entry(r.site.clone()).or_default();
                w.queued += 1;
                // After a restart, delivered-but-unacknowledged ones are
                // announced again.
                w.undelivered += 1;
            }
        }
        Ok(Self {
            waiting: Mutex::new(waiting),
            write: Mutex::new(()),
            wake: watch::Sender::new(0),
        })
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<SiteId, Waiting>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `(queued, undelivered)` for a site.
    pub fn pending(&self, site: &SiteId) -> (usize, usize) {
        self.waiting()
            .get(site)
            .map_or((0, 0), |w| (w.queued, w.undelivered))
    }

    /// Woken when an action is queued.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn adjust(&self, site: &SiteId, queued: isize, undelivered: isize) {
        let mut w = self.waiting();
        let e = w.entry(site.clone()).or_default();
        e.queued = e.queued.saturating_add_signed(queued);
        e.undelivered = e
            .undelivered
            .saturating_add_signed(undelivered)
            .min(e.queued);
        if e.queued == 0 {
            w.remove(site);
        }
    }
}

/// A new action id: the UTC request time to the millisecond, then 48
/// random bits (`20261203t140102123z-9f0c2a4b11d3`).
fn new_id(now: Timestamp) -> Result<String, RequestError> {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).map_err(|e| RequestError::Random(e.to_string()))?;
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{hex}", now.strftime("%Y%m%dt%H%M%S%3fz")))
}

fn nonce() -> Result<String, RequestError> {
    let mut r = [0u8; 16];
    getrandom::fill(&mut r).map_err(|e| RequestError::Random(e.to_string()))?;
    Ok(r.iter().map(|b| format!("{b:02x}")).collect())
}

/// The allow-list in a published bundle's body.
pub fn allowed_actions(body: &[u8]) -> Option<Vec<RemoteAction>> {
    Bundle::from_slice(body)
        .ok()
        .map(|b| b.agent.allowed_actions)
}

/// What the controller knows of the site an action is for.
#[derive(Debug)]
pub struct SiteFacts {
    /// It is in the manifests.
    pub known: bool,
    /// Its published bundle's allow-list (`None`: nothing published).
    pub allowed: Option<Vec<RemoteAction>>,
}

/// The queue and what it writes to.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The queue.
    pub queue: &'a Queue,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("queue", self.queue)
            .finish_non_exhaustive()
    }
}

/// Checks, signs, stores and announces an action; audited.
pub fn request(
    cx: Ctx<'_>,
    key: &SigningKey,
    facts: SiteFacts,
    new: NewAction,
    now: Timestamp,
) -> Result<ActionRecord, RequestError> {
    let Ctx { store, queue } = cx;
    let audit = |result: String, target: String| {
        let _ = store.audit(&AuditEntry {
            at: now,
            actor: new.actor.clone(),
            action: if new.force && new.action.waits_for_lock() {
                "remote action (forced)".into()
            } else {
                "remote action".into()
            },
            target,
            source: new.source.clone(),
            result: Some(result),
        });
    };
    let checked = check(&facts, &new);
    let target = |id: Option<&str>| {
        let mut t = format!("{} {}", new.site, new.action.command_name());
        if let Some(svc) = &new.args.service {
            t.push(' ');
            t.push_str(svc);
        }
        if let Some(id) = id {
            t.push_str(&format!(" ({id})"));
        }
        t
    };
    if let Err(e) = checked {
        audit(format!("refused: {e}"), target(None));
        return Err(e);
    }
    let id = new_id(now)?;
    let expires_at = now
        .checked_add(new.ttl)
        .map_err(|_| RequestError::Ttl(format!("{:#}", new.ttl)))?;
    let req = ActionRequest {
        format: ACTION_FORMAT,
        id: id.clone(),
        site: new.site.clone(),
        action: new.action,
        args: new.args.clone(),
        issued_at: now,
        expires_at,
        nonce: nonce()?,
        force: new.force,
    };
    let (body, signature) = req
        .sign(key)
        .map_err(|e| RequestError::Sign(e.to_string()))?;
    let record = ActionRecord {
        id: id.clone(),
        site: new.site.clone(),
        action: new.action,
        args: new.args.clone(),
        force: new.force,
        requested_by: new.actor.clone(),
        source: new.source.clone(),
        requested_at: now,
        expires_at,
        state: ActionState::Queued,
        delivered_at: None,
        updates: Vec::new(),
        exit_status: None,
        output: None,
        truncated: false,
        request: String::from_utf8_lossy(&body).into_owned(),
        signature,
    };
    {
        let _w = queue.write_lock();
        let (queued, _) = queue.pending(&new.site);
        if queued >= MAX_INBOX {
            let e = RequestError::Full(queued, new.site.to_string());
            audit(format!("refused: {e}"), target(None));
            return Err(e);
        }
        store.set_meta(&record.key(), &json(&record))?;
        queue.adjust(&new.site, 1, 1);
    }
    audit("queued".into(), target(Some(&id)));
    queue.wake.send_modify(|g| *g = g.wrapping_add(1));
    tracing::info!(site = %new.site, action = new.action.as_str(), %id, by = %new.actor, "remote action queued");
    Ok(record)
}

fn check(facts: &SiteFacts, new: &NewAction) -> Result<(), RequestError> {
    if !facts.known {
        return Err(RequestError::UnknownSite(new.site.to_string()));
    }
    let allowed = facts
        .allowed
        .as_ref()
        .ok_or_else(|| RequestError::NoBundle(new.site.to_string()))?;
    if !allowed.contains(&new.action) {
        let list: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
        return Err(RequestError::NotAllowed {
            site: new.site.to_string(),
            action: new.action.command_name(),
            allowed: if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            },
        });
    }
    new.args.check(new.action)?;
    let secs = new.ttl.as_secs();
    if !(60..=MAX_LIFETIME_SECS).contains(&secs) {
        return Err(RequestError::Ttl(format!("{:#}", new.ttl)));
    }
    Ok(())
}

fn read_all(store: &dyn Store, prefix: &str) -> Result<Vec<ActionRecord>, StoreError> {
    store
        .meta_scan(prefix)?
        .into_iter()
        .map(|(k, v)| serde_json::from_str(&v).map_err(|e| crate::store::corrupt(&k, &e)))
        .collect()
}

/// A site's actions, newest first (at most `limit`).
pub fn list(
    store: &dyn Store,
    site: &SiteId,
    limit: usize,
) -> Result<Vec<ActionRecord>, StoreError> {
    let mut all = read_all(store, &format!("{ACTION_PREFIX}{site}/"))?;
    all.reverse();
    all.truncate(limit);
    Ok(all)
}

/// One action.
pub fn get(store: &dyn Store, site: &SiteId, id: &str) -> Result<Option<ActionRecord>, StoreError> {
    store
        .meta(&key(site, id))?
        .map(|v| serde_json::from_str(&v).map_err(|e| crate::store::corrupt(&key(site, id), &e)))
        .transpose()
}

/// The box takes its inbox: the queued, unexpired actions, oldest first.
/// Expired ones are marked so (and audited) on the way.
pub fn inbox(cx: Ctx<'_>, site: &SiteId, now: Timestamp) -> Result<Inbox, StoreError> {
    let Ctx { store, queue } = cx;
    let _w = queue.write_lock();
    let mut out = Inbox::default();
    let mut delivered = 0isize;
    let mut expired = 0isize;
    let mut changes = Vec::new();
    for mut r in read_all(store, &format!("{ACTION_PREFIX}{site}/"))? {
        match r.state_at(now) {
            ActionState::Queued if out.actions.len() < MAX_INBOX => {
                out.actions.push(Delivery {
                    request: r.request.clone(),
                    signature: r.signature.clone(),
                });
                if r.delivered_at.is_none() {
                    delivered += 1;
                    r.delivered_at = Some(now);
                    changes.push((r.key(), Some(json(&r))));
                }
            }
            ActionState::Expired if r.state == ActionState::Queued => {
                expired += 1;
                r.state = ActionState::Expired;
                changes.push((r.key(), Some(json(&r))));
            }
            _ => {}
        }
    }
    if !changes.is_empty() {
        store.meta_write(changes)?;
    }
    queue.adjust(site, -expired, -delivered - expired);
    Ok(out)
}

/// How long finished actions are kept (the audit log keeps their trace).
pub const KEEP_DAYS: i64 = 90;

/// Marks the queued actions past their expiry as expired (audited), and
/// forgets finished ones older than [`KEEP_DAYS`]; the controller runs this
/// hourly, so an offline box's actions show `expired` without it.
pub fn expire(cx: Ctx<'_>, now: Timestamp) -> Result<usize, StoreError> {
    let Ctx { store, queue } = cx;
    let _w = queue.write_lock();
    let mut n = 0;
    let mut changes = Vec::new();
    let horizon = now.as_second() - KEEP_DAYS * 86_400;
    for mut r in read_all(store, ACTION_PREFIX)? {
        if r.state.is_final() && r.requested_at.as_second() < horizon {
            changes.push((r.key(), None));
            continue;
        }
        if r.state == ActionState::Queued && r.expires_at <= now {
            r.state = ActionState::Expired;
            queue.adjust(&r.site, -1, if r.delivered_at.is_none() { -1 } else { 0 });
            let _ = store.audit(&AuditEntry {
                at: now,
                actor: "controller".into(),
                action: "remote action expired".into(),
                target: format!("{} {} ({})", r.site, r.command_line(), r.id),
                source: None,
                result: Some("expired: the box did not take it in time".into()),
            });
            changes.push((r.key(), Some(json(&r))));
            n += 1;
        }
    }
    if !changes.is_empty() {
        store.meta_write(changes)?;
    }
    Ok(n)
}

/// A box's update on one of its actions. Idempotent: the same state again
/// is taken (a retried post); a final state is never left.
pub fn update(
    cx: Ctx<'_>,
    site: &SiteId,
    id: &str,
    u: ActionUpdate,
    now: Timestamp,
) -> Result<ActionRecord, UpdateError> {
    let Ctx { store, queue } = cx;
    let _w = queue.write_lock();
    let mut r = get(store, site, id)?.ok_or_else(|| UpdateError::Unknown(id.to_owned()))?;
    let from = r.state;
    let same = from == u.state;
    if matches!(u.state, ActionState::Queued | ActionState::Expired) || (from.is_final() && !same) {
        return Err(UpdateError::Transition {
            id: id.to_owned(),
            from: from.as_str(),
            to: u.state.as_str(),
        });
    }
    if same && from.is_final() {
        return Ok(r);
    }
    r.state = u.state;
    r.updates.push(UpdateRecord {
        state: u.state,
        at: u.at,
        received_at: now,
        message: u.message.clone().map(|m| head(&m, 1024)),
    });
    // A box that re-sends the same state many times does not grow the record.
    if r.updates.len() > 32 {
        r.updates.drain(..r.updates.len() - 32);
    }
    if u.exit_status.is_some() {
        r.exit_status = u.exit_status;
    }
    if let Some(out) = u.output {
        let cut = out.len() > MAX_ACTION_OUTPUT;
        r.output = Some(tail(&out, MAX_ACTION_OUTPUT));
        r.truncated = u.truncated || cut;
    }
    store.set_meta(&r.key(), &json(&r))?;
    if from == ActionState::Queued {
        queue.adjust(site, -1, if r.delivered_at.is_none() { -1 } else { 0 });
    }
    if r.state.is_final() {
        let result = match (&r.state, r.message()) {
            (s, Some(m)) => format!("{}: {}", s.as_str(), head(m, 200)),
            (s, None) => s.as_str().to_owned(),
        };
        let _ = store.audit(&AuditEntry {
            at: now,
            actor: format!("box:{site}"),
            action: "remote action result".into(),
            target: format!("{site} {} ({id})", r.command_line()),
            source: None,
            result: Some(result),
        });
    }
    tracing::info!(%site, %id, state = r.state.as_str(), "remote action update");
    Ok(r)
}

/// The last `n` bytes of `s`, on a character boundary.
fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// The first `n` bytes of `s`, on a character boundary.
fn head(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_action_message_lists_every_action() {
        let names: Vec<&str> = RemoteAction::ALL.iter().map(|a| a.command_name()).collect();
        assert!(
            UnknownAction("x".into())
                .to_string()
                .ends_with(&names.join(", "))
        );
    }
}
