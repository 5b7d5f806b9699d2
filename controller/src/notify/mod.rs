//! The alert engine and its notifications, in three parts:
//!
//! - the engine (here): [`evaluate`] runs after every report batch and on
//!   a timer (offline needs one): it layers each site's alert rules,
//!   observes, steps every (site, rule) alert ([`crate::alerts::step`]) and
//!   writes the changed states *and* the notifications they cause in one
//!   durable write ([`crate::store::Bookkeeping`]); [`digest`] queues the
//!   daily digest;
//! - the texts (`render.rs`): events, webhook bodies, emails, the digest,
//!   with every word from [`crate::i18n::Notices`];
//! - delivery (`deliver.rs`): [`deliver`] sends what is due through a
//!   [`Sender`], with retries and backoff; a dead webhook never blocks
//!   report ingestion, and a restart loses nothing (an item leaves the
//!   outbox only after its receiver took it).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};
use touchline_schemas::manifest::Language;
use touchline_schemas::{ReleaseVersion, SiteId};

use crate::alerts::{self, AlertState, Input, Observation, Rule, Stage, Transition};
use crate::fleet::Fleet;
use crate::i18n::Notices;
use crate::outbox::{OutboxId, Outgoing, Target};
use crate::store::{Bookkeeping, StoreError};

mod deliver;
mod render;

pub use deliver::{NetSender, SendError, Sender, deliver};
use render::{digest_content, email_body, event_message, webhook_body};

/// Every alert state, by site and rule.
pub fn load_alerts(fleet: &Fleet) -> Result<BTreeMap<(SiteId, Rule), AlertState>, StoreError> {
    fleet.store.alert_states()
}

/// Evaluates every site's alerts at `now`; returns how many fired or
/// resolved. One `alerts` span per evaluation, a `site` span per site.
#[tracing::instrument(name = "alerts", skip_all)]
pub fn evaluate(fleet: &Fleet, now: Timestamp) -> Result<usize, StoreError> {
    let Some(checked) = fleet.manifests() else {
        return Ok(0);
    };
    let m = &checked.manifests;
    let Some(fleet_doc) = &m.fleet else {
        return Ok(0);
    };
    let n = Notices(fleet_doc.value.language);
    let tz = fleet.time_zone();
    let releases: Vec<ReleaseVersion> = m.releases.keys().cloned().collect();
    let latest = releases.iter().max();
    let latest_states: BTreeMap<SiteId, crate::store::SiteState> = fleet
        .store
        .latest_all()?
        .into_iter()
        .map(|s| (s.site.clone(), s))
        .collect();
    let mut alerts = load_alerts(fleet)?;
    let mut book = Bookkeeping::default();
    let mut transitions = 0;
    for (site, doc) in &m.sites {
        let _site = tracing::info_span!("site", site = %site).entered();
        let eff = fleet.thresholds(Some(&checked), site);
        let state = latest_states.get(site);
        let last_seen = state
            .map(|s| s.received_at)
            .into_iter()
            .chain(fleet.last_poll(site))
            .max();
        let input = Input {
            status: state.map(|s| &s.report.status),
            metrics: state.and_then(|s| s.metrics.as_ref()),
            last_seen,
            listening_since: fleet.started_at,
            latest_release: latest,
            releases: &releases,
        };
        let observed: BTreeMap<Rule, Observation> = alerts::observe_in_both(&eff, &input, now, n.0)
            .into_iter()
            .map(|o| (o.rule, o))
            .collect();
        let mut rules_here: Vec<Rule> = observed.keys().copied().collect();
        rules_here.extend(
            alerts
                .range((site.clone(), Rule::Temperature)..)
                .take_while(|((s, _), _)| s == site)
                .map(|((_, r), _)| *r),
        );
        rules_here.sort();
        rules_here.dedup();
        // A silent box's last metrics are stale: its other alerts neither
        // fire nor resolve until it reports again.
        let offline = observed.contains_key(&Rule::Offline);
        for rule in rules_here {
            if offline && rule != Rule::Offline {
                continue;
            }
            let key = (site.clone(), rule);
            let prev = alerts.get(&key);
            let (next, tr) = alerts::step(prev, observed.get(&rule), rule.hold(eff.hold), now);
            let Some(mut next) = next else {
                if prev.is_some() {
                    book.alerts.push((site.clone(), rule, None));
                    alerts.remove(&key);
                }
                continue;
            };
            if let Some(tr) = tr {
                transitions += 1;
                book.events.push((
                    site.clone(),
                    crate::store::Event {
                        at: now,
                        kind: crate::store::EventKind::Alert,
                        message: event_message(&next, tr, Notices(Language::En)),
                        fr: Some(event_message(&next, tr, Notices(Language::Fr))),
                    },
                ));
                let notify = match tr {
                    Transition::Fired => alerts::due_for_notice(&next, eff.cooldown, now),
                    // A resolve is told when its firing was.
                    Transition::Resolved => next
                        .notified_at
                        .zip(next.fired_at)
                        .is_some_and(|(n, f)| n >= f),
                };
                if notify {
                    if tr == Transition::Fired {
                        next.notified_at = Some(now);
                    }
                    let name = &doc.value.name;
                    book.outbox.extend(outbox_rows(
                        fleet,
                        now,
                        &format!("{site}-{}", rule.name()),
                        &webhook_body(site, name, rule, &next, tr, n),
                        || email_body(site, name, rule, &next, tr, (n, &tz)),
                    ));
                }
                tracing::info!(site = %site, rule = rule.name(), transition = ?tr, notify, "alert");
            }
            if prev != Some(&next) {
                book.alerts.push((site.clone(), rule, Some(next.clone())));
                alerts.insert(key, next);
            }
        }
    }
    if !book.alerts.is_empty() || !book.events.is_empty() || !book.outbox.is_empty() {
        fleet.store.write_bookkeeping(book)?;
    }
    Ok(transitions)
}

