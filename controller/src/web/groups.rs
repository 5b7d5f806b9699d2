//! The groups page: rule, members, what each group sets.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::app::AppState;

use super::{Chrome, LoggedIn, page, render};

struct GroupRow {
    id: String,
    priority: i32,
    description: String,
    rule: String,
    members: Vec<String>,
    sets: String,
    file: String,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    c: Chrome,
    rows: Vec<GroupRow>,
}

/// `GET /groups`: each group's rule, members, and what it sets.
pub async fn groups(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let c = page(&state, &headers, &s, "/groups", "groups", false);
    let Some(m) = state.fleet.manifests() else {
        return render(&GroupsPage {
            c,
            rows: Vec::new(),
        });
    };
    let mut rows: Vec<GroupRow> = m
        .manifests
        .groups
        .iter()
        .map(|(gid, g)| {
            let v = &g.value;
            let mut rule: Vec<String> = v
                .selector
                .iter()
                .flat_map(|s| s.match_labels.iter().map(|(k, val)| format!("{k}={val}")))
                .collect();
            if !v.sites.is_empty() {
                rule.push(format!(
                    "sites: {}",
                    v.sites
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let members: Vec<String> = m
                .members
                .iter()
                .filter(|(_, ms)| ms.iter().any(|x| &x.group == gid))
                .map(|(s, _)| s.to_string())
                .collect();
            GroupRow {
                id: gid.to_string(),
                priority: v.priority,
                description: v.description.clone().unwrap_or_default(),
                rule: if rule.is_empty() {
                    "—".into()
                } else {
                    rule.join(" · ")
                },
                members,
                sets: serde_yaml::to_string(&v.desired).unwrap_or_default(),
                file: g.file.to_string(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.id.cmp(&b.id)));
    render(&GroupsPage { c, rows })
}
