//! The controller's HTTP interface (axum).
//!
//! Agents (`Authorization: Bearer <site token>`):
//! - `GET /v1/sites/{id}/bundle[?wait=N]`: the bundle bytes with an `ETag`;
//!   `304` on `If-None-Match`; `wait` (≤ 300 s) long-polls until a new
//!   bundle exists;
//! - `GET /v1/sites/{id}/bundle.sig`: its detached SSHSIG signature;
//! - `GET|HEAD /v1/content/{sha256}`: content by hash, with `Range`;
//! - `POST /v1/sites/{id}/reports`: a report batch, acknowledged once durable.
//!
//! Operators (`Authorization: Bearer <operator token>`, roles from the
//! config): `/api/sites`, `/api/sites/{id}`, `/api/sites/{id}/history`,
//! `/api/stats`, `/api/commits`, `POST /api/sync` (or a webhook signed with
//! `X-Hub-Signature-256`), `POST /api/sites/{id}/token` (admin).
//! Unauthenticated: `/healthz`, `/metrics`.
//!
//! Every error is JSON `{"error": "...", "detail": ...}`.

use std::io::SeekFrom;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use touchline_schemas::report::{MAX_REPORT_BATCH_BYTES, REPORT_FORMAT, ReportBatch};
use touchline_schemas::{Sha256, SiteId};

pub use crate::app::AppState;
use crate::config::Role;
use crate::status;
use crate::store::AuditEntry;
use crate::tokens::Token;

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

    fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

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
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/sites/{id}/bundle", get(get_bundle))
        .route("/v1/sites/{id}/bundle.sig", get(get_signature))
        .route("/v1/content/{sha256}", get(get_content))
        .route("/v1/sites/{id}/reports", post(post_reports))
        .route("/api/sites", get(api_sites))
        .route("/api/sites/{id}", get(api_site))
        .route("/api/sites/{id}/history", get(api_history))
        .route("/api/sites/{id}/token", post(api_mint_token))
        .route("/api/history", get(api_fleet_history))
        .route("/api/stats", get(api_stats))
        .route("/api/releases", get(api_releases))
        .route("/api/alerts", get(api_alerts))
        .route("/api/commits", get(api_commits))
        .route("/api/sync", post(api_sync))
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
        .route("/sites/{id}/history.csv", get(crate::web::history_csv))
        .route("/history.csv", get(crate::web::fleet_history_csv))
        .route("/alerts", get(crate::web::alerts))
        .route("/groups", get(crate::web::groups))
        .route("/releases", get(crate::web::releases))
        .route("/static/app.css", get(crate::web::css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_REPORT_BATCH_BYTES))
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

fn bearer(headers: &HeaderMap) -> Option<Token> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    (!t.trim().is_empty()).then(|| Token::new(t.trim()))
}

fn parse_site(id: &str) -> ApiResult<SiteId> {
    SiteId::new(id).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such site"))
}

/// Checks a site token: 404 unknown site, 401 missing or wrong token, 403
/// another site's token.
fn auth_site(state: &AppState, site: &SiteId, headers: &HeaderMap) -> ApiResult<()> {
    if !state.fleet.knows_site(site) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such site"));
    }
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    match state.fleet.site_of_token(&token.hash()) {
        Some(owner) if &owner == site => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token belongs to another site",
        )),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token")),
    }
}

/// An authenticated operator: (name, role).
fn auth_operator(state: &AppState, headers: &HeaderMap, need: Role) -> ApiResult<(String, Role)> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    let hash = token.hash();
    let who = if state.local_admin.as_ref().is_some_and(|h| h.matches(&hash)) {
        ("local-admin".to_owned(), Role::Admin)
    } else if let Some(op) = state.fleet.config.operator(&hash) {
        (op.name.clone(), op.role)
    } else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"));
    };
    if who.1 < need {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "operator `{}` has role {:?}; this needs {:?}",
                who.0, who.1, need
            )
            .to_lowercase(),
        ));
    }
    Ok(who)
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

async fn serve_bundle(
    state: AppState,
    id: String,
    query: WaitQuery,
    headers: HeaderMap,
    signature: bool,
) -> ApiResult<Response> {
    let site = parse_site(&id)?;
    auth_site(&state, &site, &headers)?;
    state.fleet.note_poll(&site);
    let wait = match query.wait.as_deref() {
        None | Some("") => 0,
        Some(w) => match w.parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_SECS => n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"),
                ));
            }
        },
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut rx = state.fleet.subscribe();
    loop {
        rx.borrow_and_update();
        let current = state.fleet.bundle(&site);
        if let Some(p) = &current
            && !matches_etag(&headers, &p.etag)
        {
            let (body, ctype) = if signature {
                (
                    p.signature.clone().into_bytes(),
                    "text/plain; charset=utf-8",
                )
            } else {
                (p.body.clone(), "application/json")
            };
            return Ok((
                [
                    (header::ETAG, p.etag.clone()),
                    (header::CONTENT_TYPE, ctype.to_owned()),
                    (header::CACHE_CONTROL, "no-cache".to_owned()),
                ],
                body,
            )
                .into_response());
        }
        if tokio::time::Instant::now() >= deadline || state.fleet.is_stopping() {
            return Ok(match current {
                Some(p) => {
                    (StatusCode::NOT_MODIFIED, [(header::ETAG, p.etag.clone())]).into_response()
                }
                None => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no bundle has been published for this site yet",
                )
                .into_response(),
            });
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "controller is shutting down"));
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn get_bundle(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_bundle(state, id, q, headers, false).await
}

