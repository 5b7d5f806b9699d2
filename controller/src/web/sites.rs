//! The sites table: search, filters, sorting, pages of 200.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::status::{Health, SiteView};

use super::{Chrome, LoggedIn, health_score, page, phase_shown, render, status_label, urlencode};

struct Filter {
    name: &'static str,
    label: String,
    /// Value, whether it is selected, and its label.
    options: Vec<(String, bool, String)>,
}

struct SiteRow {
    id: String,
    name: String,
    club: String,
    status: String,
    status_label: String,
    health: u8,
    last_seen: String,
    version: String,
    cpu: String,
    temp: String,
    disk: String,
    phase: String,
}

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    c: Chrome,
    q: String,
    filters: Vec<Filter>,
    headers: Vec<(String, String)>,
    rows: Vec<SiteRow>,
    /// Sites matching the filters (all pages).
    matching: usize,
    /// `page N / M`, with links (empty on a single page).
    pager: Vec<(String, String)>,
    /// An operator: check sites and request an action on them.
    can_act: bool,
    /// Every remote action (the controller checks each site's list).
    action_choices: Vec<&'static str>,
}

/// `GET /sites` query.
#[derive(Debug, Deserialize, Default)]
pub struct SitesQuery {
    q: Option<String>,
    sport: Option<String>,
    region: Option<String>,
    group: Option<String>,
    status: Option<String>,
    version: Option<String>,
    sort: Option<String>,
    page: Option<usize>,
}

/// Rows per page of the sites table (page weight with 2,000 sites).
const SITES_PER_PAGE: usize = 200;

