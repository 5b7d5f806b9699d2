//! Remote actions from the status page: the site page's form and list,
//! the sites table's form for the checked sites, and the audit page.

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::net::SocketAddr;
use touchline_schemas::SiteId;
use touchline_schemas::manifest::RemoteAction;

use crate::actions::{ActionBody, new_action};
use crate::app::AppState;
use crate::audit::{AUDIT_SCAN, AuditQuery};
use crate::config::Role;
use crate::i18n::L10n;

use super::{Chrome, CsrfForm, LoggedIn, act, page, render};

/// One action in the site page's list.
#[derive(Debug, Clone)]
pub struct ActionRow {
    /// Its id.
    pub id: String,
    /// When it was requested.
    pub when: String,
    /// `restart-service neopro-app`.
    pub command: String,
    /// Its state.
    pub state: String,
    /// The box's last message.
    pub message: String,
    /// Who asked.
    pub by: String,
    /// Its output (the page shows it folded).
    pub output: String,
}

/// What the site page shows: the actions the site's bundle allows, and the
/// last 20 requested.
pub async fn for_site(
    state: &AppState,
    site: &SiteId,
    l: &L10n,
) -> (Vec<(String, String)>, Vec<ActionRow>) {
    let allowed = state
        .fleet
        .bundle(site)
        .and_then(|p| crate::actions::allowed_actions(&p.body))
        .unwrap_or_default();
    let choices = RemoteAction::ALL
        .into_iter()
        .filter(|a| allowed.contains(a))
        .map(|a| (a.command_name().to_owned(), a.command_name().to_owned()))
        .collect();
    let site = site.clone();
    let list = state
        .read(move |f| crate::actions::list(&*f.store, &site, 20))
        .await
        .unwrap_or_default();
    let now = l.now;
    let rows = list
        .iter()
        .map(|r| ActionRow {
            id: r.id.clone(),
            when: l.time(&r.requested_at),
            command: r.command_line(),
            state: r.state_at(now).as_str().to_owned(),
            message: r.message().unwrap_or_default().to_owned(),
            by: r.requested_by.clone(),
            output: r.output.clone().unwrap_or_default(),
        })
        .collect();
    (choices, rows)
}

/// The fields of an action form (one site, or the sites checked).
#[derive(Debug, Default)]
struct ActionForm {
    csrf: Option<String>,
    body: ActionBody,
}

/// Reads an `application/x-www-form-urlencoded` body; `site` may repeat
/// (the checked rows of the sites table).
/// A form field that does not read.
#[derive(Debug, thiserror::Error)]
#[error("lines: `{0}` is not a whole number")]
struct BadLines(String);

fn parse_form(body: &[u8]) -> Result<ActionForm, BadLines> {
    let mut f = ActionForm::default();
    for (k, v) in form_urlencoded::parse(body) {
        let v = v.trim().to_owned();
        match k.as_ref() {
            "csrf" => f.csrf = Some(v),
            "action" => f.body.action = v,
            "service" => f.body.service = Some(v),
            "lines" if !v.is_empty() => {
                f.body.lines = Some(v.parse().map_err(|_| BadLines(v.clone()))?);
            }
            "since" => f.body.since = Some(v),
            "force" => f.body.force = !v.is_empty(),
            "site" => f.body.sites.push(v),
            _ => {}
        }
    }
    Ok(f)
}

fn bad(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, msg).into_response()
}

/// Queues the form's action on each site; `(queued, refusals)`.
async fn queue_all(
    state: &AppState,
    sites: &[String],
    body: &ActionBody,
    actor: &str,
    source: Option<String>,
) -> Result<(Vec<String>, Vec<String>), Response> {
    let mut queued = Vec::new();
    let mut refused = Vec::new();
    for id in sites {
        let Ok(site) = SiteId::new(id) else {
            refused.push(format!("{id}: no such site"));
            continue;
        };
        let new = new_action(body, site.clone(), actor.to_owned(), source.clone())
            .map_err(|e| bad(e.to_string()))?;
        let fleet = state.fleet.clone();
        let r =
            tokio::task::spawn_blocking(move || fleet.request_action(new, jiff::Timestamp::now()))
                .await;
        match r {
            Ok(Ok(rec)) => queued.push(format!("{site} ({})", rec.id)),
            Ok(Err(e)) => refused.push(e.to_string()),
            Err(_) => refused.push(format!("{site}: the request stopped")),
        }
    }
    Ok((queued, refused))
}