async fn get_signature(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_bundle(state, id, q, headers, true).await
}

/// One byte range, inclusive.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `size` bytes (one range only;
/// anything else is served whole, as RFC 9110 allows).
fn parse_range(h: Option<&HeaderValue>, size: u64) -> RangeSpec {
    let Some(spec) = h
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return RangeSpec::Whole;
    };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Whole;
    };
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeSpec::Whole;
            };
            if start >= size {
                return RangeSpec::Unsatisfiable;
            }
            let end = if b.is_empty() {
                Some(size - 1)
            } else {
                num(b).map(|e| e.min(size - 1))
            };
            match end {
                Some(end) if end >= start => RangeSpec::Part(start, end),
                Some(_) => RangeSpec::Unsatisfiable,
                None => RangeSpec::Whole,
            }
        }
        // A suffix range: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Part(size.saturating_sub(n), size - 1),
            None => RangeSpec::Whole,
        },
        (true, true) => RangeSpec::Whole,
    }
}

async fn get_content(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Malformed hash: refused before anything touches the filesystem.
    let Ok(hash) = Sha256::new(&hash) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "content is addressed by sha256: 64 lowercase hexadecimal digits",
        ));
    };
    let Some(token) = bearer(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    if state.fleet.site_of_token(&token.hash()).is_none() {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"));
    }
    let path = state.fleet.content.path_of(&hash);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no content {hash} in the store"),
            ));
        }
        Err(e) => {
            return Err(ApiError::internal(format!(
                "failed to open content {hash}: {e}"
            )));
        }
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("failed to stat content {hash}: {e}")))?
        .len();
    let etag = format!("\"{hash}\"");
    let range = parse_range(headers.get(header::RANGE), size);
    // If-Range: serve a part only while the representation is unchanged.
    let range = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if v != etag => RangeSpec::Whole,
        _ => range,
    };
    let (status, start, len) = match range {
        RangeSpec::Whole => (StatusCode::OK, 0, size),
        RangeSpec::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeSpec::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                Json(json!({"error": "range not satisfiable", "detail": {"size": size}})),
            )
                .into_response());
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if method == Method::HEAD {
        return builder.body(Body::empty()).map_err(ApiError::internal);
    }
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::internal(format!("failed to read content {hash}: {e}")))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    builder
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

async fn post_reports(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let site = parse_site(&id)?;
    auth_site(&state, &site, &headers)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "report batch is over {MAX_REPORT_BATCH_BYTES} bytes; send smaller batches"
                ),
            )
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let batch: ReportBatch = serde_path_to_error::deserialize(de).map_err(|e| {
        // `?` is where the parser stopped inside a map before reading a key
        // (a syntax error): report the document itself.
        let field = match e.path().to_string() {
            p if p == "?" => ".".to_owned(),
            p => p,
        };
        ApiError::new(StatusCode::BAD_REQUEST, "invalid report batch").detail(json!({
            "field": field,
            "message": e.inner().to_string(),
        }))
    })?;
    if batch.format != REPORT_FORMAT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "report format {} is not supported (this controller reads format {REPORT_FORMAT})",
                batch.format
            ),
        )
        .detail(json!({"field": "format"})));
    }
    if batch.site != site {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "batch is for site `{}` but was posted to `{site}`",
                batch.site
            ),
        )
        .detail(json!({"field": "site"})));
    }
    if batch.reports.len() > MAX_REPORTS_PER_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{} reports in one batch; at most {MAX_REPORTS_PER_BATCH}",
                batch.reports.len()
            ),
        )
        .detail(json!({"field": "reports"})));
    }
    let store = state.fleet.store.clone();
    let now = Timestamp::now();
    let outcome = tokio::task::spawn_blocking(move || store.ingest(&site, &batch.reports, now))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(crate::fleet::error_chain(&e)))?;
    if outcome.accepted > 0 {
        // Alerts look at the new report soon (coalesced, off this request).
        state.fleet.alerts_wake.notify_one();
    }
    Ok(Json(outcome).into_response())
}

#[derive(Debug, Deserialize, Default)]
struct SiteFilter {
    sport: Option<String>,
    region: Option<String>,
    status: Option<String>,
    group: Option<String>,
    version: Option<String>,
}

