//! The accounts page (admins): the list, add an account (a random password
//! shown once, and the TOTP secret when asked), a new password, remove.
//! Every change is audited with the admin's name (`crate::users`).

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;

use crate::app::AppState;
use crate::config::Role;
use crate::users;

use super::{Chrome, CsrfForm, LoggedIn, act, page, render};

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    /// name, role, totp, locked until, created.
    rows: Vec<[String; 5]>,
    error: String,
}

#[derive(Template)]
#[template(path = "user_secret.html")]
struct SecretPage {
    c: Chrome,
    name: String,
    password: String,
    totp: String,
    totp_uri: String,
}

fn admin_only(s: &crate::session::Session) -> Option<Response> {
    (s.role < Role::Admin).then(|| {
        (
            StatusCode::FORBIDDEN,
            format!(
                "{} has role {}: accounts need admin",
                s.name,
                s.role.as_str()
            )
            .to_lowercase(),
        )
            .into_response()
    })
}

/// `GET /users`.
pub async fn users(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_only(&s) {
        return r;
    }
    let c = page(&state, &headers, &s, "/users", "accounts", false);
    let (list, error) = match state.read(|f| users::list(&*f.store)).await {
        Ok(l) => (l, String::new()),
        Err(e) => (Vec::new(), e.to_string()),
    };
    let now = Timestamp::now();
    let rows = list
        .iter()
        .map(|u| {
            [
                u.name.clone(),
                u.role.as_str().to_owned(),
                if u.totp.is_some() { "TOTP" } else { "–" }.to_owned(),
                u.locked_until
                    .filter(|t| *t > now)
                    .map(|t| c.l.time(&t))
                    .unwrap_or_default(),
                c.l.time(&u.created_at),
            ]
        })
        .collect();
    render(&UsersPage { c, rows, error })
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    csrf: Option<String>,
    name: String,
    role: Role,
    #[serde(default)]
    totp: Option<String>,
}

fn shown_once(r: Response) -> Response {
    let mut r = r;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /users`: a new account with a random password, shown once.
pub async fn add_user(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<AddForm>,
) -> Response {
    if let Err(r) = act(
        &s,
        &CsrfForm {
            csrf: f.csrf.clone(),
        },
        Role::Admin,
    ) {
        return *r;
    }
    let Ok(password) = users::random_password() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random bytes").into_response();
    };
    let fleet = state.fleet.clone();
    let (name, role, totp, actor, pw) = (
        f.name.trim().to_owned(),
        f.role,
        f.totp.is_some(),
        s.name.clone(),
        password.clone(),
    );
    let n = name.clone();
    let r = tokio::task::spawn_blocking(move || {
        users::add(&*fleet.store, &n, role, &pw, totp, &actor, Timestamp::now())
    })
    .await;
    match r {
        Ok(Ok(secret)) => {
            let c = page(&state, &headers, &s, "/users", "accounts", false);
            let (totp, totp_uri) = secret.unwrap_or_default();
            shown_once(render(&SecretPage {
                c,
                name,
                password,
                totp,
                totp_uri,
            }))
        }
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the request stopped").into_response(),
    }
}

/// `POST /users/{name}/password`: a new random password, shown once (and
/// the account unlocked).
pub async fn reset_password(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = act(&s, &f, Role::Admin) {
        return *r;
    }
    let Ok(password) = users::random_password() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random bytes").into_response();
    };
    let fleet = state.fleet.clone();
    let (n, pw, actor) = (name.clone(), password.clone(), s.name.clone());
    let r = tokio::task::spawn_blocking(move || {
        users::passwd(&*fleet.store, &n, &pw, &actor, Timestamp::now())
    })
    .await;
    match r {
        Ok(Ok(())) => {
            let c = page(&state, &headers, &s, "/users", "accounts", false);
            shown_once(render(&SecretPage {
                c,
                name,
                password,
                totp: String::new(),
                totp_uri: String::new(),
            }))
        }
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the request stopped").into_response(),
    }
}

/// `POST /users/{name}/remove`.
pub async fn remove_user(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = act(&s, &f, Role::Admin) {
        return *r;
    }
    let fleet = state.fleet.clone();
    let actor = s.name.clone();
    let r = tokio::task::spawn_blocking(move || users::remove(&*fleet.store, &name, &actor)).await;
    match r {
        Ok(Ok(())) => Redirect::to("/users").into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the request stopped").into_response(),
    }
}
