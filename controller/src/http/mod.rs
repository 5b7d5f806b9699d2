//! The controller's HTTP interface (axum), split by audience: the agents'
//! API (`agent_api`), the operators' API (`operator_api`) and the
//! status page (`crate::web`); authentication is the extractors of
//! [`auth`]. The router is [`router`]: tests drive it in process with
//! `oneshot`.
//!
//! Agents (`Authorization: Bearer <site token>`):
//! - `GET /v1/sites/{id}/bundle[?wait=N]`: the bundle bytes with an `ETag`;
//!   `304` on `If-None-Match`; `wait` (≤ 300 s) long-polls until a new
//!   bundle exists;
//! - `GET /v1/sites/{id}/bundle.sig`: its detached SSHSIG signature;
//! - `GET|HEAD /v1/content/{sha256}`: content by hash, with `Range`;
//! - `POST /v1/sites/{id}/reports`: a report batch, acknowledged once durable;
//! - `GET /v1/sites/{id}/actions`: the remote actions waiting for the box
//!   (a long-poll with `actions=1` answers at once when one is queued, with
//!   the `touchline-actions` header); `POST /v1/sites/{id}/actions/{action}`:
//!   the box's update on one (gzip allowed, bounded once decompressed).
//!
//! New boxes (no token; the one-time code's lookup id):
//! - `POST /v1/enroll`: the sealed enrollment answer (`enroll_api`);
//! - `GET /install.sh`, `GET /v1/agent-packages/{file}`: the install
//!   script and the agent packages it installs.
//!
//! Operators (`Authorization: Bearer <operator token>`, roles from the
//! config): `/api/sites`, `/api/sites/{id}`, `/api/sites/{id}/history`,
//! `/api/stats`, `/api/commits`, `POST /api/sync` (or a webhook signed with
//! `X-Hub-Signature-256`), `POST /api/sites/{id}/token` and
//! `POST /api/sites/{id}/enroll[?ttl=24h]`, `GET /api/backup` (admin);
//! remote actions `POST|GET /api/sites/{id}/actions`, `POST /api/actions`
//! and the audit log `GET /api/audit[.csv]` (`actions_api`).
//! Unauthenticated: `/healthz`, `/metrics`.
//!
//! Every error is JSON `{"error": "...", "detail": ...}`.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::{Value, json};
use touchline_schemas::report::MAX_REPORT_BATCH_BYTES;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use crate::app::AppState;
use crate::status;

mod actions_api;
mod agent_api;
pub mod auth;
mod enroll_api;
mod operator_api;
mod users_api;

/// Longest long-poll.
pub const MAX_WAIT_SECS: u64 = 300;
/// Most reports in one batch.
pub const MAX_REPORTS_PER_BATCH: usize = 1000;

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    detail: Value,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            detail: Value::Null,
        }
    }

    /// The one-line error.
    pub fn message(&self) -> &str {
        &self.error
    }

    fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    /// A store failure: a file the store cannot read or write (the disk
    /// is full) is 503 with `Retry-After`, for the box to come back once
    /// the store recovers; anything else is 500.
    fn store(e: &crate::store::StoreError) -> Self {
        let text = crate::fleet::error_chain(e);
        if matches!(e, crate::store::StoreError::Io(_)) {
            tracing::error!(error = %text, "request failed: the store cannot write");
            Self::new(StatusCode::SERVICE_UNAVAILABLE, text)
        } else {
            Self::internal(text)
        }
    }
}

