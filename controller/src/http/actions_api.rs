//! Remote actions and the audit log, for operators:
//! - `POST /api/sites/{id}/actions` (operator): `{"action": "system-info"}`
//!   (with `service`, `lines`, `since`, `force`, `ttl` as the action
//!   takes), answered `202` with the action's id;
//! - `POST /api/actions` (operator): the same for several sites,
//!   `{"sites": [...], "action": ...}`, one answer per site;
//! - `GET /api/sites/{id}/actions[?limit=N]`, `GET
//!   /api/sites/{id}/actions/{action}` (viewer): states and results;
//! - `GET /api/audit` and `GET /api/audit.csv` (viewer; filters `actor`,
//!   `action`, `target`, `since`, `limit`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Operating, Operator, Viewer, parse_site};
use super::{ApiError, ApiResult};
use crate::actions::{ActionBody, ActionRecord, NewAction, RequestError, new_action};
use crate::app::AppState;
use crate::audit::{AUDIT_SCAN, AuditQuery, audit_csv};
use crate::listen::source;
use crate::store::AuditEntry;

fn request_status(e: &RequestError) -> StatusCode {
    match e {
        RequestError::UnknownSite(_) => StatusCode::NOT_FOUND,
        RequestError::NotAllowed { .. } => StatusCode::FORBIDDEN,
        RequestError::NoBundle(_) | RequestError::Full(..) => StatusCode::CONFLICT,
        RequestError::Args(_) | RequestError::Ttl(_) => StatusCode::BAD_REQUEST,
        RequestError::Sign(_) | RequestError::Random(_) | RequestError::Store(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Queues one action (blocking: the store).
pub async fn queue(state: &AppState, new: NewAction) -> Result<ActionRecord, ApiError> {
    let fleet = state.fleet.clone();
    tokio::task::spawn_blocking(move || fleet.request_action(new, Timestamp::now()))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(request_status(&e), e.to_string()))
}

fn summary(r: &ActionRecord, now: Timestamp) -> Value {
    json!({
        "id": r.id,
        "site": r.site,
        "action": r.action.command_name(),
        "command": r.command_line(),
        "args": r.args,
        "force": r.force,
        "state": r.state_at(now).as_str(),
        "message": r.message(),
        "requested_by": r.requested_by,
        "requested_at": r.requested_at,
        "expires_at": r.expires_at,
        "exit_status": r.exit_status,
        "updates": r.updates,
    })
}

fn detail(r: &ActionRecord, now: Timestamp) -> Value {
    let mut v = summary(r, now);
    if let Some(o) = v.as_object_mut() {
        o.insert("output".into(), json!(r.output));
        o.insert("truncated".into(), json!(r.truncated));
    }
    v
}

fn peer(p: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<SocketAddr> {
    p.map(|Extension(ConnectInfo(a))| a)
}

/// `POST /api/sites/{id}/actions`.
pub(super) async fn api_request_action(
    who: Operator<Operating>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    conn: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<ActionBody>,
) -> ApiResult<Response> {
    let site = parse_site(&id)?;
    if !body.sites.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`sites` belongs to POST /api/actions; this path names its site",
        ));
    }
    let new = new_action(&body, site, who.name, source(&headers, peer(conn)))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let r = queue(&state, new).await?;
    Ok((StatusCode::ACCEPTED, Json(summary(&r, Timestamp::now()))).into_response())
}

/// Most sites one bulk request names.
const MAX_BULK_SITES: usize = 1000;

/// `POST /api/actions`: one action on several sites; each site answers on
/// its own (a site that forbids it does not stop the others).
pub(super) async fn api_request_actions(
    who: Operator<Operating>,
    State(state): State<AppState>,
    headers: HeaderMap,
    conn: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<ActionBody>,
) -> ApiResult<Response> {
    if body.sites.is_empty() || body.sites.len() > MAX_BULK_SITES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`sites` lists 1 to {MAX_BULK_SITES} sites"),
        ));
    }
    let from = source(&headers, peer(conn));
    let mut results = Vec::new();
    let mut queued = 0;
    for id in &body.sites {
        let answer = match parse_site(id) {
            Err(e) => json!({"site": id, "error": e.message()}),
            Ok(site) => match new_action(&body, site.clone(), who.name.clone(), from.clone()) {
                Err(e) => return Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
                Ok(new) => match queue(&state, new).await {
                    Ok(r) => {
                        queued += 1;
                        summary(&r, Timestamp::now())
                    }
                    Err(e) => json!({"site": site, "error": e.message()}),
                },
            },
        };
        results.push(answer);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"queued": queued, "results": results})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct LimitQuery {
    limit: Option<usize>,
}

/// `GET /api/sites/{id}/actions`.
pub(super) async fn api_site_actions(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<Value>> {
    let site = parse_site(&id)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let list = state
        .read(move |f| crate::actions::list(&*f.store, &site, limit))
        .await
        .map_err(ApiError::internal)?;
    let now = Timestamp::now();
    let list: Vec<Value> = list.iter().map(|r| summary(r, now)).collect();
    Ok(Json(json!({"actions": list})))
}

/// `GET /api/sites/{id}/actions/{action}`: one, with its output.
pub(super) async fn api_site_action(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let site = parse_site(&id)?;
    let r = state
        .read(move |f| crate::actions::get(&*f.store, &site, &action))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such action"))?;
    Ok(Json(detail(&r, Timestamp::now())))
}

async fn audit_entries(state: &AppState, q: &AuditQuery) -> ApiResult<Vec<AuditEntry>> {
    let all = state
        .read(|f| f.store.audit_log(AUDIT_SCAN))
        .await
        .map_err(ApiError::internal)?;
    q.apply(all)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// `GET /api/audit`.
pub(super) async fn api_audit(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let entries = audit_entries(&state, &q).await?;
    Ok(Json(json!({"count": entries.len(), "entries": entries})))
}

/// `GET /api/audit.csv`.
pub(super) async fn api_audit_csv(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let entries = audit_entries(&state, &q).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"touchline-audit.csv\"",
            ),
        ],
        audit_csv(&entries),
    )
        .into_response())
}
