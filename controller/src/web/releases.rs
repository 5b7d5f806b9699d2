//! The releases page: adoption, staging, rollbacks.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::app::AppState;

use super::{Chrome, LoggedIn, page, render};

struct ReleaseRow {
    version: String,
    running: u64,
    desired: u64,
    changelog: String,
    rolled_back: String,
    waiting: String,
    staged: String,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    c: Chrome,
    rows: Vec<ReleaseRow>,
    /// The agent's own releases (`staged` holds the sites on trial).
    agents: Vec<ReleaseRow>,
}

/// `GET /releases`.
pub async fn releases(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let c = page(&state, &headers, &s, "/releases", "releases", false);
    let now = c.l.now;
    let Ok(rel) = state
        .read(move |f| {
            let views = crate::status::site_views(f, now)?;
            Ok(crate::status::releases(f, &views))
        })
        .await
    else {
        return axum::response::IntoResponse::into_response((
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the store",
        ));
    };
    let rows = rel
        .releases
        .iter()
        .map(|r| ReleaseRow {
            version: r.version.clone(),
            running: r.running as u64,
            desired: r.desired as u64,
            changelog: r
                .manifest
                .as_ref()
                .map(|m| m.changelog.trim().to_owned())
                .unwrap_or_default(),
            rolled_back: rolled_back(&r.rolled_back),
            waiting: r
                .waiting
                .iter()
                .map(|x| x.site.clone())
                .collect::<Vec<_>>()
                .join(", "),
            staged: r.staged.join(", "),
        })
        .collect();
    let agents = rel
        .agents
        .iter()
        .filter(|a| a.in_manifests || a.running > 0)
        .map(|a| ReleaseRow {
            version: a.version.clone(),
            running: a.running as u64,
            desired: a.desired as u64,
            changelog: String::new(),
            rolled_back: rolled_back(&a.rolled_back),
            waiting: a
                .waiting
                .iter()
                .map(|x| x.site.clone())
                .collect::<Vec<_>>()
                .join(", "),
            staged: a.on_trial.join(", "),
        })
        .collect();
    render(&ReleasesPage { c, rows, agents })
}

/// `site (why), …`, each reason cut at 200 characters.
fn rolled_back(list: &[crate::status::RolledBackSite]) -> String {
    list.iter()
        .map(|x| {
            format!(
                "{} ({})",
                x.site,
                x.output.chars().take(200).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