/// `Retry-After` on a 503, in seconds.
const RETRY_AFTER_SECS: &str = "10";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The page's Content-Security-Policy: scripts and styles from the
/// controller's own files only (one script: the pausable refresh; nothing
/// inline), never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The router.
pub fn router(state: AppState) -> Router {
    let body_timeout = state.fleet.config.http.body_timeout.to_std();
    let security = |name: header::HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    // What boxes call: no page headers (a box reads no HTML, and on a
    // club's ADSL line every poll's bytes count).
    let agents = Router::new()
        .route("/v1/sites/{id}/bundle", get(agent_api::get_bundle))
        .route("/v1/sites/{id}/bundle.sig", get(agent_api::get_signature))
        .route("/v1/content/{sha256}", get(agent_api::get_content))
        .route("/v1/sites/{id}/reports", post(agent_api::post_reports))
        .route("/v1/sites/{id}/actions", get(agent_api::get_actions))
        .route(
            "/v1/sites/{id}/actions/{action}",
            post(agent_api::post_action_update).layer(DefaultBodyLimit::max(
                touchline_schemas::action::MAX_UPDATE_BYTES,
            )),
        )
        .route(
            touchline_schemas::enroll::ENROLL_PATH,
            post(enroll_api::post_enroll).layer(DefaultBodyLimit::max(
                touchline_schemas::enroll::MAX_REQUEST_BYTES,
            )),
        )
        .route(
            "/v1/agent-packages/{file}",
            get(enroll_api::get_agent_package),
        );
    Router::new()
        .route("/api/sites", get(operator_api::api_sites))
        .route("/api/sites/{id}", get(operator_api::api_site))
        .route("/api/sites/{id}/history", get(operator_api::api_history))
        .route("/api/sites/{id}/token", post(operator_api::api_mint_token))
        .route(
            "/api/sites/{id}/enroll",
            post(operator_api::api_mint_enrollment),
        )
        .route("/api/backup", get(operator_api::api_backup))
        .route(
            "/api/sites/{id}/actions",
            get(actions_api::api_site_actions).post(actions_api::api_request_action),
        )
        .route(
            "/api/sites/{id}/actions/{action}",
            get(actions_api::api_site_action),
        )
        .route("/api/actions", post(actions_api::api_request_actions))
        .route(
            "/api/users",
            get(users_api::api_users).post(users_api::api_add_user),
        )
        .route("/api/users/{name}", delete(users_api::api_remove_user))
        .route("/api/users/{name}/password", post(users_api::api_passwd))
        .route("/api/audit", get(actions_api::api_audit))
        .route("/api/audit.csv", get(actions_api::api_audit_csv))
        .route("/install.sh", get(enroll_api::get_install_script))
        .route("/api/history", get(operator_api::api_fleet_history))
        .route("/api/stats", get(operator_api::api_stats))
        .route("/api/releases", get(operator_api::api_releases))
        .route("/api/rollout", get(operator_api::api_rollout))
        .route(
            "/api/rollout/resume",
            post(operator_api::api_rollout_resume),
        )
        .route("/api/alerts", get(operator_api::api_alerts))
        .route("/api/commits", get(operator_api::api_commits))
        .route("/api/sync", post(operator_api::api_sync))
        .route("/", get(crate::web::overview))
        .route(
            "/login",
            get(crate::web::login_form).post(crate::web::login),
        )
        .route("/logout", post(crate::web::logout))
        .route("/sync", post(crate::web::sync))
        .route("/lang/{code}", get(crate::web::set_lang))
        .route("/sites", get(crate::web::sites))
        .route("/sites/{id}", get(crate::web::site))
        .route("/sites/{id}/enroll", post(crate::web::enroll))
        .route("/sites/{id}/actions", post(crate::web::site_action))
        .route("/sites/actions", post(crate::web::sites_action))
        .route("/audit", get(crate::web::audit))
        .route("/users", get(crate::web::users).post(crate::web::add_user))
        .route("/users/{name}/password", post(crate::web::reset_password))
        .route("/users/{name}/remove", post(crate::web::remove_user))
        .route("/audit.csv", get(crate::web::audit_csv))
        .route("/sites/{id}/history.csv", get(crate::web::history_csv))
        .route("/history.csv", get(crate::web::fleet_history_csv))
        .route("/alerts", get(crate::web::alerts))
        .route("/groups", get(crate::web::groups))
        .route("/releases", get(crate::web::releases))
        .route("/rollout/resume", post(crate::web::resume_rollout))
        .route("/static/app.css", get(crate::web::css))
        .route("/static/refresh.js", get(crate::web::refresh_js))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(security(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(security(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security(header::REFERRER_POLICY, "same-origin"))
        .merge(agents)
        .layer(DefaultBodyLimit::max(MAX_REPORT_BATCH_BYTES))
        // A body that trickles in is refused (408) instead of holding a
        // connection and its buffer.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .observe(route, method, resp.status().as_u16(), start.elapsed());
    resp
}

async fn healthz(State(state): State<AppState>) -> Response {
    let err = state.fleet.last_sync_error();
    let last_good = state
        .read(|f| f.store.last_good_commit())
        .await
        .ok()
        .flatten();
    // A store that cannot write loses every report: not healthy, and why.
    let store_error = state.fleet.store.write_failure();
    let body = json!({
        "ok": store_error.is_none(),
        "last_good_commit": last_good,
        "last_sync_error": err.map(|(at, e)| json!({"at": at, "error": e})),
        "store_error": store_error,
    });
    let status = if store_error.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    // From memory: a scrape reads no report.
    let views = status::site_health(&state.fleet, Timestamp::now());
    let serial = state
        .fleet
        .bundles()
        .values()
        .map(|p| p.serial)
        .max()
        .unwrap_or(0);
    let text = state
        .metrics
        .render(&views, serial, state.fleet.last_sync_error().is_none())
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
