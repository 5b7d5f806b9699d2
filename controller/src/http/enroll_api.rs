//! What a new box (no token yet) may ask:
//! - `POST /v1/enroll`: it trades the lookup id of its one-time code for a
//!   sealed answer (`touchline_schemas::enroll`). The code is the
//!   credential, and it never crosses the wire. The body is at most
//!   [`MAX_REQUEST_BYTES`].
//! - `GET /install.sh`: the install script (`crate::install`);
//! - `GET /v1/agent-packages/{file}`: an agent package it installs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::json;
use touchline_schemas::enroll::{EnrollRequest, MAX_REQUEST_BYTES, Sealed};

use super::{ApiError, ApiResult};
use crate::app::AppState;
use crate::enroll::{self, RedeemError, Refused};

pub(super) async fn post_enroll(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Sealed>> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an enrollment request is at most {MAX_REQUEST_BYTES} bytes"),
            )
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    let req: EnrollRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid enrollment request")
            .detail(json!({"message": e.to_string()}))
    })?;
    let fleet = state.fleet.clone();
    let outcome =
        tokio::task::spawn_blocking(move || enroll::redeem(&fleet, &req, Timestamp::now()))
            .await
            .map_err(ApiError::internal)?;
    match outcome {
        Ok(sealed) => Ok(Json(sealed)),
        Err(RedeemError::Refused(r)) => {
            let status = match r {
                Refused::Unknown => StatusCode::NOT_FOUND,
                Refused::Used { .. } | Refused::Expired { .. } => StatusCode::GONE,
            };
            tracing::info!(reason = %r, "an enrollment was refused");
            Err(ApiError::new(status, r.to_string()))
        }
        Err(RedeemError::Store(e)) => Err(ApiError::store(&e)),
        Err(RedeemError::Internal(e)) => Err(ApiError::internal(e)),
    }
}

/// `GET /install.sh`.
pub(super) async fn get_install_script(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let url = state.public_url(&headers);
    let packages = state
        .files
        .as_ref()
        .map(|f| f.packages.as_slice())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/x-shellscript; charset=utf-8",
        )],
        crate::install::script(&url, packages),
    )
        .into_response()
}

/// `GET /v1/agent-packages/{file}`: the package, from the content store.
pub(super) async fn get_agent_package(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let package = state
        .files
        .as_ref()
        .and_then(|f| crate::install::find(&f.packages, &file).cloned())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no agent package `{file}` here (see /install.sh)"),
            )
        })?;
    let path = state.fleet.content.path_of(&package.sha256);
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("agent package {}: {e}", package.file)))?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/vnd.debian.binary-package".to_owned(),
            ),
            (axum::http::header::CONTENT_LENGTH, package.size.to_string()),
        ],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f)),
    )
        .into_response())
}
