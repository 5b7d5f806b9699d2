//! The alert engine and its notifications.
//!
//! [`evaluate`] runs after every report batch and on a timer (offline
//! needs one): it layers each site's alert rules, observes, steps every
//! (site, rule) alert ([`crate::alerts::step`]) and writes the changed
//! states *and* the notifications they cause in one durable write to the
//! store (`alert/<site>/<rule>` and `outbox/<id>`). [`deliver`] sends what
//! is due in the outbox, with retries and backoff; a dead webhook never
//! blocks report ingestion, and a restart loses nothing (an item leaves the
//! outbox only after its receiver answered 2xx).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use touchline_schemas::manifest::Language;
use touchline_schemas::{ReleaseVersion, SiteId};

use crate::alerts::{
    self, AlertState, Effective, Input, Level, Observation, Rule, Stage, Transition,
};
use crate::fleet::Fleet;
use crate::store::StoreError;

/// Longest wait between two attempts of one notification.
const MAX_BACKOFF: SignedDuration = SignedDuration::from_secs(3600);

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

fn alert_key(site: &SiteId, rule: Rule) -> String {
    format!("alert/{site}/{}", rule.name())
}

/// Every alert state, by site and rule.
pub fn load_alerts(fleet: &Fleet) -> Result<BTreeMap<(SiteId, Rule), AlertState>, StoreError> {
    let mut out = BTreeMap::new();
    for (k, v) in fleet.store.meta_scan("alert/")? {
        let mut parts = k.splitn(3, '/').skip(1);
        let (Some(site), Some(rule)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(site), Ok(rule), Ok(state)) = (
            SiteId::new(site),
            serde_json::from_value::<Rule>(Value::String(rule.to_owned())),
            serde_json::from_str::<AlertState>(&v),
        ) else {
            tracing::warn!(key = %k, "unreadable alert state skipped");
            continue;
        };
        out.insert((site, rule), state);
    }
    Ok(out)
}

/// Evaluates every site's alerts at `now`; returns how many fired or
/// resolved.
pub fn evaluate(fleet: &Fleet, now: Timestamp) -> Result<usize, StoreError> {
    let Some(checked) = fleet.manifests() else {
        return Ok(0);
    };
    let m = &checked.manifests;
    let Some(fleet_doc) = &m.fleet else {
        return Ok(0);
    };
    let lang = fleet_doc.value.language;
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
    let mut writes: Vec<(String, Option<String>)> = Vec::new();
    let mut events: Vec<(SiteId, crate::store::Event)> = Vec::new();
    let mut transitions = 0;
    for (site, doc) in &m.sites {
        let mut rules = vec![&fleet_doc.value.alerts];
        for mem in checked
            .members
            .get(site)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(g) = m.groups.get(&mem.group) {
                rules.push(&g.value.alerts);
            }
        }
        let eff = Effective::layered(rules);
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
            latest_release: latest,
            releases: &releases,
        };
        let observed: BTreeMap<Rule, Observation> = alerts::observe(&eff, &input, now, lang)
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
                    writes.push((alert_key(site, rule), None));
                    alerts.remove(&key);
                }
                continue;
            };
            if let Some(tr) = tr {
                transitions += 1;
                events.push((
                    site.clone(),
                    crate::store::Event {
                        at: now,
                        kind: "alert".into(),
                        message: event_message(&next, tr, lang),
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
                    writes.extend(outbox_rows(
                        fleet,
                        now,
                        &format!("{site}-{}", rule.name()),
                        &webhook_body(site, name, rule, &next, tr, lang),
                        || email_body(site, name, rule, &next, tr, (lang, &tz)),
                    ));
                }
                tracing::info!(site = %site, rule = rule.name(), transition = ?tr, notify, "alert");
            }
            if prev != Some(&next) {
                writes.push((alert_key(site, rule), serde_json::to_string(&next).ok()));
                alerts.insert(key, next);
            }
        }
    }
    if !writes.is_empty() || !events.is_empty() {
        fleet.store.meta_write_with_events(writes, events)?;
    }
    Ok(transitions)
}

