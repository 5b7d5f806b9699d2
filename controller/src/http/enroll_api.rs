//! `POST /v1/enroll`: a new box trades the lookup id of its one-time code
//! for a sealed answer (`touchline_schemas::enroll`). No token: the code
//! is the credential, and it never crosses the wire. The body is at most
//! [`MAX_REQUEST_BYTES`].

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
