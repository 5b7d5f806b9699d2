//! One site: identity, desired vs applied with their origins, charts,
//! events; and the history downloads (the site's and the fleet's).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use touchline_schemas::SiteId;

use crate::app::AppState;
use crate::i18n::L10n;

use super::{Chrome, LoggedIn, health_score, page, render, status_label};

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    c: Chrome,
    id: String,
    name: String,
    club: String,
    status: String,
    status_label: String,
    health: u8,
    last_seen: String,
    phase: String,
    labels: String,
    groups: String,
    desired: Vec<(String, String, String, String)>,
    conditions: Vec<String>,
    last_error: String,
    /// Range and whether it is shown.
    ranges: Vec<(&'static str, bool)>,
    charts: Vec<(String, String, String)>,
    events: Vec<(String, String, String)>,
    /// Videos wanted: id, path, added by.
    video_rows: Vec<(String, String, String)>,
    /// `configuration.json` leaves: pointer, value, set by.
    config_rows: Vec<(String, String, String)>,
    /// An admin: the "enroll a box" button.
    can_enroll: bool,
    /// An operator: the remote action form.
    can_act: bool,
    /// The actions the site's bundle allows: value, label.
    action_choices: Vec<(String, String)>,
    /// Recent remote actions.
    actions: Vec<super::actions::ActionRow>,
}

#[derive(Template)]
#[template(path = "enroll.html")]
struct EnrollPage {
    c: Chrome,
    id: String,
    code: String,
    until: String,
    install: String,
    enroll: String,
}

