//! The status page: server-rendered HTML (askama templates compiled into
//! the binary, escaped by default), usable with JavaScript off, in French
//! and English, behind a login.
//!
//! Login: an operator token (the same as the API's) is exchanged for a
//! session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the request
//! came over HTTPS through a proxy), kept in memory (a restart asks to log
//! in again). Every POST carries the session's CSRF token; the login form
//! carries a pre-session one (double-submit cookie). The viewer role sees
//! everything and cannot act. The JSON API never accepts the cookie: another
//! origin cannot read it with a user's session.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use crate::app::AppState;
use crate::config::Role;
pub use crate::html::escape;
use crate::html::urlencode;
use crate::i18n::{L10n, Lang};
use crate::session::{Session, random_hex};
use crate::status::{Health, SiteView};
use crate::tokens::Token;

mod accounts;
mod actions;
mod alerts;
mod groups;
mod overview;
mod releases;
mod site;
mod sites;

pub use accounts::{add_user, remove_user, reset_password, users};
pub use actions::{audit, audit_csv, site_action, sites_action};
pub use alerts::alerts;
pub use groups::groups;
pub use overview::overview;
pub use releases::{releases, resume_rollout};
pub use site::{enroll, fleet_history_csv, history_csv, site};
pub use sites::sites;

/// Session lifetime.
const SESSION_HOURS: i64 = 12;
const SESSION_COOKIE: &str = "tl_session";
const LOGIN_CSRF_COOKIE: &str = "tl_login";
const LANG_COOKIE: &str = "tl_lang";

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether the request came over HTTPS (directly behind a proxy that says
/// so): the cookie is then `Secure`.
fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if secure(headers) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The reader's language: cookie, then `Accept-Language`, then the fleet's.
fn lang(state: &AppState, headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(Lang::from_accept_language)
        })
        .unwrap_or_else(|| {
            match state
                .fleet
                .manifests()
                .and_then(|m| m.manifests.fleet.as_ref().map(|f| f.value.language))
            {
                Some(touchline_schemas::manifest::Language::En) => Lang::En,
                _ => Lang::Fr,
            }
        })
}

fn l10n(state: &AppState, headers: &HeaderMap) -> L10n {
    L10n {
        lang: lang(state, headers),
        tz: state.fleet.time_zone(),
        now: Timestamp::now(),
    }
}

fn session(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let mut map = state.sessions.0.lock().ok()?;
    let s = map.get(id)?.clone();
    if s.expires < Timestamp::now() {
        map.remove(id);
        return None;
    }
    Some(s)
}

/// The page frame.
#[derive(Debug)]
pub struct Chrome {
    l: L10n,
    title: String,
    fleet_name: String,
    path: String,
    csrf: String,
    who: String,
    refresh: bool,
    /// An admin: the accounts page is in the menu.
    admin: bool,
}

fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template error: {e}"),
        )
            .into_response(),
    }
}

/// An operator logged in to the status page (its session cookie), checked
/// before anything else of the request is read; without a session, the
/// request is sent to the login page.
#[derive(Debug, Clone)]
pub struct LoggedIn(pub Session);

impl axum::extract::FromRequestParts<AppState> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        session(state, &parts.headers)
            .map(Self)
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

/// The frame of a page for the logged-in operator `s`.
fn page(
    state: &AppState,
    headers: &HeaderMap,
    s: &Session,
    path: &str,
    title_key: &str,
    refresh: bool,
) -> Chrome {
    let l = l10n(state, headers);
    let fleet_name = state
        .fleet
        .manifests()
        .and_then(|m| m.manifests.fleet.as_ref().map(|f| f.value.name.clone()))
        .unwrap_or_default();
    Chrome {
        title: l.t(title_key).to_owned(),
        l,
        fleet_name,
        path: path.to_owned(),
        csrf: s.csrf.clone(),
        who: format!("{} ({})", s.name, s.role.as_str()).to_lowercase(),
        refresh,
        admin: s.role >= Role::Admin,
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: L10n,
    csrf: String,
    failed: bool,
    /// A locked account: until when.
    locked: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    failed: Option<String>,
    locked: Option<String>,
}

/// A session cannot start without an OS random source.
fn no_randomness() -> Response {
    tracing::error!("no OS random source: no session can start");
    (StatusCode::INTERNAL_SERVER_ERROR, "no random source").into_response()
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Ok(csrf) = random_hex() else {
        return no_randomness();
    };
    let mut resp = render(&LoginPage {
        l: l10n(&state, &headers),
        csrf: csrf.clone(),
        failed: q.failed.is_some(),
        locked: q
            .locked
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| l10n(&state, &headers).time(&t))
            .unwrap_or_default(),
    });
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_CSRF_COOKIE, &csrf, 3600),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// An operator token (scripts' way in, and the local admin).
    #[serde(default)]
    token: String,
    /// An account: its name, password and TOTP code.
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    csrf: String,
}

