//! The agents' API (`Authorization: Bearer <site token>`):
//! - `GET /v1/sites/{id}/bundle[?wait=N]`: the bundle bytes with an `ETag`;
//!   `304` on `If-None-Match`; `wait` (≤ 300 s) long-polls until a new
//!   bundle exists (the `304` comes up to a tenth of the wait early, at
//!   random: boxes answered together by a commit do not all come back at
//!   the same second ever after);
//! - `GET /v1/sites/{id}/bundle.sig`: its detached SSHSIG signature;
//! - `GET|HEAD /v1/content/{sha256}`: content by hash, with `Range`;
//! - `POST /v1/sites/{id}/reports`: a report batch, acknowledged once
//!   durable.
//!
//! The site token is checked by the [`SiteAuth`] extractor before the body
//! is read.

use std::io::SeekFrom;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use touchline_schemas::action::{ActionUpdate, MAX_UPDATE_BYTES, PENDING_HEADER};
use touchline_schemas::report::{MAX_REPORT_BATCH_BYTES, REPORT_FORMAT, ReportBatch};
use touchline_schemas::{Sha256, SiteId};

use super::auth::{SiteAuth, any_site};
use super::{ApiError, ApiResult, MAX_REPORTS_PER_BATCH, MAX_WAIT_SECS};
use crate::app::AppState;

#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    wait: Option<String>,
    /// `1`: the box takes remote actions (an action queued for it answers
    /// the long-poll at once, with the pending header).
    actions: Option<String>,
}

/// How much earlier than asked a long-poll without news is answered: a
/// random part of up to a tenth of the wait (at most 30 s).
fn spread(wait: Duration) -> Duration {
    let mut b = [0u8; 4];
    let unit = match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    (wait / 10).min(Duration::from_secs(30)).mul_f64(unit)
}

/// A published bundle's body or signature, sent without a copy.
struct Served(std::sync::Arc<crate::store::Published>, bool);

