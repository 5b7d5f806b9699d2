//! The alerts page, and the alert rows the overview shows too.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use touchline_schemas::SiteId;

use crate::alerts::{Level, Stage};
use crate::app::AppState;
use crate::i18n::L10n;

use super::{Chrome, LoggedIn, page, render};

pub(super) struct AlertRow {
    pub(super) site: String,
    pub(super) site_name: String,
    pub(super) level: String,
    pub(super) level_label: String,
    pub(super) state: String,
    pub(super) state_label: String,
    pub(super) rule: String,
    pub(super) value: String,
    pub(super) message: String,
    pub(super) since: String,
}

pub(super) async fn alert_rows(state: &AppState, l: &L10n, only_active: bool) -> Vec<AlertRow> {
    let names: BTreeMap<SiteId, String> = state
        .fleet
        .manifests()
        .map(|m| {
            m.manifests
                .sites
                .iter()
                .map(|(k, v)| (k.clone(), v.value.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let Ok(mut rows) = state.read(crate::notify::sorted_alerts).await else {
        return Vec::new();
    };
    if only_active {
        rows.retain(|(_, _, a)| a.state == Stage::Firing);
    }
    let lang = match l.lang {
        crate::i18n::Lang::Fr => touchline_schemas::manifest::Language::Fr,
        crate::i18n::Lang::En => touchline_schemas::manifest::Language::En,
    };
    rows.into_iter()
        .map(|(site, rule, a)| (site, rule, a.words(lang), a))
        .map(|(site, rule, words, a)| AlertRow {
            site_name: names
                .get(&site)
                .cloned()
                .unwrap_or_else(|| site.to_string()),
            site: site.to_string(),
            level: match a.level {
                Level::Warning => "warning".into(),
                Level::Critical => "critical".into(),
            },
            level_label: l
                .t(match a.level {
                    Level::Warning => "warning",
                    Level::Critical => "critical",
                })
                .to_owned(),
            state: match a.state {
                Stage::Firing => "firing".into(),
                Stage::Pending => "pending".into(),
                Stage::Resolved => "resolved".into(),
            },
            state_label: l
                .t(match a.state {
                    Stage::Firing => "firing",
                    Stage::Pending => "pending",
                    Stage::Resolved => "resolved",
                })
                .to_owned(),
            rule: l.t(&format!("rule_{}", rule.name())).to_owned(),
            value: words.value,
            message: words.message,
            since: l.ago(&a.since),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    c: Chrome,
    rows: Vec<AlertRow>,
}

/// `GET /alerts`.
pub async fn alerts(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let c = page(&state, &headers, &s, "/alerts", "alerts", true);
    let rows = alert_rows(&state, &c.l, false).await;
    render(&AlertsPage { c, rows })
}