/// `POST /login`: an operator token for a session.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let source = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.0.ip());
    if let Err(wait) = state
        .logins
        .check(source, state.fleet.config.http.login_failures_per_minute)
    {
        tracing::warn!(%source, "status page login refused: too many failures from this address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            format!("too many failed logins from this address: try again in {wait} s"),
        )
            .into_response();
    }
    if cookie(&headers, LOGIN_CSRF_COOKIE).is_none_or(|c| c.is_empty() || c != f.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    let who = if f.name.trim().is_empty() {
        let who = token_login(&state, &f.token);
        let _ = state.fleet.store.audit(&crate::store::AuditEntry {
            at: Timestamp::now(),
            actor: who
                .as_ref()
                .map_or_else(|| "(unknown token)".to_owned(), |w| w.0.clone()),
            action: "login".into(),
            target: "status page (token)".into(),
            source: Some(source.to_string()),
            result: Some(
                if who.is_some() {
                    "ok"
                } else {
                    "refused: unknown token"
                }
                .into(),
            ),
        });
        who
    } else {
        let fleet = state.fleet.clone();
        let (name, password, code) = (f.name.trim().to_owned(), f.password.clone(), f.code.clone());
        let at = Some(source.to_string());
        let r = tokio::task::spawn_blocking(move || {
            crate::users::login(
                &*fleet.store,
                &name,
                &password,
                Some(&code),
                at,
                Timestamp::now(),
            )
        })
        .await;
        match r {
            Ok(Ok(who)) => Some(who),
            Ok(Err(crate::users::LoginError::Locked(until))) => {
                state.logins.failed(source);
                tracing::warn!(%source, account = %f.name.trim(), "status page login refused: account locked");
                return Redirect::to(&format!("/login?locked={until}")).into_response();
            }
            Ok(Err(_)) | Err(_) => None,
        }
    };
    let Some((name, role)) = who else {
        state.logins.failed(source);
        tracing::warn!(%source, "status page login refused");
        return Redirect::to("/login?failed=1").into_response();
    };
    start_session(&state, &headers, name, role)
}

/// The operator a token belongs to (the local admin, or the config's).
fn token_login(state: &AppState, token: &str) -> Option<(String, Role)> {
    let hash = Token::new(token.trim()).hash();
    if state.local_admin.as_ref().is_some_and(|h| h.matches(&hash)) {
        Some(("local-admin".to_owned(), Role::Admin))
    } else {
        state
            .fleet
            .config
            .operator(&hash)
            .map(|op| (op.name.clone(), op.role))
    }
}