/// The site event of an alert that fired or resolved, in the fleet's
/// language.
fn event_message(s: &AlertState, tr: Transition, lang: Language) -> String {
    let what = match (tr, s.level, lang) {
        (Transition::Fired, Level::Critical, Language::Fr) => "alerte critique",
        (Transition::Fired, Level::Warning, Language::Fr) => "avertissement",
        (Transition::Resolved, _, Language::Fr) => "alerte résolue",
        (Transition::Fired, Level::Critical, Language::En) => "critical alert",
        (Transition::Fired, Level::Warning, Language::En) => "warning",
        (Transition::Resolved, _, Language::En) => "alert resolved",
    };
    match lang {
        Language::Fr => format!("{what} : {}", s.message),
        Language::En => format!("{what}: {}", s.message),
    }
}

/// The outbox rows that send `body` to every webhook and, when email is
/// configured, `email()`, due at `now`. Keys sort by time, then `tag`.
fn outbox_rows(
    fleet: &Fleet,
    now: Timestamp,
    tag: &str,
    body: &Value,
    email: impl FnOnce() -> Target,
) -> Vec<(String, Option<String>)> {
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
            (
                format!("outbox/{:020}-{tag}-{i}", now.as_nanosecond()),
                serde_json::to_string(&item).ok(),
            )
        })
        .collect()
}

/// The Slack-compatible body: `text` plus the structured alert.
fn webhook_body(
    site: &SiteId,
    name: &str,
    rule: Rule,
    s: &AlertState,
    tr: Transition,
    lang: Language,
) -> Value {
    let text = subject(name, s, tr, lang);
    json!({
        "text": text,
        "alert": {
            "id": format!("{site}/{}/{}", rule.name(), s.since.as_second()),
            "site": site,
            "site_name": name,
            "rule": rule,
            "level": s.level,
            "state": match tr { Transition::Fired => "firing", Transition::Resolved => "resolved" },
            "value": s.value,
            "message": s.message,
            "since": s.since,
            "fired_at": s.fired_at,
            "resolved_at": s.resolved_at,
        }
    })
}

/// The subject line: `[Touchline CRITICAL] <site name> — <message>`.
fn subject(name: &str, s: &AlertState, tr: Transition, lang: Language) -> String {
    let tag = match (tr, s.level, lang) {
        (Transition::Resolved, _, Language::Fr) => "RÉSOLU",
        (Transition::Resolved, _, Language::En) => "RESOLVED",
        (Transition::Fired, Level::Warning, _) => "WARNING",
        (Transition::Fired, Level::Critical, _) => "CRITICAL",
    };
    format!("[Touchline {tag}] {name} — {}", s.message)
}

/// The email: subject, plain text and HTML, in the fleet's language.
fn email_body(
    site: &SiteId,
    name: &str,
    rule: Rule,
    s: &AlertState,
    tr: Transition,
    (lang, tz): (Language, &jiff::tz::TimeZone),
) -> Target {
    let fr = lang == Language::Fr;
    let state = match (tr, fr) {
        (Transition::Fired, true) => "active",
        (Transition::Fired, false) => "firing",
        (Transition::Resolved, true) => "résolue",
        (Transition::Resolved, false) => "resolved",
    };
    let level = match (s.level, fr) {
        (Level::Warning, true) => "avertissement",
        (Level::Warning, false) => "warning",
        (Level::Critical, true) => "critique",
        (Level::Critical, false) => "critical",
    };
    let rows: Vec<(&str, String)> = vec![
        ("Site", format!("{name} ({site})")),
        (if fr { "Alerte" } else { "Alert" }, s.message.clone()),
        (if fr { "Valeur" } else { "Value" }, s.value.clone()),
        (if fr { "Niveau" } else { "Level" }, level.to_owned()),
        (if fr { "État" } else { "State" }, state.to_owned()),
        (if fr { "Règle" } else { "Rule" }, rule.name().to_owned()),
        (
            if fr { "Depuis" } else { "Since" },
            s.since
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string(),
        ),
    ];
    let text: String = rows
        .iter()
        .map(|(k, v)| format!("{k}{}{v}\n", if fr { " : " } else { ": " }))
        .collect();
    let html_rows: String = rows
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                crate::html::escape(k),
                crate::html::escape(v)
            )
        })
        .collect();
    let subject = subject(name, s, tr, lang);
    let html = format!(
        "<!doctype html><html><body><h2>{}</h2><table>{html_rows}</table></body></html>",
        crate::html::escape(&subject)
    );
    Target::Email {
        subject,
        text,
        html,
    }
}

