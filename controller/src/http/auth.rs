//! Authentication as axum extractors, run before any body is read:
//! [`SiteAuth`] (a box's token for the site in the path) and
//! [`Operator`] (an operator's token with at least the role its marker
//! type names: [`Viewer`], [`Operating`], [`Admin`]).

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use touchline_schemas::SiteId;

use super::{ApiError, ApiResult};
use crate::app::AppState;
use crate::config::Role;
use crate::tokens::Token;

pub(super) fn bearer(headers: &HeaderMap) -> Option<Token> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    (!t.trim().is_empty()).then(|| Token::new(t.trim()))
}

pub(super) fn parse_site(id: &str) -> ApiResult<SiteId> {
    SiteId::new(id).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such site"))
}

/// Checks a site token: 401 missing or wrong token, 403 another site's
/// token, and only then 404 for a site the manifests do not name — so a
/// request without a valid token gets the same answer for a known and an
/// unknown site (site ids cannot be enumerated).
fn auth_site(state: &AppState, site: &SiteId, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    match state.fleet.site_of_token(&token.hash()) {
        Some(owner) if &owner == site => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token belongs to another site",
            ));
        }
        None => return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token")),
    }
    if !state.fleet.knows_site(site) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such site"));
    }
    Ok(())
}

/// An authenticated operator: (name, role).
pub(super) fn auth_operator(
    state: &AppState,
    headers: &HeaderMap,
    need: Role,
) -> ApiResult<(String, Role)> {
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

/// Any known site's token (content is shared by every site).
pub(super) fn any_site(state: &AppState, headers: &HeaderMap) -> ApiResult<SiteId> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    state
        .fleet
        .site_of_token(&token.hash())
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"))
}

/// A box authenticated for the site named in the path (`{id}`): 401
/// missing or wrong token, 403 another site's token, 404 unknown site.
#[derive(Debug, Clone)]
pub struct SiteAuth(pub SiteId);

impl FromRequestParts<AppState> for SiteAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        // `{id}` among the path's parameters (an action's route has two).
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such site"))?;
        let id = params
            .get("id")
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such site"))?;
        let site = parse_site(id)?;
        auth_site(state, &site, &parts.headers)?;
        Ok(Self(site))
    }
}

/// The least role an endpoint needs.
pub trait Need: Send + Sync {
    /// The role.
    const ROLE: Role;
}

/// Read-only access.
#[derive(Debug)]
pub struct Viewer;
/// Acting on the fleet (sync, actions).
#[derive(Debug)]
pub struct Operating;
/// Administration (tokens).
#[derive(Debug)]
pub struct Admin;

impl Need for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Need for Operating {
    const ROLE: Role = Role::Operator;
}
impl Need for Admin {
    const ROLE: Role = Role::Admin;
}

/// An operator with at least `N::ROLE`: 401 without a known token, 403
/// with too small a role.
#[derive(Debug)]
pub struct Operator<N: Need> {
    /// Their name (`local-admin` for the local admin token).
    pub name: String,
    /// Their role.
    pub role: Role,
    need: PhantomData<N>,
}

impl<N: Need> FromRequestParts<AppState> for Operator<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let (name, role) = auth_operator(state, &parts.headers, N::ROLE)?;
        Ok(Self {
            name,
            role,
            need: PhantomData,
        })
    }
}