async fn api_sites(
    State(state): State<AppState>,
    Query(f): Query<SiteFilter>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    auth_operator(&state, &headers, Role::Viewer)?;
    let views = status::site_views(&state.fleet, Timestamp::now()).map_err(ApiError::internal)?;
    let keep = |v: &status::SiteView| {
        let label = |k: &str| v.labels.get(k).map(String::as_str);
        f.sport.as_deref().is_none_or(|s| label("sport") == Some(s))
            && f.region
                .as_deref()
                .is_none_or(|s| label("region") == Some(s))
            && f.status.as_deref().is_none_or(|s| v.status.as_str() == s)
            && f.group
                .as_deref()
                .is_none_or(|g| v.groups.iter().any(|x| x == g))
            && f.version
                .as_deref()
                .is_none_or(|x| v.version.as_deref() == Some(x))
    };
    let list: Vec<&status::SiteView> = views.iter().filter(|v| keep(v)).collect();
    Ok(Json(json!({"sites": list, "count": list.len()})))
}

async fn api_site(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    auth_operator(&state, &headers, Role::Viewer)?;
    let site = parse_site(&id)?;
    let detail =
        status::site_detail(&state.fleet, &site, Timestamp::now()).map_err(ApiError::internal)?;
    detail
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such site"))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

async fn api_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    auth_operator(&state, &headers, Role::Viewer)?;
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
async fn api_fleet_history(
    State(state): State<AppState>,
    Query(q): Query<HistoryQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    auth_operator(&state, &headers, Role::Viewer)?;
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
struct RotateQuery {
    #[serde(default)]
    rotate: bool,
}

async fn api_mint_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RotateQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (who, _) = auth_operator(&state, &headers, Role::Admin)?;
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
            actor: who,
            action: "mint site token".into(),
            target: site2.to_string(),
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(json!({"site": site, "token": token.reveal()})))
}

async fn api_stats(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    auth_operator(&state, &headers, Role::Viewer)?;
    let views = status::site_views(&state.fleet, Timestamp::now()).map_err(ApiError::internal)?;
    Ok(Json(status::stats(&views)))
}

async fn api_releases(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    auth_operator(&state, &headers, Role::Viewer)?;
    let views = status::site_views(&state.fleet, Timestamp::now()).map_err(ApiError::internal)?;
    Ok(Json(status::releases(&state.fleet, &views)))
}

async fn api_alerts(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    auth_operator(&state, &headers, Role::Viewer)?;
    let f = state.fleet.clone();
    tokio::task::spawn_blocking(move || crate::notify::api(&f))
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .map_err(|e| ApiError::internal(crate::fleet::error_chain(&e)))
}

async fn api_commits(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<status::Commits>> {
    auth_operator(&state, &headers, Role::Viewer)?;
    status::commits(&state.fleet, 50)
        .map(Json)
        .map_err(ApiError::internal)
}

/// `POST /api/sync`: an operator token, or a git host's webhook signed with
/// the shared secret (`X-Hub-Signature-256: sha256=<hex HMAC of the body>`).
async fn api_sync(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
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
                .meta("last_seen")
                .ok()
                .flatten()
                .unwrap_or_default(),
        });
        r
    })
    .await
    .map_err(ApiError::internal)?;
    match outcome {
        Ok(o) => Ok(Json(status::sync_outcome_json(&o))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            crate::fleet::error_chain(&e),
        )),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let err = state.fleet.last_sync_error();
    let body = json!({
        "ok": true,
        "last_good_commit": state.fleet.store.meta("last_good").ok().flatten(),
        "last_sync_error": err.map(|(at, e)| json!({"at": at, "error": e})),
    });
    Json(body).into_response()
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let views = status::site_views(&state.fleet, Timestamp::now()).map_err(ApiError::internal)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(None, 10), RangeSpec::Whole);
        assert_eq!(
            parse_range(Some(&h("bytes=0-3")), 10),
            RangeSpec::Part(0, 3)
        );
        assert_eq!(parse_range(Some(&h("bytes=4-")), 10), RangeSpec::Part(4, 9));
        assert_eq!(parse_range(Some(&h("bytes=-3")), 10), RangeSpec::Part(7, 9));
        assert_eq!(
            parse_range(Some(&h("bytes=5-100")), 10),
            RangeSpec::Part(5, 9)
        );
        assert_eq!(
            parse_range(Some(&h("bytes=10-")), 10),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some(&h("bytes=5-2")), 10),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some(&h("bytes=-0")), 10),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(parse_range(Some(&h("bytes=0-1,3-4")), 10), RangeSpec::Whole);
        assert_eq!(parse_range(Some(&h("items=0-1")), 10), RangeSpec::Whole);
        assert_eq!(parse_range(Some(&h("bytes=x-1")), 10), RangeSpec::Whole);
    }

    #[test]
    fn etag_matching() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(
            matches_etag(&h, "\"a\"") && matches_etag(&h, "\"b\"") && !matches_etag(&h, "\"c\"")
        );
    }
}