/// A new session cookie for `name`.
fn start_session(state: &AppState, headers: &HeaderMap, name: String, role: Role) -> Response {
    let (Ok(id), Ok(csrf)) = (random_hex(), random_hex()) else {
        return no_randomness();
    };
    let s = Session {
        name,
        role,
        csrf,
        expires: Timestamp::now()
            .saturating_add(SignedDuration::from_hours(SESSION_HOURS))
            .unwrap_or_else(|_| Timestamp::now()),
    };
    if let Ok(mut map) = state.sessions.0.lock() {
        let now = Timestamp::now();
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), s);
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, SESSION_COOKIE, &id, SESSION_HOURS * 3600),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_CSRF_COOKIE, "", 0),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// A POST by a logged-in operator with the right CSRF token and role.
fn act(s: &Session, f: &CsrfForm, need: Role) -> Result<(), Box<Response>> {
    let refuse = |r: Response| Err(Box::new(r));
    if f.csrf.as_deref() != Some(s.csrf.as_str()) {
        return refuse((StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response());
    }
    if s.role < need {
        return refuse(
            (
                StatusCode::FORBIDDEN,
                format!("{} has role {:?}: this needs {:?}", s.name, s.role, need).to_lowercase(),
            )
                .into_response(),
        );
    }
    Ok(())
}

/// `POST /logout`.
pub async fn logout(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = act(&s, &f, Role::Viewer) {
        return *r;
    }
    if let (Some(id), Ok(mut map)) = (cookie(&headers, SESSION_COOKIE), state.sessions.0.lock()) {
        map.remove(id);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    resp
}

/// `POST /sync` (operator): fetch the manifests now.
pub async fn sync(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = act(&s, &f, Role::Operator) {
        return *r;
    }
    let fleet = state.fleet.clone();
    let who = s.name.clone();
    tokio::task::spawn_blocking(move || {
        let r = fleet.sync(Timestamp::now());
        if let Err(e) = &r {
            tracing::warn!(error = %crate::fleet::error_chain(e), "sync from the status page failed");
        }
        let _ = fleet.store.audit(&crate::store::AuditEntry {
            at: Timestamp::now(),
            actor: who,
            action: "sync".into(),
            target: "status page".into(),
            source: None,
            result: Some(match &r {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("failed: {e}"),
            }),
        });
    });
    tracing::info!(operator = %s.name, "sync requested from the status page");
    Redirect::to("/").into_response()
}

#[derive(Debug, Deserialize)]
pub struct LangQuery {
    back: Option<String>,
}

/// `GET /lang/{fr|en}?back=/path`: remembers the language in a cookie.
pub async fn set_lang(
    Path(code): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let Some(l) = Lang::parse(&code) else {
        return (StatusCode::NOT_FOUND, "fr or en").into_response();
    };
    let back = q
        .back
        .filter(|b| same_site_path(b))
        .unwrap_or_else(|| "/".to_owned());
    let mut resp = Redirect::to(&back).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LANG_COOKIE, l.code(), 365 * 86_400),
    );
    resp
}

/// Whether `back` is a path on this site and nothing a browser would read
/// as another host: it starts with one `/`, holds no backslash, no control
/// character or whitespace (browsers strip a tab: `/\t/evil.example` is
/// `//evil.example`), and resolved against this site it stays here.
pub fn same_site_path(back: &str) -> bool {
    const HERE: &str = "http://controller.invalid/";
    let plain = back.starts_with('/')
        && !back.starts_with("//")
        && !back
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    plain
        && url::Url::parse(HERE)
            .and_then(|base| base.join(back))
            .is_ok_and(|u| {
                u.origin()
                    == url::Url::parse(HERE).map_or(url::Origin::new_opaque(), |h| h.origin())
            })
}

/// `GET /static/refresh.js`: the pausable auto-refresh (the only script;
/// the pages work without it).
pub async fn refresh_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/refresh.js"),
    )
        .into_response()
}

/// `GET /static/app.css`.
pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
        .into_response()
}

/// The health score of a site, 0–100 (documented in docs/operators.md):
/// 100, minus 100 offline (or silent with an expired bundle); 30 degraded;
/// 20 stale; 15 / 30 for a temperature over the site's warning / critical
/// level; 10 / 25 for the disk; 10 for memory; 20 per failed service (at
/// most 40); 20 for a rolled-back release; 10 when overdue (late by more
/// than two poll intervals).
pub fn health_score(v: &SiteView) -> u8 {
    if !v.status.is_reachable() {
        return 0;
    }
    let mut score: i32 = 100;
    if v.status == Health::Degraded {
        score -= 30;
    }
    if v.status == Health::Stale {
        score -= 20;
    }
    let e = &v.thresholds;
    if let Some(m) = &v.metrics {
        if let Some(t) = m.temperature_c {
            if t > e.temperature_critical {
                score -= 30;
            } else if t > e.temperature_warning {
                score -= 15;
            }
        }
        if let (Some(u), Some(t)) = (m.disk_used_bytes, m.disk_total_bytes)
            && t > 0
        {
            #[allow(clippy::cast_precision_loss)]
            let pct = u as f64 * 100.0 / t as f64;
            if pct > e.disk_critical_percent {
                score -= 25;
            } else if pct > e.disk_warning_percent {
                score -= 10;
            }
        }
        if m.memory_percent
            .is_some_and(|p| p > e.memory_warning_percent)
        {
            score -= 10;
        }
        let failed = m
            .services
            .values()
            .filter(|s| s.as_str() != "active" && s.as_str() != "unknown")
            .count();
        score -= i32::try_from(failed.min(2) * 20).unwrap_or(40);
    }
    if v.software
        .as_ref()
        .is_some_and(|s| s.held_back.is_some() && s.last_rollback.is_some())
    {
        score -= 20;
    }
    if v.status == Health::Overdue {
        score -= 10;
    }
    u8::try_from(score.clamp(0, 100)).unwrap_or(0)
}

