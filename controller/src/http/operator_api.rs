//! The operators' API (`Authorization: Bearer <operator token>`, roles
//! from the config): `/api/sites`, `/api/sites/{id}`,
//! `/api/sites/{id}/history`, `/api/history`, `/api/stats`,
//! `/api/releases`, `/api/alerts`, `/api/commits`, `POST /api/sync` (or a
//! webhook signed with `X-Hub-Signature-256`), `POST
//! /api/sites/{id}/token` (admin). The role is checked by the
//! [`Operator`] extractor before anything else.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use touchline_schemas::SiteId;

use super::auth::{Admin, Operator, Viewer, auth_operator, parse_site};
use super::{ApiError, ApiResult};
use crate::app::AppState;
use crate::config::Role;
use crate::status;
use crate::store::AuditEntry;
use crate::tokens::Token;

pub(super) async fn api_sites(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Query(f): Query<status::SiteFilter>,
) -> ApiResult<Json<Value>> {
    let views = state
        .read(|fleet| status::site_views(fleet, Timestamp::now()))
        .await
        .map_err(ApiError::internal)?;
    let list: Vec<&status::SiteView> = views.iter().filter(|v| f.matches(v)).collect();
    Ok(Json(json!({"sites": list, "count": list.len()})))
}

pub(super) async fn api_site(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<status::SiteDetail>> {
    let site = parse_site(&id)?;
    let detail = state
        .read(move |fleet| status::site_detail(fleet, &site, Timestamp::now()))
        .await
        .map_err(ApiError::internal)?;
    detail
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such site"))
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

pub(super) async fn api_history(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    let site = parse_site(&id)?;
    if !state.fleet.knows_site(&site) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such site"));
    }
    let (from, to) = history_range(&q)?;
    let format = match q.format.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(status::Export::parse(f).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown format `{f}`: use json, csv or jsonl"),
            )
        })?),
    };
    let store = state.fleet.store.clone();
    let site2 = site.clone();
    let points = tokio::task::spawn_blocking(move || store.history(&site2, from, to))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(match format {
        None => Json(json!({
            "site": site,
            "from": from,
            "to": to,
            "points": points,
        }))
        .into_response(),
        Some(f) => (
            f.headers(&format!("{site}-history")),
            f.render(&site, &points),
        )
            .into_response(),
    })
}

/// `GET /api/history?from=&to=&format=csv|jsonl`: every site's history,
/// streamed (JSON Lines by default; the whole fleet for a year does not fit
/// in one JSON document a client would want to parse).
pub(super) async fn api_fleet_history(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    let format = match q.format.as_deref() {
        None | Some("") => status::Export::Jsonl,
        Some(f) => status::Export::parse(f).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown format `{f}` for the fleet's history: use csv or jsonl"),
            )
        })?,
    };
    let (from, to) = history_range(&q)?;
    Ok((
        format.headers("fleet-history"),
        status::fleet_history_body(
            state.fleet.store.clone(),
            state.fleet.site_ids(),
            from,
            to,
            format,
        ),
    )
        .into_response())
}

/// `from` and `to` of a history query (default: the last 24 hours).
fn history_range(q: &HistoryQuery) -> ApiResult<(Timestamp, Timestamp)> {
    let now = Timestamp::now();
    let ts = |v: &Option<String>, name: &str, default: Timestamp| -> ApiResult<Timestamp> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("`{name}` must be an RFC 3339 time such as 2026-11-22T10:00:00Z"),
                )
            }),
        }
    };
    let to = ts(&q.to, "to", now)?;
    let from = ts(
        &q.from,
        "from",
        to.saturating_sub(jiff::SignedDuration::from_hours(24))
            .unwrap_or(to),
    )?;
    if from > to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`from` ({from}) is after `to` ({to})"),
        ));
    }
    Ok((from, to))
}

#[derive(Debug, Deserialize)]
pub(super) struct RotateQuery {
    #[serde(default)]
    rotate: bool,
}