/// The outbox rows that send `body` to every webhook and, when email is
/// configured, `email()`, due at `now`. Keys sort by time, then `tag`.
fn outbox_rows(
    fleet: &Fleet,
    now: Timestamp,
    tag: &str,
    body: &Value,
    email: impl FnOnce() -> Target,
) -> Vec<(OutboxId, Option<Outgoing>)> {
    let mut targets: Vec<Target> = fleet
        .config
        .webhooks
        .iter()
        .map(|url| Target::Webhook {
            url: url.clone(),
            body: body.clone(),
        })
        .collect();
    if fleet.config.email.is_some() {
        targets.push(email());
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            let item = Outgoing {
                target,
                attempts: 0,
                next_at: now,
                last_error: None,
            };
            (OutboxId::new(now, tag, i), Some(item))
        })
        .collect()
}

/// Queues the daily digest when it is due: once per day, at or after
/// `digest_at` in the fleet's time zone. The digest and the day's mark are
/// one atomic write, so a restart neither loses it (the outbox keeps it)
/// nor sends it twice (the mark says it was queued). A controller that was
/// down at the digest time sends it when it comes back, the same day; a
/// day it was down entirely gets none. Returns whether one was queued.
pub fn digest(fleet: &Fleet, now: Timestamp) -> Result<bool, StoreError> {
    let Some(at) = fleet.config.digest_time() else {
        return Ok(false);
    };
    let Some(checked) = fleet.manifests() else {
        return Ok(false);
    };
    let Some(fleet_doc) = &checked.manifests.fleet else {
        return Ok(false);
    };
    let local = now.to_zoned(fleet.time_zone());
    if local.time() < at {
        return Ok(false);
    }
    let day = local.date().to_string();
    if fleet.store.digest_day()?.as_deref() == Some(day.as_str()) {
        return Ok(false);
    }
    let n = Notices(fleet_doc.value.language);
    let d = digest_content(fleet, &fleet_doc.value.name, &local, n)?;
    let outbox = outbox_rows(
        fleet,
        now,
        "digest",
        &json!({"text": d.text, "digest": d.data}),
        || Target::Email {
            subject: d.subject.clone(),
            text: d.text.clone(),
            html: d.html.clone(),
        },
    );
    fleet.store.write_bookkeeping(Bookkeeping {
        outbox,
        digest_day: Some(day),
        ..Bookkeeping::default()
    })?;
    tracing::info!("daily digest queued");
    Ok(true)
}

/// Every alert, firing first, then pending and resolved; the worst and
/// newest first within each.
pub fn sorted_alerts(fleet: &Fleet) -> Result<Vec<(SiteId, Rule, AlertState)>, StoreError> {
    let mut rows: Vec<(SiteId, Rule, AlertState)> = load_alerts(fleet)?
        .into_iter()
        .map(|((s, r), a)| (s, r, a))
        .collect();
    let rank = |s: Stage| match s {
        Stage::Firing => 0,
        Stage::Pending => 1,
        Stage::Resolved => 2,
    };
    rows.sort_by(|a, b| {
        rank(a.2.state)
            .cmp(&rank(b.2.state))
            .then(b.2.level.cmp(&a.2.level))
            .then(b.2.since.cmp(&a.2.since))
    });
    Ok(rows)
}

/// One alert as `/api/alerts` shows it (times not reached yet are `null`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRow {
    /// The site.
    pub site: SiteId,
    /// The rule.
    pub rule: Rule,
    /// Pending, firing or resolved.
    pub state: Stage,
    /// Warning or critical.
    pub level: crate::alerts::Level,
    /// The value observed.
    pub value: String,
    /// What is wrong.
    pub message: String,
    /// Since when it is in this state.
    pub since: Timestamp,
    /// When it fired.
    pub fired_at: Option<Timestamp>,
    /// When it resolved.
    pub resolved_at: Option<Timestamp>,
    /// When its notification was queued.
    pub notified_at: Option<Timestamp>,
}

/// `/api/alerts`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alerts {
    /// How many fire.
    pub firing: usize,
    /// Firing first, then pending and resolved; worst and newest first.
    pub alerts: Vec<AlertRow>,
    /// Notifications waiting for delivery.
    pub outbox: usize,
}

/// `/api/alerts`: firing ones first, then pending and resolved, newest
/// first, with the site, the rule, the level and the value.
pub fn api(fleet: &Fleet) -> Result<Alerts, StoreError> {
    let rows = sorted_alerts(fleet)?;
    let outbox = fleet.store.outbox_len()?;
    let firing = rows.iter().filter(|r| r.2.state == Stage::Firing).count();
    Ok(Alerts {
        firing,
        alerts: rows
            .into_iter()
            .map(|(site, rule, a)| AlertRow {
                site,
                rule,
                state: a.state,
                level: a.level,
                value: a.value,
                message: a.message,
                since: a.since,
                fired_at: a.fired_at,
                resolved_at: a.resolved_at,
                notified_at: a.notified_at,
            })
            .collect(),
        outbox,
    })
}