/// Meta key of the last day a digest was queued for (`YYYY-MM-DD`, fleet
/// time zone).
const DIGEST_MARK: &str = "digest/last";

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
    if fleet.store.meta(DIGEST_MARK)?.as_deref() == Some(day.as_str()) {
        return Ok(false);
    }
    let lang = fleet_doc.value.language;
    let d = digest_content(fleet, &fleet_doc.value.name, &local, lang)?;
    let mut writes: Vec<(String, Option<String>)> = vec![(DIGEST_MARK.into(), Some(day))];
    writes.extend(outbox_rows(
        fleet,
        now,
        "digest",
        &json!({"text": d.text, "digest": d.data}),
        || Target::Email {
            subject: d.subject.clone(),
            text: d.text.clone(),
            html: d.html.clone(),
        },
    ));
    fleet.store.meta_write(writes)?;
    tracing::info!("daily digest queued");
    Ok(true)
}

/// A digest's words and figures.
struct Digest {
    subject: String,
    text: String,
    html: String,
    data: Value,
}

/// The digest: site counts by status, the firing alerts (worst first), and
/// how many alerts fired and resolved in the last 24 hours.
fn digest_content(
    fleet: &Fleet,
    fleet_name: &str,
    local: &jiff::Zoned,
    lang: Language,
) -> Result<Digest, StoreError> {
    use crate::status::Health;
    let now = local.timestamp();
    let fr = lang == Language::Fr;
    let views = crate::status::site_views(fleet, now)?;
    let count = |h: Health| views.iter().filter(|v| v.status == h).count();
    let (online, degraded, offline) = (
        count(Health::Online),
        count(Health::Degraded),
        count(Health::Offline),
    );
    let names: BTreeMap<&SiteId, &str> = views.iter().map(|v| (&v.id, v.name.as_str())).collect();
    let day_ago = now
        .saturating_sub(SignedDuration::from_hours(24))
        .unwrap_or(now);
    let rows = sorted_alerts(fleet)?;
    let firing: Vec<&(SiteId, Rule, AlertState)> =
        rows.iter().filter(|r| r.2.state == Stage::Firing).collect();
    let fired_24h = rows
        .iter()
        .filter(|r| r.2.fired_at.is_some_and(|t| t >= day_ago))
        .count();
    let resolved_24h = rows
        .iter()
        .filter(|r| r.2.resolved_at.is_some_and(|t| t >= day_ago))
        .count();
    let tz = local.time_zone().clone();
    let when = |t: Timestamp| {
        let z = t.to_zoned(tz.clone());
        if fr {
            z.strftime("%d/%m %H:%M").to_string()
        } else {
            z.strftime("%m-%d %H:%M").to_string()
        }
    };
    let date = if fr {
        local.strftime("%d/%m/%Y").to_string()
    } else {
        local.strftime("%Y-%m-%d").to_string()
    };
    let level = |l: Level| match (l, fr) {
        (Level::Critical, true) => "CRITIQUE",
        (Level::Critical, false) => "CRITICAL",
        (Level::Warning, true) => "AVERTISSEMENT",
        (Level::Warning, false) => "WARNING",
    };
    let lines: Vec<String> = firing
        .iter()
        .map(|(site, _, a)| {
            let name = names.get(site).copied().unwrap_or(site.as_str());
            if fr {
                format!(
                    "{} {name} : {} (depuis {})",
                    level(a.level),
                    a.message,
                    when(a.fired_at.unwrap_or(a.since))
                )
            } else {
                format!(
                    "{} {name}: {} (since {})",
                    level(a.level),
                    a.message,
                    when(a.fired_at.unwrap_or(a.since))
                )
            }
        })
        .collect();
    let total = views.len();
    let subject = if fr {
        format!(
            "[Touchline] Résumé du {date} — {fleet_name} : {} alerte(s) active(s), {offline} site(s) hors ligne sur {total}",
            firing.len()
        )
    } else {
        format!(
            "[Touchline] Digest for {date} — {fleet_name}: {} firing alert(s), {offline} of {total} site(s) offline",
            firing.len()
        )
    };
    let counts = if fr {
        format!("{total} sites : {online} en ligne, {degraded} dégradé(s), {offline} hors ligne")
    } else {
        format!("{total} sites: {online} online, {degraded} degraded, {offline} offline")
    };
    let last_day = if fr {
        format!("Dernières 24 h : {fired_24h} alerte(s) déclenchée(s), {resolved_24h} résolue(s).")
    } else {
        format!("Last 24 h: {fired_24h} alert(s) fired, {resolved_24h} resolved.")
    };
    let firing_title = if fr {
        format!("Alertes actives ({}) :", firing.len())
    } else {
        format!("Firing alerts ({}):", firing.len())
    };
    let none = if fr { "aucune" } else { "none" };
    let mut text = format!("{subject}\n\n{counts}\n\n{firing_title}\n");
    if lines.is_empty() {
        text.push_str(&format!("- {none}\n"));
    }
    for l in &lines {
        text.push_str(&format!("- {l}\n"));
    }
    text.push_str(&format!("\n{last_day}\n"));
    let esc = crate::html::escape;
    let items: String = if lines.is_empty() {
        format!("<li>{none}</li>")
    } else {
        lines
            .iter()
            .map(|l| format!("<li>{}</li>", esc(l)))
            .collect()
    };
    let html = format!(
        "<!doctype html><html><body><h2>{}</h2><p>{}</p><h3>{}</h3><ul>{items}</ul><p>{}</p></body></html>",
        esc(&subject),
        esc(&counts),
        esc(&firing_title),
        esc(&last_day)
    );
    let data = json!({
        "date": local.date().to_string(),
        "sites": total,
        "online": online,
        "degraded": degraded,
        "offline": offline,
        "firing": firing.iter().map(|(site, rule, a)| json!({
            "site": site, "rule": rule, "level": a.level, "message": a.message,
            "value": a.value, "fired_at": a.fired_at,
        })).collect::<Vec<_>>(),
        "fired_24h": fired_24h,
        "resolved_24h": resolved_24h,
    });
    Ok(Digest {
        subject,
        text,
        html,
        data,
    })
}

