//! The notifications' texts: the site event of an alert, the webhook body,
//! the email (subject, plain text, HTML) and the daily digest, in the
//! fleet's language (every word comes from [`crate::i18n::Notices`]).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use touchline_schemas::SiteId;

use super::sorted_alerts;
use crate::alerts::{AlertState, Level, Rule, Stage, Transition};
use crate::fleet::Fleet;
use crate::html::escape;
use crate::i18n::Notices;
use crate::outbox::Target;
use crate::store::StoreError;

/// The site event of an alert that fired or resolved, in `n`'s language.
pub(super) fn event_message(s: &AlertState, tr: Transition, n: Notices) -> String {
    let what = n.t(match (tr, s.level) {
        (Transition::Fired, Level::Critical) => "event_critical",
        (Transition::Fired, Level::Warning) => "event_warning",
        (Transition::Resolved, _) => "event_resolved",
    });
    n.pair(what, &s.words(n.0).message)
}

/// The Slack-compatible body: `text` plus the structured alert.
pub(super) fn webhook_body(
    site: &SiteId,
    name: &str,
    rule: Rule,
    s: &AlertState,
    tr: Transition,
    n: Notices,
) -> Value {
    let text = subject(name, s, tr, n);
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
fn subject(name: &str, s: &AlertState, tr: Transition, n: Notices) -> String {
    let tag = n.t(match (tr, s.level) {
        (Transition::Resolved, _) => "tag_resolved",
        (Transition::Fired, Level::Warning) => "tag_warning",
        (Transition::Fired, Level::Critical) => "tag_critical",
    });
    format!("[Touchline {tag}] {name} — {}", s.message)
}

/// The email: subject, plain text and HTML, in the fleet's language.
pub(super) fn email_body(
    site: &SiteId,
    name: &str,
    rule: Rule,
    s: &AlertState,
    tr: Transition,
    (n, tz): (Notices, &jiff::tz::TimeZone),
) -> Target {
    let state = n.t(match tr {
        Transition::Fired => "firing",
        Transition::Resolved => "resolved",
    });
    let level = n.t(match s.level {
        Level::Warning => "warning",
        Level::Critical => "critical",
    });
    let rows: Vec<(&str, String)> = vec![
        (n.t("site"), format!("{name} ({site})")),
        (n.t("alert"), s.message.clone()),
        (n.t("value"), s.value.clone()),
        (n.t("level"), level.to_owned()),
        (n.t("state"), state.to_owned()),
        (n.t("rule"), rule.name().to_owned()),
        (
            n.t("since"),
            s.since
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string(),
        ),
    ];
    let text: String = rows.iter().map(|(k, v)| n.pair(k, v) + "\n").collect();
    let html_rows: String = rows
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let subject = subject(name, s, tr, n);
    let html = format!(
        "<!doctype html><html><body><h2>{}</h2><table>{html_rows}</table></body></html>",
        escape(&subject)
    );
    Target::Email {
        subject,
        text,
        html,
    }
}

/// A digest's words and figures.
pub(super) struct Digest {
    pub(super) subject: String,
    pub(super) text: String,
    pub(super) html: String,
    pub(super) data: Value,
}

/// The digest: site counts by status, the firing alerts (worst first), and
/// how many alerts fired and resolved in the last 24 hours.
pub(super) fn digest_content(
    fleet: &Fleet,
    fleet_name: &str,
    local: &jiff::Zoned,
    n: Notices,
) -> Result<Digest, StoreError> {
    use crate::status::Health;
    let now = local.timestamp();
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
    let when = |t: Timestamp| n.day_time(&t.to_zoned(tz.clone()));
    let date = n.date(local);
    let level = |l: Level| {
        n.t(match l {
            Level::Critical => "digest_critical",
            Level::Warning => "digest_warning",
        })
    };
    let lines: Vec<String> = firing
        .iter()
        .map(|(site, _, a)| {
            let name = names.get(site).copied().unwrap_or(site.as_str());
            n.digest_line(
                level(a.level),
                name,
                &a.message,
                &when(a.fired_at.unwrap_or(a.since)),
            )
        })
        .collect();
    let total = views.len();
    let subject = n.digest_subject(&date, fleet_name, firing.len(), offline, total);
    let counts = n.digest_counts(total, online, degraded, offline);
    let last_day = n.digest_last_day(fired_24h, resolved_24h);
    let firing_title = n.digest_firing_title(firing.len());
    let none = n.t("none");
    let mut text = format!("{subject}\n\n{counts}\n\n{firing_title}\n");
    if lines.is_empty() {
        text.push_str(&format!("- {none}\n"));
    }
    for l in &lines {
        text.push_str(&format!("- {l}\n"));
    }
    text.push_str(&format!("\n{last_day}\n"));
    let esc = escape;
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