/// A pending site as a page lists it: `site (state: reason)`, the
/// state and the controller's own reasons in the reader's language,
/// the box's words as it said them (cut at 120 characters).
pub(crate) fn pending(l: &L10n, site: &str, state: &str, reason: Option<&str>) -> String {
    use crate::rollout::Reason;
    let why = match reason.map(Reason::read) {
        None | Some(Reason::Offline) => None,
        Some(Reason::NoReport) => return format!("{site} ({})", l.t("st_never")),
        Some(Reason::WaveNotOpened(w)) => Some(format!("`{w}`")),
        Some(Reason::Phase(p)) => Some(format!("{} {}", l.t("reason_phase"), l.phase(p))),
        Some(Reason::Box(said)) => Some(format!(
            "\u{201c}{}\u{201d}",
            said.chars().take(120).collect::<String>()
        )),
    };
    let state = l.t(&format!("st_{state}"));
    match why {
        Some(w) => format!("{site} ({state}{} {w})", l.t("colon")),
        None => format!("{site} ({state})"),
    }
}

/// A site's phase in the reader's language, marked as its last known one
/// when the site is late or silent.
fn phase_shown(l: &L10n, v: &SiteView) -> String {
    let Some(p) = &v.phase else {
        return String::new();
    };
    if v.current {
        l.phase(p)
    } else {
        format!("{} ({})", l.phase(p), l.t("last_known"))
    }
}

fn status_label(l: &L10n, h: Health) -> &'static str {
    l.t(h.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l10n_for(lang: Lang) -> L10n {
        L10n::for_tests(lang)
    }

    #[test]
    fn a_pending_site_gives_its_reason_in_the_readers_language() {
        let (en, fr) = (l10n_for(Lang::En), l10n_for(Lang::Fr));
        let wave = crate::rollout::wave_not_opened("bretagne");
        assert_eq!(
            pending(&fr, "s1", "not_opened", Some(&wave)),
            "s1 (vague pas encore ouverte : `bretagne`)"
        );
        assert_eq!(
            pending(&en, "s1", "in_progress", Some("phase fetching")),
            "s1 (in progress: phase fetching)"
        );
        assert_eq!(
            pending(&fr, "s1", "in_progress", Some("phase fetching")),
            format!(
                "s1 (en cours : phase {})",
                crate::i18n::phase_word("fetching", Lang::Fr)
            )
        );
        // The box's own words, quoted and cut.
        let said = format!(
            "waiting for the maintenance window 03:00-05:00{}",
            "x".repeat(200)
        );
        let shown = pending(&en, "s1", "waiting", Some(&said));
        assert!(
            shown.starts_with(
                "s1 (waiting: \u{201c}waiting for the maintenance window 03:00-05:00xx"
            ),
            "{shown}"
        );
        assert_eq!(
            shown.chars().count(),
            "s1 (waiting: \u{201c}\u{201d})".chars().count() + 120
        );
        // Nothing to add to the state itself.
        assert_eq!(
            pending(
                &fr,
                "s1",
                "in_progress",
                Some(crate::rollout::NEVER_REPORTED)
            ),
            "s1 (jamais vu)"
        );
        assert_eq!(
            pending(&en, "s1", "unreachable", Some(crate::rollout::OFFLINE)),
            "s1 (unreachable)"
        );
        assert_eq!(pending(&en, "s1", "unreachable", None), "s1 (unreachable)");
        // A box cannot pass its words off as ours.
        assert_eq!(
            crate::rollout::Reason::read("phase <b>x</b>"),
            crate::rollout::Reason::Box("phase <b>x</b>")
        );
    }
}
