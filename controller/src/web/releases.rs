//! The releases page: adoption, staging, rollbacks.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::app::AppState;

use super::{Chrome, page, render};

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
}

/// `GET /releases`.
pub async fn releases(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (c, _) = match page(&state, &headers, "/releases", "releases", false) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let views = crate::status::site_views(&state.fleet, c.l.now).unwrap_or_default();
    let rel = crate::status::releases(&state.fleet, &views);
    let join = |v: &serde_json::Value, f: &dyn Fn(&serde_json::Value) -> String| -> String {
        v.as_array()
            .into_iter()
            .flatten()
            .map(f)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = rel["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| ReleaseRow {
            version: r["version"].as_str().unwrap_or("").to_owned(),
            running: r["running"].as_u64().unwrap_or(0),
            desired: r["desired"].as_u64().unwrap_or(0),
            changelog: r["manifest"]["changelog"]
                .as_str()
                .unwrap_or("")
                .trim()
                .to_owned(),
            rolled_back: join(&r["rolled_back"], &|x| {
                format!(
                    "{} ({})",
                    x["site"].as_str().unwrap_or(""),
                    x["output"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>()
                )
            }),
            waiting: join(&r["waiting"], &|x| {
                x["site"].as_str().unwrap_or("").to_owned()
            }),
            staged: join(&r["staged"], &|x| x.as_str().unwrap_or("").to_owned()),
        })
        .collect();
    render(&ReleasesPage { c, rows })
}