/// Sends one email with the configured SMTP server.
async fn send_email(
    cfg: &crate::config::Email,
    subject: &str,
    text: &str,
    html: &str,
) -> Result<(), String> {
    use lettre::message::{Mailbox, MultiPart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let parse = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("`{a}`: {e}"));
    let mut b = Message::builder().from(parse(&cfg.from)?).subject(subject);
    for t in &cfg.to {
        b = b.to(parse(t)?);
    }
    let msg = b
        .multipart(MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))
        .map_err(|e| e.to_string())?;
    let host = cfg.smtp_host.as_str();
    let builder = match cfg.tls {
        crate::config::EmailTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?
        }
        crate::config::EmailTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
        }
        crate::config::EmailTls::None => {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        }
    };
    let mut builder = builder
        .port(cfg.port())
        .timeout(Some(std::time::Duration::from_secs(20)));
    if let (Some(user), Some(pf)) = (&cfg.username, &cfg.password_file) {
        let password = std::fs::read_to_string(pf)
            .map_err(|e| format!("cannot read `{}`: {e}", pf.display()))?;
        builder = builder.credentials(Credentials::new(user.clone(), password.trim().to_owned()));
    }
    builder
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| crate::fleet::error_chain(&e))
}

/// Sends the outbox items due at `now`, one by one; returns how many were
/// delivered. A failure is kept with the next attempt pushed back
/// (1 s, 2 s, 4 s… up to an hour).
pub async fn deliver(fleet: &Arc<Fleet>, client: &reqwest::Client, now: Timestamp) -> usize {
    let f = fleet.clone();
    let items = match tokio::task::spawn_blocking(move || f.store.meta_scan("outbox/")).await {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return 0;
        }
        Err(_) => return 0,
    };
    let mut delivered = 0;
    for (key, value) in items {
        let Ok(mut item) = serde_json::from_str::<Outgoing>(&value) else {
            tracing::warn!(%key, "unreadable outbox item dropped");
            let _ = write(fleet, vec![(key, None)]).await;
            continue;
        };
        if item.next_at > now {
            continue;
        }
        let (outcome, to) = match &item.target {
            Target::Webhook { url, body } => {
                let sent = client
                    .post(url)
                    .json(body)
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(crate::fleet::error_chain(&e)),
                };
                (outcome, url.clone())
            }
            Target::Email {
                subject,
                text,
                html,
            } => match &fleet.config.email {
                Some(cfg) => (
                    send_email(cfg, subject, text, html).await,
                    format!("smtp://{}:{}", cfg.smtp_host, cfg.port()),
                ),
                None => {
                    // Email was switched off since: drop it.
                    let _ = write(fleet, vec![(key, None)]).await;
                    continue;
                }
            },
        };
        match outcome {
            Ok(()) => {
                delivered += 1;
                let _ = write(fleet, vec![(key, None)]).await;
            }
            Err(e) => {
                item.attempts += 1;
                let wait =
                    SignedDuration::from_secs(1i64 << item.attempts.min(12)).min(MAX_BACKOFF);
                item.next_at = now.saturating_add(wait).unwrap_or(now);
                tracing::warn!(to = %to, attempts = item.attempts, error = %e, "notification failed; retrying later");
                item.last_error = Some(e);
                let _ = write(fleet, vec![(key, serde_json::to_string(&item).ok())]).await;
            }
        }
    }
    delivered
}

async fn write(fleet: &Arc<Fleet>, changes: Vec<(String, Option<String>)>) -> Result<(), String> {
    let f = fleet.clone();
    tokio::task::spawn_blocking(move || f.store.meta_write(changes))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
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

/// `/api/alerts`: firing ones first, then pending and resolved, newest
/// first, with the site, the rule, the level and the value.
pub fn api(fleet: &Fleet) -> Result<Value, StoreError> {
    let rows = sorted_alerts(fleet)?;
    let outbox = fleet.store.meta_scan("outbox/")?.len();
    let list: Vec<Value> = rows
        .iter()
        .map(|(site, rule, a)| {
            json!({
                "site": site,
                "rule": rule,
                "state": a.state,
                "level": a.level,
                "value": a.value,
                "message": a.message,
                "since": a.since,
                "fired_at": a.fired_at,
                "resolved_at": a.resolved_at,
                "notified_at": a.notified_at,
            })
        })
        .collect();
    let firing = rows.iter().filter(|r| r.2.state == Stage::Firing).count();
    Ok(json!({"firing": firing, "alerts": list, "outbox": outbox}))
}