pub(super) async fn api_mint_token(
    who: Operator<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RotateQuery>,
) -> ApiResult<Json<Value>> {
    let site =
        SiteId::new(&id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if state.fleet.has_token(&site) && !q.rotate {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "site `{site}` already has a token; rotate it to replace it (the box must then be given the new one)"
            ),
        ));
    }
    let token = Token::generate().map_err(ApiError::internal)?;
    let fleet = state.fleet.clone();
    let hash = token.hash();
    let site2 = site.clone();
    tokio::task::spawn_blocking(move || {
        fleet.set_token(&site2, hash)?;
        fleet.store.audit(&AuditEntry {
            at: Timestamp::now(),
            actor: who.name,
            action: "mint site token".into(),
            target: site2.to_string(),
            ..AuditEntry::default()
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(json!({"site": site, "token": token.reveal()})))
}

/// Bytes of a backup sent to the HTTP body as they are written.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /api/backup` (admin): a backup of the running controller, as a
/// tar stream (`crate::backup`). A failure midway breaks the stream off:
/// `touchline backup` then keeps nothing.
pub(super) async fn api_backup(
    who: Operator<Admin>,
    State(state): State<AppState>,
) -> ApiResult<Response> {
    // A backup holds the signing key: only `touchline backup` on the
    // controller's own machine (the local admin token) takes one.
    if who.name != "local-admin" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a backup holds the signing key: take it on the controller's machine with `touchline backup --data <dir>`",
        ));
    }
    let Some(files) = state.files.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this controller has no data directory to back up",
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let fleet = state.fleet.clone();
    tokio::task::spawn_blocking(move || {
        let src = crate::backup::Sources {
            store: &*fleet.store,
            data: &files.data,
            key: fleet.signing_key(),
            config: files.config.as_deref(),
        };
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        match crate::backup::write(&src, out) {
            Ok(m) => {
                tracing::info!(operator = %who.name, rows = m.store_rows, files = m.content_files, bytes = m.content_bytes, "backup sent");
                let _ = fleet.store.audit(&AuditEntry {
                    at: Timestamp::now(),
                    actor: who.name,
                    action: "backup".into(),
                    target: format!("{} rows, {} content files", m.store_rows, m.content_files),
                    ..AuditEntry::default()
                });
            }
            Err(e) => {
                tracing::error!(error = %crate::fleet::error_chain(&e), "backup failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-tar")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct EnrollQuery {
    ttl: Option<touchline_schemas::HumanDuration>,
}

/// `POST /api/sites/{id}/enroll[?ttl=24h]` (admin): a one-time enrollment
/// code for the site, shown once, with the commands that use it.
pub(super) async fn api_mint_enrollment(
    who: Operator<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EnrollQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let site =
        SiteId::new(&id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !state.fleet.knows_site(&site) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no site `{site}` in the manifests: add sites/{site}.yaml and push first"),
        ));
    }
    let ttl = q.ttl.unwrap_or(state.fleet.config.enrollment.ttl).to_std();
    let url = state.public_url(&headers);
    let fleet = state.fleet.clone();
    let minted = tokio::task::spawn_blocking(move || {
        crate::enroll::mint(&*fleet.store, &site, ttl, &who.name, Timestamp::now())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        crate::enroll::MintError::Ttl(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        other => ApiError::internal(other),
    })?;
    let code = minted.code.reveal();
    Ok(Json(json!({
        "site": minted.site,
        "code": code,
        "expires_at": minted.expires_at,
        "controller_url": url,
        "install": format!("curl -fsSL {url}/install.sh | sudo sh -s -- {code}"),
        "enroll": format!("sudo touchline-agent enroll --controller {url} {code} --start"),
        "instructions": minted.instructions(&url),
    })))
}

pub(super) async fn api_stats(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
) -> ApiResult<Json<status::Stats>> {
    let views = state
        .read(|fleet| status::site_views(fleet, Timestamp::now()))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(status::stats(&views)))
}

pub(super) async fn api_releases(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
) -> ApiResult<Json<status::Releases>> {
    state
        .read(|fleet| {
            let views = status::site_views(fleet, Timestamp::now())?;
            Ok(status::releases(fleet, &views))
        })
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

pub(super) async fn api_rollout(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
) -> ApiResult<Json<crate::progress::Rollouts>> {
    state
        .read(|fleet| crate::progress::rollouts(fleet, Timestamp::now()))
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

/// `POST /api/rollout/resume`: an operator ends a halt (audited).
pub(super) async fn api_rollout_resume(
    who: Operator<super::auth::Operating>,
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> ApiResult<Json<crate::progress::RolloutView>> {
    let fleet = state.fleet.clone();
    let source = crate::listen::source(
        &headers,
        peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a),
    );
    let result = tokio::task::spawn_blocking(move || {
        let now = Timestamp::now();
        fleet
            .resume_rollout(&who.name, source, now)
            .map_err(|e| match e {
                crate::fleet::ResumeError::NotHalted => {
                    ApiError::new(StatusCode::CONFLICT, e.to_string())
                }
                other => ApiError::internal(other),
            })
            .and_then(|r| crate::progress::view(&fleet, &r, now).map_err(|e| ApiError::store(&e)))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(result))
}

pub(super) async fn api_alerts(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
) -> ApiResult<Json<crate::notify::Alerts>> {
    state
        .read(crate::notify::api)
        .await
        .map(Json)
        .map_err(|e| ApiError::internal(crate::fleet::error_chain(&e)))
}

pub(super) async fn api_commits(
    _who: Operator<Viewer>,
    State(state): State<AppState>,
) -> ApiResult<Json<status::Commits>> {
    state
        .read(|fleet| status::commits(fleet, 50))
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

/// `POST /api/sync`: an operator token, or a git host's webhook signed with
/// the shared secret (`X-Hub-Signature-256: sha256=<hex HMAC of the body>`).
pub(super) async fn api_sync(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<status::SyncAnswer>> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let actor = if let Some(sig) = headers.get("x-hub-signature-256") {
        let Some(secret) = state.fleet.config.webhook_secret.as_deref() else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "webhooks are not configured (no webhook_secret)",
            ));
        };
        let given = sig
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("sha256="))
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "X-Hub-Signature-256 must be sha256=<hex>",
                )
            })?;
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
            .map_err(ApiError::internal)?;
        mac.update(&body);
        mac.verify_slice(&given).map_err(|_| {
            ApiError::new(StatusCode::UNAUTHORIZED, "webhook signature does not match")
        })?;
        "webhook".to_owned()
    } else {
        auth_operator(&state, &headers, Role::Operator)?.0
    };
    let fleet = state.fleet.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let r = fleet.sync(Timestamp::now());
        let _ = fleet.store.audit(&AuditEntry {
            at: Timestamp::now(),
            actor,
            action: "sync".into(),
            target: fleet
                .store
                .last_seen_commit()
                .ok()
                .flatten()
                .unwrap_or_default(),
            ..AuditEntry::default()
        });
        r
    })
    .await
    .map_err(ApiError::internal)?;
    match outcome {
        Ok(o) => Ok(Json(status::SyncAnswer::from(o))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            crate::fleet::error_chain(&e),
        )),
    }
}