/// `POST /sites/{id}/enroll` (admin): mints a one-time enrollment code
/// and shows it once (never cached).
pub async fn enroll(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<super::CsrfForm>,
) -> Response {
    if let Err(r) = super::act(&s, &f, crate::config::Role::Admin) {
        return *r;
    }
    let Ok(site) = SiteId::new(&id) else {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    };
    if !state.fleet.knows_site(&site) {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    }
    let path = format!("/sites/{id}");
    let c = page(&state, &headers, &s, &path, "sites", false);
    let url = state.public_url(&headers);
    let fleet = state.fleet.clone();
    let ttl = fleet.config.enrollment.ttl.to_std();
    let who = s.name.clone();
    let minted = tokio::task::spawn_blocking(move || {
        crate::enroll::mint(&*fleet.store, &site, ttl, &who, Timestamp::now())
    })
    .await;
    let minted = match minted {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "minting an enrollment code failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot mint a code: the store failed",
            )
                .into_response();
        }
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "cannot mint a code").into_response(),
    };
    tracing::info!(operator = %s.name, site = %minted.site, "enrollment code minted from the status page");
    let code = minted.code.reveal();
    let page = EnrollPage {
        id: minted.site.to_string(),
        until: c.l.time(&minted.expires_at),
        install: format!("curl -fsSL {url}/install.sh | sudo sh -s -- {code}"),
        enroll: format!("sudo touchline-agent enroll --controller {url} {code} --start"),
        code,
        c,
    };
    let mut resp = render(&page);
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /sites/{id}` query.
#[derive(Debug, Deserialize)]
pub struct SiteQuery {
    range: Option<String>,
}

/// A line chart of `(t, value)` as an SVG (server-rendered; each point has
/// a `<title>` so that hovering shows the value without JavaScript).
fn chart_svg(
    points: &[(Timestamp, f64)],
    from: Timestamp,
    to: Timestamp,
    max: f64,
    l: &L10n,
    unit: &str,
) -> String {
    let (w, h) = (600.0_f64, 140.0_f64);
    #[allow(clippy::cast_precision_loss)]
    let span = (to.as_second() - from.as_second()).max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let x = |t: Timestamp| (t.as_second() - from.as_second()) as f64 / span * w;
    let y = |v: f64| h - (v / max).clamp(0.0, 1.0) * h;
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fafbfc\" stroke=\"#d0d7de\"/><polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/>",
        line.join(" ")
    );
    // At most ~150 hover targets.
    let step = (points.len() / 150).max(1);
    for (t, v) in points.iter().step_by(step) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#0969da\"><title>{} — {} {unit}</title></circle>",
            x(*t),
            y(*v),
            l.time(t),
            l.num(*v, 1)
        ));
    }
    s.push_str("</svg>");
    s
}

/// A chart: metric id, label key, how to read it from a point, top of
/// the scale, unit.
type ChartDef = (
    &'static str,
    &'static str,
    Box<dyn Fn(&crate::history::HistoryPoint) -> Option<f64>>,
    f64,
    &'static str,
);

/// `GET /sites/{id}`.
pub async fn site(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SiteQuery>,
) -> Response {
    let path = format!("/sites/{id}");
    let c = page(&state, &headers, &s, &path, "sites", false);
    let Ok(site) = SiteId::new(&id) else {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    };
    let now = c.l.now;
    let site2 = site.clone();
    let detail = match state
        .read(move |f| crate::status::site_detail(f, &site2, now))
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such site").into_response(),
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store").into_response();
        }
    };
    let v = &detail.site;
    let origins = detail.origins.clone().unwrap_or_default();
    let origin = |path: &str| -> String {
        origins
            .pointer(path)
            .and_then(|o| {
                o.as_str()
                    .map(str::to_owned)
                    .or_else(|| o["set_by"].as_str().map(str::to_owned))
            })
            .unwrap_or_default()
    };
    let (applied, desired_v) = (&v.applied, &v.desired);
    let report = detail.report.as_ref().map(|r| &r.status);
    let dash = |n: Option<u64>| n.map_or_else(|| "–".to_owned(), |n| n.to_string());
    let desired = vec![
        (
            c.l.t("serial").to_owned(),
            dash(desired_v.serial),
            dash(applied.serial),
            String::new(),
        ),
        (
            c.l.t("release").to_owned(),
            desired_v.release.clone().unwrap_or_else(|| "–".into()),
            applied.release.clone().unwrap_or_else(|| "–".into()),
            origin("/software/set_by"),
        ),
        (
            c.l.t("videos").to_owned(),
            detail
                .bundle
                .as_ref()
                .map_or(0, |b| b.files.len())
                .to_string(),
            v.metrics
                .as_ref()
                .and_then(|m| m.video_count)
                .map_or_else(|| "–".into(), |n| n.to_string()),
            String::new(),
        ),
    ];
    let conditions: Vec<String> = v.conditions.clone();
    let range = match q.range.as_deref() {
        Some("7d") => "7d",
        Some("30d") => "30d",
        _ => "24h",
    };
    let hours = match range {
        "7d" => 24 * 7,
        "30d" => 24 * 30,
        _ => 24,
    };
    let from = now
        .saturating_sub(SignedDuration::from_hours(hours))
        .unwrap_or(now);
    // One point per pixel of the 600-wide chart is all it can show.
    let site3 = site.clone();
    let points = crate::history::for_display(
        state
            .read(move |f| f.store.history(&site3, from, now))
            .await
            .unwrap_or_default(),
        from,
        now,
        600,
    );
    let mut charts = Vec::new();
    let series =
        |f: &dyn Fn(&crate::history::HistoryPoint) -> Option<f64>| -> Vec<(Timestamp, f64)> {
            points
                .iter()
                .filter_map(|p| f(p).map(|v| (p.at, v)))
                .collect()
        };
    #[allow(clippy::cast_precision_loss)]
    let defs: [ChartDef; 4] = [
        (
            "cpu",
            "cpu",
            Box::new(|p| p.cpu_percent.map(f64::from)),
            100.0,
            "%",
        ),
        (
            "memory",
            "memory",
            Box::new(|p| p.memory_percent.map(f64::from)),
            100.0,
            "%",
        ),
        (
            "temperature",
            "temperature",
            Box::new(|p| p.temperature_c.map(f64::from)),
            100.0,
            "°C",
        ),
        (
            "disk",
            "disk",
            Box::new(|p| match (p.disk_used_bytes, p.disk_total_bytes) {
                (Some(u), Some(t)) if t > 0 => Some(u as f64 * 100.0 / t as f64),
                _ => None,
            }),
            100.0,
            "%",
        ),
    ];
    for (metric, key, f, max, unit) in defs {
        let s = series(&*f);
        if !s.is_empty() {
            charts.push((
                metric.to_owned(),
                c.l.t(key).to_owned(),
                chart_svg(&s, from, now, max, &c.l, unit),
            ));
        }
    }
    let events = detail
        .events
        .iter()
        .map(|e| {
            (
                c.l.time(&e.at),
                e.kind.as_str().to_owned(),
                e.message.clone(),
            )
        })
        .collect();
    let rows = |key: &str| -> Vec<(String, String, String)> {
        origins[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let col = |i: usize| r[i].as_str().unwrap_or("").to_owned();
                (col(0), col(1), col(2))
            })
            .collect()
    };
    let (video_rows, config_rows) = (rows("video_rows"), rows("config_rows"));
    let (action_choices, actions) = super::actions::for_site(&state, &site, &c.l).await;
    let page = SitePage {
        can_act: s.role >= crate::config::Role::Operator && !action_choices.is_empty(),
        action_choices,
        actions,
        video_rows,
        config_rows,
        id: site.to_string(),
        name: v.name.clone(),
        club: v.club.clone(),
        status: v.status.as_str().to_owned(),
        status_label: status_label(&c.l, v.status).to_owned(),
        health: health_score(v, now),
        last_seen: c.l.ago_opt(&v.last_seen),
        phase: v.phase.clone().unwrap_or_default(),
        labels: v
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        groups: v.groups.join(", "),
        desired,
        conditions,
        last_error: report
            .and_then(|r| r.last_error.clone())
            .unwrap_or_default(),
        ranges: ["24h", "7d", "30d"]
            .into_iter()
            .map(|r| (r, r == range))
            .collect(),
        charts,
        events,
        can_enroll: s.role >= crate::config::Role::Admin,
        c,
    };
    render(&page)
}

/// `GET /sites/{id}/history.csv?range=`: the history export for a logged-in
/// reader (the JSON API wants a bearer token, which a browser link lacks).
pub async fn history_csv(
    _who: LoggedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SiteQuery>,
) -> Response {
    let Ok(site) = SiteId::new(&id) else {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    };
    if !state.fleet.knows_site(&site) {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    }
    let (from, now) = export_range(q.range.as_deref());
    let store = state.fleet.store.clone();
    let site2 = site.clone();
    let points = tokio::task::spawn_blocking(move || store.history(&site2, from, now)).await;
    let Ok(Ok(points)) = points else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the history").into_response();
    };
    (
        crate::status::Export::Csv.headers(&format!("{site}-history")),
        crate::status::history_csv(&points),
    )
        .into_response()
}

/// The span of a history export link: `range` is `24h` (default), `7d`,
/// `30d` or `365d`; returns (from, now).
fn export_range(range: Option<&str>) -> (Timestamp, Timestamp) {
    let days = match range {
        Some("7d") => 7,
        Some("30d") => 30,
        Some("365d") => 365,
        _ => 1,
    };
    let now = Timestamp::now();
    let from = now
        .saturating_sub(SignedDuration::from_hours(24 * days))
        .unwrap_or(now);
    (from, now)
}

/// `GET /history.csv?range=24h|7d|30d|365d`: every site's history for a
/// logged-in reader, streamed (a `site` column first).
pub async fn fleet_history_csv(
    _who: LoggedIn,
    State(state): State<AppState>,
    Query(q): Query<SiteQuery>,
) -> Response {
    let (from, now) = export_range(q.range.as_deref());
    (
        crate::status::Export::Csv.headers("fleet-history"),
        crate::status::fleet_history_body(
            state.fleet.store.clone(),
            state.fleet.site_ids(),
            from,
            now,
            crate::status::Export::Csv,
        ),
    )
        .into_response()
}
