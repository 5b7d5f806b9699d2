//! Operator accounts, for admins: `GET /api/users`, `POST /api/users`
//! (`{"name", "role", "password", "totp"}`), `POST
//! /api/users/{name}/password` (`{"password"}`), `DELETE /api/users/{name}`.
//! Each change is audited with the admin's name.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Admin, Operator};
use super::{ApiError, ApiResult};
use crate::app::AppState;
use crate::config::Role;
use crate::users::{self, UserError};

fn status(e: &UserError) -> StatusCode {
    match e {
        UserError::Name(_) | UserError::Weak => StatusCode::BAD_REQUEST,
        UserError::Exists(_) => StatusCode::CONFLICT,
        UserError::Unknown(_) => StatusCode::NOT_FOUND,
        UserError::Hash(_) | UserError::Random(_) | UserError::Store(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UserError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(status(&e), e.to_string()))
}

pub(super) async fn api_users(
    _who: Operator<Admin>,
    State(state): State<AppState>,
) -> ApiResult<Json<Value>> {
    let fleet = state.fleet.clone();
    let list = blocking(move || users::list(&*fleet.store).map_err(UserError::from)).await?;
    let list: Vec<Value> = list.iter().map(users::summary).collect();
    Ok(Json(json!({"users": list})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    role: Role,
    password: String,
    #[serde(default)]
    totp: bool,
}

pub(super) async fn api_add_user(
    who: Operator<Admin>,
    State(state): State<AppState>,
    Json(u): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let fleet = state.fleet.clone();
    let name = u.name.clone();
    let secret = blocking(move || {
        users::add(
            &*fleet.store,
            &u.name,
            u.role,
            &u.password,
            u.totp,
            &who.name,
            Timestamp::now(),
        )
    })
    .await?;
    let mut answer = json!({"name": name});
    if let Some((s, uri)) = secret {
        answer["totp_secret"] = json!(s);
        answer["totp_uri"] = json!(uri);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPassword {
    password: String,
}

pub(super) async fn api_passwd(
    who: Operator<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(p): Json<NewPassword>,
) -> ApiResult<Json<Value>> {
    let fleet = state.fleet.clone();
    let n = name.clone();
    blocking(move || users::passwd(&*fleet.store, &n, &p.password, &who.name, Timestamp::now()))
        .await?;
    Ok(Json(json!({"name": name})))
}

pub(super) async fn api_remove_user(
    who: Operator<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let fleet = state.fleet.clone();
    let n = name.clone();
    blocking(move || users::remove(&*fleet.store, &n, &who.name)).await?;
    Ok(Json(json!({"name": name, "removed": true})))
}