impl AsRef<[u8]> for Served {
    fn as_ref(&self) -> &[u8] {
        if self.1 {
            self.0.signature.as_bytes()
        } else {
            &self.0.body
        }
    }
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
    site: SiteId,
    query: WaitQuery,
    headers: HeaderMap,
    signature: bool,
) -> ApiResult<Response> {
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
    let wait = Duration::from_secs(wait);
    let deadline = tokio::time::Instant::now() + wait - spread(wait);
    let takes_actions = query.actions.as_deref() == Some("1");
    let mut rx = state.fleet.subscribe();
    let mut actions_rx = state.fleet.actions.subscribe();
    loop {
        rx.borrow_and_update();
        actions_rx.borrow_and_update();
        let current = state.fleet.bundle(&site);
        let (queued, undelivered) = if takes_actions {
            state.fleet.actions.pending(&site)
        } else {
            (0, 0)
        };
        let pending = (queued > 0).then(|| {
            (
                HeaderName::from_static(PENDING_HEADER),
                HeaderValue::from(queued),
            )
        });
        if let Some(p) = &current
            && !matches_etag(&headers, &p.etag)
        {
            let ctype = if signature {
                "text/plain; charset=utf-8"
            } else {
                "application/json"
            };
            return Ok((
                [
                    (header::ETAG, p.etag.clone()),
                    (header::CONTENT_TYPE, ctype.to_owned()),
                    (header::CACHE_CONTROL, "no-cache".to_owned()),
                ],
                AppendHeaders(pending),
                Bytes::from_owner(Served(p.clone(), signature)),
            )
                .into_response());
        }
        // An action the box has not taken yet answers at once.
        if undelivered > 0 || tokio::time::Instant::now() >= deadline || state.fleet.is_stopping() {
            return Ok(match current {
                Some(p) => (
                    StatusCode::NOT_MODIFIED,
                    [(header::ETAG, p.etag.clone())],
                    AppendHeaders(pending),
                )
                    .into_response(),
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
            _ = actions_rx.changed(), if takes_actions => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

pub(super) async fn get_bundle(
    SiteAuth(site): SiteAuth,
    State(state): State<AppState>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_bundle(state, site, q, headers, false).await
}

pub(super) async fn get_signature(
    SiteAuth(site): SiteAuth,
    State(state): State<AppState>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_bundle(state, site, q, headers, true).await
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

pub(super) async fn get_content(
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
    let site = any_site(&state, &headers)?;
    // A token reads only what its site's current or previous bundle names;
    // anything else answers as missing content does, so a token cannot
    // probe what other sites hold.
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no content {hash} for site `{site}`: neither its current nor its previous bundle names it (poll the bundle again)"
            ),
        )
    };
    if !state.fleet.site_may_read(&site, &hash) {
        return Err(not_found());
    }
    let path = state.fleet.content.path_of(&hash);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Named by the site's own bundle: saying so leaks nothing.
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

pub(super) async fn post_reports(
    SiteAuth(site): SiteAuth,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
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
    // Impossible metrics never reach averages, alerts or pages, and no
    // box's text makes the pages slow for all: dropped or cut here, field
    // by field, and said in the answer.
    let mut batch = batch;
    let mut refused = Vec::new();
    for r in &mut batch.reports {
        for f in r.sanitize() {
            refused.push(json!({"seq": r.seq, "field": f.field, "reason": f.reason}));
        }
    }
    if !refused.is_empty() {
        tracing::warn!(%site, count = refused.len(), first = %refused[0], "report values dropped or cut");
    }
    let store = state.fleet.store.clone();
    let now = Timestamp::now();
    // The newest report of an accepted batch is the site's latest state:
    // its pulse is kept in memory for /metrics.
    let site_for_pulse = site.clone();
    let pulse = batch
        .reports
        .iter()
        .max_by_key(|r| r.seq)
        .map(|r| crate::store::Pulse::of(r, now));
    let outcome = tokio::task::spawn_blocking(move || {
        store.ingest(&site, batch.epoch.as_deref(), &batch.reports, now)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::store(&e))?;
    if outcome.accepted > 0 {
        // A batch whose newest report was stored: it is the site's latest.
        if let Some(pulse) = pulse {
            state.fleet.note_report(&site_for_pulse, pulse);
        }
        // Alerts look at the new report soon (coalesced, off this request).
        state.fleet.alerts_wake.notify_one();
        state.fleet.rollout_wake.notify_one();
    }
    let mut answer = serde_json::to_value(outcome).map_err(ApiError::internal)?;
    if !refused.is_empty()
        && let Some(o) = answer.as_object_mut()
    {
        o.insert("refused".into(), Value::Array(refused));
    }
    Ok(Json(answer).into_response())
}

/// `GET /v1/sites/{id}/actions`: the actions waiting for this box.
pub(super) async fn get_actions(
    SiteAuth(site): SiteAuth,
    State(state): State<AppState>,
) -> ApiResult<Response> {
    let inbox = state
        .read(move |f| crate::actions::inbox(f.action_ctx(), &site, Timestamp::now()))
        .await
        .map_err(ApiError::internal)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(inbox)).into_response())
}

/// Reads a body that may be gzip-compressed (`Content-Encoding: gzip`),
/// decompressed to at most `limit` bytes: a compression bomb stops there.
fn decoded_body(headers: &HeaderMap, body: &[u8], limit: usize) -> ApiResult<Vec<u8>> {
    use std::io::Read;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match encoding {
        None | Some("identity") => {
            if body.len() > limit {
                return Err(too_large(limit));
            }
            Ok(body.to_vec())
        }
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("the gzip body does not decompress: {e}"),
                    )
                })?;
            if out.len() > limit {
                return Err(too_large(limit));
            }
            Ok(out)
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding `{other}` is not read here; send gzip or nothing"),
        )),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("an action update is at most {limit} bytes once decompressed"),
    )
}

/// `POST /v1/sites/{id}/actions/{action}`: the box's update on one of its
/// actions.
pub(super) async fn post_action_update(
    SiteAuth(site): SiteAuth,
    State(state): State<AppState>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let id = params.get("action").cloned().unwrap_or_default();
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(MAX_UPDATE_BYTES)
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    let body = decoded_body(&headers, &body, MAX_UPDATE_BYTES)?;
    let update: ActionUpdate = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid action update: {e}"),
        )
    })?;
    let fleet = state.fleet.clone();
    let record = tokio::task::spawn_blocking(move || {
        crate::actions::update(fleet.action_ctx(), &site, &id, update, Timestamp::now())
    })
    .await
    .map_err(ApiError::internal)?;
    match record {
        Ok(r) => Ok(Json(json!({"id": r.id, "state": r.state})).into_response()),
        Err(e @ crate::actions::UpdateError::Unknown(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ crate::actions::UpdateError::Transition { .. }) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(crate::actions::UpdateError::Store(e)) => Err(ApiError::store(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_poll_comes_back_up_to_a_tenth_early_at_random() {
        let thirty: Vec<Duration> = (0..200).map(|_| spread(Duration::from_secs(30))).collect();
        assert!(thirty.iter().all(|d| *d <= Duration::from_secs(3)));
        // Spread over the tenth, not one offset for every box.
        let (lo, hi) = (thirty.iter().min().unwrap(), thirty.iter().max().unwrap());
        assert!(
            hi.saturating_sub(*lo) > Duration::from_secs(2),
            "{lo:?}..{hi:?}"
        );
        assert!(
            (0..200)
                .map(|_| spread(Duration::from_secs(300)))
                .all(|d| d <= Duration::from_secs(30))
        );
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }

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