#[derive(Template)]
#[template(path = "actions_done.html")]
struct DonePage {
    c: Chrome,
    queued: Vec<String>,
    refused: Vec<String>,
    back: String,
}

/// An action form from an operator: read, its CSRF token and the role
/// checked; with where the request came from.
fn checked_form(
    s: &crate::session::Session,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: &[u8],
) -> Result<(ActionForm, Option<String>), Box<Response>> {
    let f = parse_form(body).map_err(|e| Box::new(bad(e.to_string())))?;
    act(
        s,
        &CsrfForm {
            csrf: f.csrf.clone(),
        },
        Role::Operator,
    )?;
    let source = crate::listen::source(headers, peer.map(|Extension(ConnectInfo(a))| a));
    Ok((f, source))
}

/// `POST /sites/{id}/actions` (operator): one action on one site.
pub async fn site_action(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (f, source) = match checked_form(&s, &headers, peer, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match queue_all(&state, std::slice::from_ref(&id), &f.body, &s.name, source).await {
        Ok((_, refused)) if refused.is_empty() => {
            Redirect::to(&format!("/sites/{id}#actions")).into_response()
        }
        Ok((queued, refused)) => {
            let path = format!("/sites/{id}");
            let c = page(&state, &headers, &s, &path, "sites", false);
            render(&DonePage {
                c,
                queued,
                refused,
                back: path,
            })
        }
        Err(r) => r,
    }
}

/// `POST /sites/actions` (operator): one action on the checked sites of
/// the sites table; a page says what was queued and what was refused.
pub async fn sites_action(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let (f, source) = match checked_form(&s, &headers, peer, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if f.body.sites.is_empty() || f.body.sites.len() > 1000 {
        return bad("check 1 to 1000 sites".into());
    }
    match queue_all(&state, &f.body.sites, &f.body, &s.name, source).await {
        Ok((queued, refused)) => {
            let c = page(&state, &headers, &s, "/sites", "sites", false);
            render(&DonePage {
                c,
                queued,
                refused,
                back: "/sites".into(),
            })
        }
        Err(r) => r,
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    q: AuditQuery,
    /// when, who, what, on what, from where, result.
    rows: Vec<[String; 6]>,
    csv: String,
    error: String,
}

/// `GET /audit`: the audit log with filters (every logged-in reader).
pub async fn audit(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let c = page(&state, &headers, &s, "/audit", "audit", false);
    let all = state
        .read(|f| f.store.audit_log(AUDIT_SCAN))
        .await
        .unwrap_or_default();
    let (entries, error) = match q.apply(all) {
        Ok(e) => (e, String::new()),
        Err(e) => (Vec::new(), e.to_string()),
    };
    let rows = entries
        .iter()
        .map(|e| {
            [
                c.l.time(&e.at),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.source.clone().unwrap_or_default(),
                e.result.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let csv = format!(
        "/audit.csv?{}",
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("actor", q.actor.clone().unwrap_or_default()),
                ("action", q.action.clone().unwrap_or_default()),
                ("target", q.target.clone().unwrap_or_default()),
                ("since", q.since.clone().unwrap_or_default()),
            ])
            .finish()
    );
    render(&AuditPage {
        c,
        q,
        rows,
        csv,
        error,
    })
}

/// `GET /audit.csv`: the same, as CSV.
pub async fn audit_csv(
    _who: LoggedIn,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let all = state
        .read(|f| f.store.audit_log(AUDIT_SCAN))
        .await
        .unwrap_or_default();
    match q.apply(all) {
        Ok(e) => (
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"touchline-audit.csv\"",
                ),
            ],
            crate::audit::audit_csv(&e),
        )
            .into_response(),
        Err(e) => bad(e.to_string()),
    }
}