/// `GET /sites`: search, filters, sort (all in the query string: works
/// without JavaScript, and a filtered view is a link).
pub async fn sites(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SitesQuery>,
) -> Response {
    let c = page(&state, &headers, &s, "/sites", "sites", true);
    let now = c.l.now;
    let Ok(views) = state.read(move |f| crate::status::site_views(f, now)).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store").into_response();
    };
    let sel = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    let (sport, region, group, status, version) = (
        sel(&q.sport),
        sel(&q.region),
        sel(&q.group),
        sel(&q.status),
        sel(&q.version),
    );
    let options = |f: &dyn Fn(&SiteView) -> Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = views.iter().flat_map(f).collect();
        v.sort();
        v.dedup();
        v
    };
    let label = |v: &SiteView, k: &str| v.labels.get(k).cloned();
    let mark = |opts: Vec<String>, sel: &Option<String>| -> Vec<(String, bool, String)> {
        opts.into_iter()
            .map(|o| {
                let on = sel.as_ref() == Some(&o);
                (o.clone(), on, o)
            })
            .collect()
    };
    let filters = vec![
        Filter {
            name: "sport",
            label: c.l.t("sport").into(),
            options: mark(
                options(&|v| label(v, "sport").into_iter().collect()),
                &sport,
            ),
        },
        Filter {
            name: "region",
            label: c.l.t("region").into(),
            options: mark(
                options(&|v| label(v, "region").into_iter().collect()),
                &region,
            ),
        },
        Filter {
            name: "group",
            label: c.l.t("group").into(),
            options: mark(options(&|v| v.groups.clone()), &group),
        },
        Filter {
            name: "status",
            label: c.l.t("status").into(),
            options: mark(
                Health::ALL.iter().map(|h| h.as_str().to_owned()).collect(),
                &status,
            )
            .into_iter()
            .map(|(v, on, _)| {
                let label = c.l.t(&v).to_owned();
                (v, on, label)
            })
            .collect(),
        },
        Filter {
            name: "version",
            label: c.l.t("version").into(),
            options: mark(
                options(&|v| v.version.clone().into_iter().collect()),
                &version,
            ),
        },
    ];
    let filter = crate::status::SiteFilter {
        sport: sport.clone(),
        region: region.clone(),
        group: group.clone(),
        status: status.clone(),
        version: version.clone(),
        q: q.q.clone(),
    };
    let mut list: Vec<&SiteView> = views.iter().filter(|v| filter.matches(v)).collect();
    let sort = q.sort.clone().unwrap_or_else(|| "name".into());
    let temp = |v: &SiteView| v.metrics.as_ref().and_then(|m| m.temperature_c);
    match sort.as_str() {
        // The worst first: stale, offline, overdue, degraded, online.
        "status" => list.sort_by_key(|v| std::cmp::Reverse(v.status)),
        "health" => list.sort_by_key(|v| health_score(v)),
        "seen" => list.sort_by_key(|v| std::cmp::Reverse(v.last_seen)),
        "version" => list.sort_by(|a, b| a.version.cmp(&b.version)),
        "temp" => list.sort_by(|a, b| {
            temp(b)
                .partial_cmp(&temp(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        _ => list.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    // Sort links keep the filters.
    let base: String = [
        ("q", q.q.clone()),
        ("sport", sport),
        ("region", region),
        ("group", group),
        ("status", status),
        ("version", version),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.filter(|v| !v.is_empty())
            .map(|v| format!("{k}={}", urlencode(&v)))
    })
    .collect::<Vec<_>>()
    .join("&");
    let link = |s: &str| {
        if base.is_empty() {
            format!("/sites?sort={s}")
        } else {
            format!("/sites?{base}&sort={s}")
        }
    };
    let headers_row = vec![
        (c.l.t("name").to_owned(), link("name")),
        (c.l.t("status").to_owned(), link("status")),
        (c.l.t("health").to_owned(), link("health")),
        (c.l.t("last_seen").to_owned(), link("seen")),
        (c.l.t("version").to_owned(), link("version")),
        (c.l.t("cpu").to_owned(), link("cpu")),
        (c.l.t("temperature").to_owned(), link("temp")),
        (c.l.t("disk").to_owned(), link("disk")),
        (c.l.t("phase").to_owned(), link("phase")),
    ];
    let matching = list.len();
    let pages = matching.div_ceil(SITES_PER_PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let mut pager = Vec::new();
    if pages > 1 {
        let with_sort = |p: usize| format!("{}&page={p}", link(&sort));
        if page_no > 1 {
            pager.push(("‹".to_owned(), with_sort(page_no - 1)));
        }
        pager.push((format!("{page_no} / {pages}"), with_sort(page_no)));
        if page_no < pages {
            pager.push(("›".to_owned(), with_sort(page_no + 1)));
        }
    }
    let rows = list
        .into_iter()
        .skip((page_no - 1) * SITES_PER_PAGE)
        .take(SITES_PER_PAGE)
        .map(|v| {
            let m = v.metrics.as_ref();
            #[allow(clippy::cast_precision_loss)]
            let disk = m.and_then(|m| match (m.disk_used_bytes, m.disk_total_bytes) {
                (Some(u), Some(t)) if t > 0 => Some(u as f64 * 100.0 / t as f64),
                _ => None,
            });
            SiteRow {
                id: v.id.to_string(),
                name: v.name.clone(),
                club: v.club.clone(),
                status: v.status.as_str().to_owned(),
                status_label: status_label(&c.l, v.status).to_owned(),
                health: health_score(v),
                last_seen: c.l.ago_opt(&v.last_seen),
                version: v.version.clone().unwrap_or_else(|| "–".into()),
                cpu: c.l.opt(m.and_then(|m| m.cpu_percent), 0, "%"),
                temp: c.l.opt(m.and_then(|m| m.temperature_c), 1, "°C"),
                disk: c.l.opt(disk, 0, "%"),
                phase: phase_shown(&c.l, v),
            }
        })
        .collect();
    render(&SitesPage {
        can_act: s.role >= crate::config::Role::Operator,
        action_choices: touchline_schemas::manifest::RemoteAction::ALL
            .iter()
            .map(|a| a.command_name())
            .collect(),
        matching,
        pager,
        q: q.q.unwrap_or_default(),
        filters,
        headers: headers_row,
        rows,
        c,
    })
}
