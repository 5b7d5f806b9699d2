//! The overview: counts, alerts, versions, health, the map, commits.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::config::Role;
use crate::status::{Health, SiteView};
use crate::store::CommitState;

use super::alerts::{AlertRow, alert_rows};
use super::{Chrome, LoggedIn, escape, health_score, page, render};

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    c: Chrome,
    total: usize,
    online: usize,
    degraded: usize,
    overdue: usize,
    offline: usize,
    stale: usize,
    alerts: Vec<AlertRow>,
    versions: Vec<(String, usize)>,
    health_dist: Vec<(String, usize)>,
    commits: Vec<CommitRow>,
    map_svg: String,
    can_act: bool,
}

struct CommitRow {
    id: String,
    at: String,
    summary: String,
    state: String,
    progress: String,
    blocked: String,
}

/// The map of France: one dot per site from its coordinates, coloured by
/// status, on a rough outline of the country (inline SVG, no tiles).
fn map_svg(views: &[SiteView]) -> String {
    // Equirectangular over metropolitan France, x scaled by cos(46.5°).
    let (lon0, lon1, lat0, lat1) = (-5.3_f64, 9.8_f64, 41.2_f64, 51.2_f64);
    let k = 46.5_f64.to_radians().cos();
    let (w, h) = (
        ((lon1 - lon0) * k * 40.0).round(),
        ((lat1 - lat0) * 40.0).round(),
    );
    let xy = |lon: f64, lat: f64| ((lon - lon0) * k * 40.0, (lat1 - lat) * 40.0);
    let outline: [(f64, f64); 22] = [
        (2.55, 51.09),
        (4.15, 50.0),
        (5.8, 49.55),
        (6.5, 49.45),
        (8.2, 48.95),
        (7.55, 47.6),
        (6.95, 47.45),
        (6.1, 46.2),
        (7.0, 45.9),
        (7.65, 44.2),
        (7.5, 43.78),
        (6.2, 43.1),
        (4.6, 43.35),
        (3.1, 43.1),
        (3.15, 42.45),
        (-1.75, 43.35),
        (-1.2, 44.6),
        (-1.2, 46.2),
        (-2.5, 47.3),
        (-4.75, 48.4),
        (-1.6, 49.7),
        (1.6, 50.9),
    ];
    let pts: Vec<String> = outline
        .iter()
        .map(|(lo, la)| {
            let (x, y) = xy(*lo, *la);
            format!("{x:.0},{y:.0}")
        })
        .collect();
    let mut s = format!(
        "<svg id=\"map\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"map\" xmlns=\"http://www.w3.org/2000/svg\"><style>circle{{stroke:#fff}}.online{{fill:#1a7f37}}.degraded{{fill:#b35900}}.overdue{{fill:#8a6d00}}.offline{{fill:#c62828}}.stale{{fill:#6e4aa8}}</style><polygon points=\"{}\" fill=\"#f3f4f6\" stroke=\"#9aa4af\"/>",
        pts.join(" ")
    );
    for v in views {
        let Some((lat, lon)) = v.location.as_ref().map(|l| (l.latitude, l.longitude)) else {
            continue;
        };
        let (x, y) = xy(lon, lat);
        // Names go through askama's escaper rules by hand here: the SVG is
        // inserted as is.
        let title = escape(&format!("{} — {}", v.name, v.status.as_str()));
        // Compact (2,000 dots): the colour comes from the class.
        s.push_str(&format!(
            "<circle class=\"site {}\" cx=\"{x:.0}\" cy=\"{y:.0}\" r=\"6\"><title>{title}</title></circle>",
            v.status.as_str()
        ));
    }
    s.push_str("</svg>");
    s
}

/// `GET /`.
pub async fn overview(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let c = page(&state, &headers, &s, "/", "overview", true);
    let now = c.l.now;
    let Ok(views) = state.read(move |f| crate::status::site_views(f, now)).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store").into_response();
    };
    let count = |h: Health| views.iter().filter(|v| v.status == h).count();
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    let mut dist: BTreeMap<u8, usize> = BTreeMap::new();
    for v in &views {
        *versions
            .entry(v.version.clone().unwrap_or_else(|| "–".into()))
            .or_default() += 1;
        let band = match health_score(v) {
            90..=100 => 0,
            70..=89 => 1,
            40..=69 => 2,
            _ => 3,
        };
        *dist.entry(band).or_default() += 1;
    }
    let bands = ["90–100", "70–89", "40–69", "0–39"];
    let commits = match state.read(|f| crate::status::commits(f, 5)).await {
        Ok(list) => list.commits,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the commits for the overview");
            Vec::new()
        }
    }
    .into_iter()
    .map(|cm| CommitRow {
        id: cm.record.id.chars().take(10).collect(),
        at: c.l.time(&cm.record.processed_at),
        summary: cm.record.summary,
        state: c
            .l
            .t(match cm.record.state {
                CommitState::Accepted => "commit_accepted",
                CommitState::Refused => "commit_refused",
            })
            .to_owned(),
        progress: match (cm.converged, cm.total) {
            (Some(a), Some(t)) => format!("{a} / {t} {}", c.l.t("applied")),
            _ => String::new(),
        },
        blocked: cm
            .pending
            .unwrap_or_default()
            .iter()
            .take(5)
            .map(|b| super::pending(&c.l, b.site.as_str(), b.state, Some(&b.reason)))
            .collect::<Vec<_>>()
            .join(", "),
    })
    .collect();
    let page = OverviewPage {
        total: views.len(),
        online: count(Health::Online),
        degraded: count(Health::Degraded),
        overdue: count(Health::Overdue),
        offline: count(Health::Offline),
        stale: count(Health::Stale),
        alerts: alert_rows(&state, &c.l, true).await,
        versions: versions.into_iter().collect(),
        health_dist: dist
            .into_iter()
            .map(|(b, n)| (bands[usize::from(b)].to_owned(), n))
            .collect(),
        commits,
        map_svg: map_svg(&views),
        can_act: s.role >= Role::Operator,
        c,
    };
    render(&page)
}
