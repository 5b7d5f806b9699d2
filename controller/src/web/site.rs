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

use super::{Chrome, LoggedIn, health_score, page, phase_shown, render, status_label};

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
    /// What the box says now (or last said): label, value.
    now_rows: Vec<(String, String)>,
    /// When the metrics were measured, and whether that is current.
    measured: String,
    /// Whether the box is heard from within two poll intervals.
    current: bool,
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

/// A line chart of `(t, value)` as an SVG, server-rendered: a value axis
/// (0, half, top, with the unit) and a time axis (start, middle, end), the
/// latest value written next to its point, a `<title>` per point (hovering
/// shows the value without JavaScript) and a text alternative that says
/// what the chart shows (latest, lowest, highest). One point is a marker
/// with its value, not an empty box.
fn chart_svg(
    name: &str,
    points: &[(Timestamp, f64)],
    from: Timestamp,
    to: Timestamp,
    max: f64,
    l: &L10n,
    unit: &str,
) -> String {
    let (w, h) = (600.0_f64, 170.0_f64);
    let (left, right, top, bottom) = (58.0_f64, 70.0_f64, 10.0_f64, 24.0_f64);
    let (pw, ph) = (w - left - right, h - top - bottom);
    #[allow(clippy::cast_precision_loss)]
    let span = (to.as_second() - from.as_second()).max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let x = |t: Timestamp| left + (t.as_second() - from.as_second()) as f64 / span * pw;
    let y = |v: f64| top + ph - (v / max).clamp(0.0, 1.0) * ph;
    let value = |v: f64| format!("{} {unit}", l.num(v, 1));
    let summary = match points.last() {
        None => l.pair(name, l.t("no_data")),
        Some((t, last)) => {
            let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let figures = format!(
                "{} {} ({}) · {} {} · {} {} · {} {}",
                l.t("chart_last"),
                value(*last),
                l.time(t),
                l.t("chart_min"),
                value(lo),
                l.t("chart_max"),
                value(hi),
                points.len(),
                l.t("chart_points"),
            );
            l.pair(name, &figures)
        }
    };
    let summary = crate::html::escape(&summary);
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{summary}\"><title>{summary}</title><rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafbfc\" stroke=\"#d0d7de\"/>"
    );
    // The value axis: 0, half, top.
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#d0d7de\" stroke-dasharray=\"3 3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#3d444d\">{}</text>",
            left + pw,
            left - 4.0,
            yy + 4.0,
            crate::html::escape(&format!("{} {unit}", l.num(v, 0)))
        ));
    }
    // The time axis: start, middle, end.
    #[allow(clippy::cast_possible_truncation)]
    let mid = Timestamp::from_second(from.as_second() + (to.as_second() - from.as_second()) / 2)
        .unwrap_or(from);
    for (t, anchor) in [(from, "start"), (mid, "middle"), (to, "end")] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#3d444d\">{}</text>",
            x(t),
            h - 6.0,
            l.time(&t)
        ));
    }
    if points.len() > 1 {
        let line: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/>",
            line.join(" ")
        ));
    }
    // At most ~150 hover targets; one point is a visible marker.
    let r = if points.len() == 1 { 4 } else { 2 };
    let step = (points.len() / 150).max(1);
    for (t, v) in points.iter().step_by(step) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"#0969da\"><title>{} — {}</title></circle>",
            x(*t),
            y(*v),
            l.time(t),
            value(*v)
        ));
    }
    if let Some((t, v)) = points.last() {
        s.push_str(&format!(
            "<text class=\"last\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"600\" fill=\"#0550ae\">{}</text>",
            x(*t) + 6.0,
            y(*v) + 4.0,
            value(*v)
        ));
    }
    s.push_str("</svg>");
    s
}

/// The site's figures as its last report gives them, with their units,
/// and where and what it is.
fn now_rows(v: &crate::status::SiteView, l: &L10n) -> Vec<(String, String)> {
    let m = v.metrics.as_ref();
    let text = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("–").to_owned();
    #[allow(clippy::cast_precision_loss)]
    let gb = |b: u64| l.num(b as f64 / 1e9, 1);
    let disk = match m.map(|m| (m.disk_used_bytes, m.disk_total_bytes)) {
        Some((Some(u), Some(t))) if t > 0 => {
            #[allow(clippy::cast_precision_loss)]
            let pct = u as f64 * 100.0 / t as f64;
            format!("{} / {} {} ({} %)", gb(u), gb(t), l.t("gb"), l.num(pct, 0))
        }
        _ => "–".to_owned(),
    };
    let location = v.location.as_ref().map(|loc| {
        [loc.city.as_str(), loc.region.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let os = m.and_then(|m| match (&m.os, &m.kernel) {
        (Some(os), Some(k)) => Some(format!("{os} · Linux {k}")),
        (Some(os), None) => Some(os.clone()),
        (None, Some(k)) => Some(format!("Linux {k}")),
        (None, None) => None,
    });
    vec![
        (
            l.t("cpu").to_owned(),
            l.opt(m.and_then(|m| m.cpu_percent), 1, "%"),
        ),
        (
            l.t("memory").to_owned(),
            l.opt(m.and_then(|m| m.memory_percent), 1, "%"),
        ),
        (
            l.t("temperature").to_owned(),
            l.opt(m.and_then(|m| m.temperature_c), 1, "°C"),
        ),
        (l.t("disk").to_owned(), disk),
        (
            l.t("uptime").to_owned(),
            m.and_then(|m| m.uptime_secs)
                .map_or_else(|| "–".to_owned(), |s| l.span(s)),
        ),
        (l.t("location").to_owned(), text(location.as_deref())),
        (
            l.t("hardware").to_owned(),
            text(m.and_then(|m| m.hardware.as_deref())),
        ),
        (l.t("os").to_owned(), text(os.as_deref())),
        (
            l.t("agent_version").to_owned(),
            text(v.agent_version.as_deref()),
        ),
        (
            l.t("release").to_owned(),
            text(v.applied.release.as_deref()),
        ),
    ]
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
    let now_rows = now_rows(v, &c.l);
    let measured = detail
        .metrics_at
        .map_or_else(|| c.l.t("never").to_owned(), |t| c.l.ago(&t));
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
                chart_svg(c.l.t(key), &s, from, now, max, &c.l, unit),
            ));
        }
    }
    let events = detail
        .events
        .iter()
        .map(|e| {
            (
                c.l.time(&e.at),
                c.l.t(&format!("ev_{}", e.kind.as_str())).to_owned(),
                e.text(c.l.lang).to_owned(),
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
        health: health_score(v),
        last_seen: c.l.ago_opt(&v.last_seen),
        phase: phase_shown(&c.l, v),
        labels: v
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        groups: v.groups.join(", "),
        desired,
        now_rows,
        measured,
        current: v.current,
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
