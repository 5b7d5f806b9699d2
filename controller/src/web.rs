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

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use touchline_schemas::SiteId;

use crate::alerts::{Level, Stage};
use crate::config::Role;
use crate::http::AppState;
use crate::i18n::{L10n, Lang};
use crate::status::{Health, SiteView};
use crate::tokens::Token;

/// Session lifetime.
const SESSION_HOURS: i64 = 12;
const SESSION_COOKIE: &str = "tl_session";
const LOGIN_CSRF_COOKIE: &str = "tl_login";
const LANG_COOKIE: &str = "tl_lang";

/// A logged-in operator.
#[derive(Debug, Clone)]
struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Timestamp,
}

/// Sessions in memory.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

fn random_hex() -> String {
    let mut b = [0u8; 32];
    // getrandom fails only without an OS RNG; then no session can start.
    if getrandom::fill(&mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}

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
    let tz = state
        .fleet
        .manifests()
        .and_then(|m| m.manifests.fleet.as_ref().map(|f| f.value.timezone.clone()))
        .and_then(|z| jiff::tz::TimeZone::get(&z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    L10n {
        lang: lang(state, headers),
        tz,
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

/// A page for a logged-in operator, or the redirect to the login page.
fn page(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    title_key: &str,
    refresh: bool,
) -> Result<(Chrome, Session), Box<Response>> {
    let Some(s) = session(state, headers) else {
        return Err(Box::new(Redirect::to("/login").into_response()));
    };
    let l = l10n(state, headers);
    let fleet_name = state
        .fleet
        .manifests()
        .and_then(|m| m.manifests.fleet.as_ref().map(|f| f.value.name.clone()))
        .unwrap_or_default();
    Ok((
        Chrome {
            title: l.t(title_key).to_owned(),
            l,
            fleet_name,
            path: path.to_owned(),
            csrf: s.csrf.clone(),
            who: format!("{} ({:?})", s.name, s.role).to_lowercase(),
            refresh,
        },
        s,
    ))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: L10n,
    csrf: String,
    failed: bool,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    failed: Option<String>,
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let csrf = random_hex();
    let mut resp = render(&LoginPage {
        l: l10n(&state, &headers),
        csrf: csrf.clone(),
        failed: q.failed.is_some(),
    });
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_CSRF_COOKIE, &csrf, 3600),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
}

/// `POST /login`: an operator token for a session.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if cookie(&headers, LOGIN_CSRF_COOKIE).is_none_or(|c| c.is_empty() || c != f.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    let hash = Token::new(f.token.trim()).hash();
    let who = if state.local_admin.as_ref().is_some_and(|h| h.matches(&hash)) {
        Some(("local-admin".to_owned(), Role::Admin))
    } else {
        state
            .fleet
            .config
            .operator(&hash)
            .map(|op| (op.name.clone(), op.role))
    };
    let Some((name, role)) = who else {
        tracing::warn!("status page login refused");
        return Redirect::to("/login?failed=1").into_response();
    };
    let id = random_hex();
    if id.is_empty() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random source").into_response();
    }
    let s = Session {
        name,
        role,
        csrf: random_hex(),
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
        set_cookie(&headers, SESSION_COOKIE, &id, SESSION_HOURS * 3600),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_CSRF_COOKIE, "", 0),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// A POST by a logged-in operator with the right CSRF token and role.
fn act(
    state: &AppState,
    headers: &HeaderMap,
    f: &CsrfForm,
    need: Role,
) -> Result<Session, Box<Response>> {
    let refuse = |r: Response| Err(Box::new(r));
    let Some(s) = session(state, headers) else {
        return refuse(Redirect::to("/login").into_response());
    };
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
    Ok(s)
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = act(&state, &headers, &f, Role::Viewer) {
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
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match act(&state, &headers, &f, Role::Operator) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let fleet = state.fleet.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = fleet.sync(Timestamp::now()) {
            tracing::warn!(error = %crate::fleet::error_chain(&e), "sync from the status page failed");
        }
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
    // Only a local path (no open redirect).
    let back = q
        .back
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/".to_owned());
    let mut resp = Redirect::to(&back).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LANG_COOKIE, l.code(), 365 * 86_400),
    );
    resp
}

/// `GET /static/app.css`.
pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../static/app.css"),
    )
        .into_response()
}

/// The health score of a site, 0–100 (documented in docs/operators.md):
/// 100, minus 100 offline; 30 degraded; 20 stale; 15 / 30 for a
/// temperature over the warning / critical level; 10 / 25 for the disk;
/// 10 for memory; 20 per failed service (at most 40); 20 for a rolled-back
/// release; 10 when the last report is older than 2 minutes.
pub fn health_score(v: &SiteView, now: Timestamp) -> u8 {
    if v.status == Health::Offline {
        return 0;
    }
    let mut score: i32 = 100;
    if v.status == Health::Degraded {
        score -= 30;
    }
    if v.phase.as_deref() == Some("stale") {
        score -= 20;
    }
    let e = crate::alerts::Effective::default();
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
    if v.last_seen
        .is_some_and(|t| now.duration_since(t) > SignedDuration::from_mins(2))
    {
        score -= 10;
    }
    u8::try_from(score.clamp(0, 100)).unwrap_or(0)
}

fn status_label(l: &L10n, h: Health) -> &'static str {
    l.t(h.as_str())
}

struct AlertRow {
    site: String,
    site_name: String,
    level: String,
    level_label: String,
    state: String,
    state_label: String,
    rule: String,
    value: String,
    message: String,
    since: String,
}

fn alert_rows(state: &AppState, l: &L10n, only_active: bool) -> Vec<AlertRow> {
    let names: BTreeMap<SiteId, String> = state
        .fleet
        .manifests()
        .map(|m| {
            m.manifests
                .sites
                .iter()
                .map(|(k, v)| (k.clone(), v.value.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let Ok(mut rows) = crate::notify::sorted_alerts(&state.fleet) else {
        return Vec::new();
    };
    if only_active {
        rows.retain(|(_, _, a)| a.state == Stage::Firing);
    }
    rows.into_iter()
        .map(|(site, rule, a)| AlertRow {
            site_name: names
                .get(&site)
                .cloned()
                .unwrap_or_else(|| site.to_string()),
            site: site.to_string(),
            level: match a.level {
                Level::Warning => "warning".into(),
                Level::Critical => "critical".into(),
            },
            level_label: l
                .t(match a.level {
                    Level::Warning => "warning",
                    Level::Critical => "critical",
                })
                .to_owned(),
            state: match a.state {
                Stage::Firing => "firing".into(),
                Stage::Pending => "pending".into(),
                Stage::Resolved => "resolved".into(),
            },
            state_label: l
                .t(match a.state {
                    Stage::Firing => "firing",
                    Stage::Pending => "pending",
                    Stage::Resolved => "resolved",
                })
                .to_owned(),
            rule: rule.name().to_owned(),
            value: a.value,
            message: a.message,
            since: l.ago(&a.since),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    c: Chrome,
    total: usize,
    online: usize,
    degraded: usize,
    offline: usize,
    stale: usize,
    alerts: Vec<AlertRow>,
    versions: Vec<(String, usize)>,
    health_dist: Vec<(String, usize)>,
    commits: Vec<CommitRow>,
    map_svg: String,
    can_act: bool,
}

struct CommitRow {
    id: String,
    at: String,
    state: String,
    progress: String,
    blocked: String,
}

/// The map of France: one dot per site from its coordinates, coloured by
/// status, on a rough outline of the country (inline SVG, no tiles).
fn map_svg(views: &[SiteView]) -> String {
    // Equirectangular over metropolitan France, x scaled by cos(46.5°).
    let (lon0, lon1, lat0, lat1) = (-5.3_f64, 9.8_f64, 41.2_f64, 51.2_f64);
    let k = 46.5_f64.to_radians().cos();
    let (w, h) = (
        ((lon1 - lon0) * k * 40.0).round(),
        ((lat1 - lat0) * 40.0).round(),
    );
    let xy = |lon: f64, lat: f64| ((lon - lon0) * k * 40.0, (lat1 - lat) * 40.0);
    let outline: [(f64, f64); 22] = [
        (2.55, 51.09),
        (4.15, 50.0),
        (5.8, 49.55),
        (6.5, 49.45),
        (8.2, 48.95),
        (7.55, 47.6),
        (6.95, 47.45),
        (6.1, 46.2),
        (7.0, 45.9),
        (7.65, 44.2),
        (7.5, 43.78),
        (6.2, 43.1),
        (4.6, 43.35),
        (3.1, 43.1),
        (3.15, 42.45),
        (-1.75, 43.35),
        (-1.2, 44.6),
        (-1.2, 46.2),
        (-2.5, 47.3),
        (-4.75, 48.4),
        (-1.6, 49.7),
        (1.6, 50.9),
    ];
    let pts: Vec<String> = outline
        .iter()
        .map(|(lo, la)| {
            let (x, y) = xy(*lo, *la);
            format!("{x:.0},{y:.0}")
        })
        .collect();
    let mut s = format!(
        "<svg id=\"map\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"map\" xmlns=\"http://www.w3.org/2000/svg\"><style>circle{{stroke:#fff}}.online{{fill:#1a7f37}}.degraded{{fill:#b35900}}.offline{{fill:#c62828}}</style><polygon points=\"{}\" fill=\"#f3f4f6\" stroke=\"#9aa4af\"/>",
        pts.join(" ")
    );
    for v in views {
        let lat = v.location["latitude"].as_f64();
        let lon = v.location["longitude"].as_f64();
        let (Some(lat), Some(lon)) = (lat, lon) else {
            continue;
        };
        let (x, y) = xy(lon, lat);
        // Names go through askama's escaper rules by hand here: the SVG is
        // inserted as is.
        let title = escape(&format!("{} — {}", v.name, v.status.as_str()));
        // Compact (2,000 dots): the colour comes from the class.
        s.push_str(&format!(
            "<circle class=\"site {}\" cx=\"{x:.0}\" cy=\"{y:.0}\" r=\"6\"><title>{title}</title></circle>",
            v.status.as_str()
        ));
    }
    s.push_str("</svg>");
    s
}

/// HTML-escapes `s` (askama's escaper: also for SVG built by hand and the
/// alert emails).
pub fn escape(s: &str) -> String {
    askama::filters::escape(s, askama::filters::Html)
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// `GET /`.
pub async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (c, s) = match page(&state, &headers, "/", "overview", true) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let now = c.l.now;
    let Ok(views) = crate::status::site_views(&state.fleet, now) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store").into_response();
    };
    let count = |h: Health| views.iter().filter(|v| v.status == h).count();
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    let mut dist: BTreeMap<u8, usize> = BTreeMap::new();
    for v in &views {
        *versions
            .entry(v.version.clone().unwrap_or_else(|| "–".into()))
            .or_default() += 1;
        let band = match health_score(v, now) {
            90..=100 => 0,
            70..=89 => 1,
            40..=69 => 2,
            _ => 3,
        };
        *dist.entry(band).or_default() += 1;
    }
    let bands = ["90–100", "70–89", "40–69", "0–39"];
    let commits = crate::status::commits(&state.fleet, 5)
        .ok()
        .and_then(|v| v["commits"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|cm| CommitRow {
            id: cm["commit"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(10)
                .collect(),
            at: cm["at"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| c.l.time(&t))
                .unwrap_or_default(),
            state: cm["state"].as_str().unwrap_or("").to_owned(),
            progress: match (cm["converged"].as_u64(), cm["total"].as_u64()) {
                (Some(a), Some(t)) => format!("{a} / {t} {}", c.l.t("applied")),
                _ => String::new(),
            },
            blocked: cm["pending"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .take(5)
                        .map(|b| {
                            format!(
                                "{} ({})",
                                b["site"].as_str().unwrap_or(""),
                                b["reason"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        })
        .collect();
    let stale = views
        .iter()
        .filter(|v| v.phase.as_deref() == Some("stale"))
        .count();
    let page = OverviewPage {
        total: views.len(),
        online: count(Health::Online),
        degraded: count(Health::Degraded),
        offline: count(Health::Offline),
        stale,
        alerts: alert_rows(&state, &c.l, true),
        versions: versions.into_iter().collect(),
        health_dist: dist
            .into_iter()
            .map(|(b, n)| (bands[usize::from(b)].to_owned(), n))
            .collect(),
        commits,
        map_svg: map_svg(&views),
        can_act: s.role >= Role::Operator,
        c,
    };
    render(&page)
}

struct Filter {
    name: &'static str,
    label: String,
    /// Value and whether it is selected.
    options: Vec<(String, bool)>,
}

struct SiteRow {
    id: String,
    name: String,
    club: String,
    status: String,
    status_label: String,
    health: u8,
    last_seen: String,
    version: String,
    cpu: String,
    temp: String,
    disk: String,
    phase: String,
}

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    c: Chrome,
    q: String,
    filters: Vec<Filter>,
    headers: Vec<(String, String)>,
    rows: Vec<SiteRow>,
    /// Sites matching the filters (all pages).
    matching: usize,
    /// `page N / M`, with links (empty on a single page).
    pager: Vec<(String, String)>,
}

/// `GET /sites` query.
#[derive(Debug, Deserialize, Default)]
pub struct SitesQuery {
    q: Option<String>,
    sport: Option<String>,
    region: Option<String>,
    group: Option<String>,
    status: Option<String>,
    version: Option<String>,
    sort: Option<String>,
    page: Option<usize>,
}

/// Rows per page of the sites table (page weight with 2,000 sites).
const SITES_PER_PAGE: usize = 200;

/// `GET /sites`: search, filters, sort (all in the query string: works
/// without JavaScript, and a filtered view is a link).
pub async fn sites(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SitesQuery>,
) -> Response {
    let (c, _) = match page(&state, &headers, "/sites", "sites", true) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let now = c.l.now;
    let Ok(views) = crate::status::site_views(&state.fleet, now) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store").into_response();
    };
    let sel = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    let (sport, region, group, status, version) = (
        sel(&q.sport),
        sel(&q.region),
        sel(&q.group),
        sel(&q.status),
        sel(&q.version),
    );
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let options = |f: &dyn Fn(&SiteView) -> Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = views.iter().flat_map(f).collect();
        v.sort();
        v.dedup();
        v
    };
    let label = |v: &SiteView, k: &str| v.labels.get(k).cloned();
    let mark = |opts: Vec<String>, sel: &Option<String>| -> Vec<(String, bool)> {
        opts.into_iter()
            .map(|o| {
                let on = sel.as_ref() == Some(&o);
                (o, on)
            })
            .collect()
    };
    let filters = vec![
        Filter {
            name: "sport",
            label: c.l.t("sport").into(),
            options: mark(
                options(&|v| label(v, "sport").into_iter().collect()),
                &sport,
            ),
        },
        Filter {
            name: "region",
            label: c.l.t("region").into(),
            options: mark(
                options(&|v| label(v, "region").into_iter().collect()),
                &region,
            ),
        },
        Filter {
            name: "group",
            label: c.l.t("group").into(),
            options: mark(options(&|v| v.groups.clone()), &group),
        },
        Filter {
            name: "status",
            label: c.l.t("status").into(),
            options: mark(
                vec!["online".into(), "degraded".into(), "offline".into()],
                &status,
            ),
        },
        Filter {
            name: "version",
            label: c.l.t("version").into(),
            options: mark(
                options(&|v| v.version.clone().into_iter().collect()),
                &version,
            ),
        },
    ];
    let mut list: Vec<&SiteView> = views
        .iter()
        .filter(|v| {
            sport
                .as_ref()
                .is_none_or(|s| label(v, "sport").as_ref() == Some(s))
                && region
                    .as_ref()
                    .is_none_or(|s| label(v, "region").as_ref() == Some(s))
                && group.as_ref().is_none_or(|g| v.groups.contains(g))
                && status.as_deref().is_none_or(|s| v.status.as_str() == s)
                && version
                    .as_ref()
                    .is_none_or(|x| v.version.as_ref() == Some(x))
                && (needle.is_empty()
                    || v.name.to_lowercase().contains(&needle)
                    || v.club.to_lowercase().contains(&needle)
                    || v.id.as_str().contains(&needle))
        })
        .collect();
    let sort = q.sort.clone().unwrap_or_else(|| "name".into());
    let temp = |v: &SiteView| v.metrics.as_ref().and_then(|m| m.temperature_c);
    match sort.as_str() {
        "status" => list.sort_by_key(|v| std::cmp::Reverse(v.status.as_str() == "offline")),
        "health" => list.sort_by_key(|v| health_score(v, now)),
        "seen" => list.sort_by_key(|v| std::cmp::Reverse(v.last_seen)),
        "version" => list.sort_by(|a, b| a.version.cmp(&b.version)),
        "temp" => list.sort_by(|a, b| {
            temp(b)
                .partial_cmp(&temp(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        _ => list.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    // Sort links keep the filters.
    let base: String = [
        ("q", q.q.clone()),
        ("sport", sport),
        ("region", region),
        ("group", group),
        ("status", status),
        ("version", version),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.filter(|v| !v.is_empty())
            .map(|v| format!("{k}={}", urlencode(&v)))
    })
    .collect::<Vec<_>>()
    .join("&");
    let link = |s: &str| {
        if base.is_empty() {
            format!("/sites?sort={s}")
        } else {
            format!("/sites?{base}&sort={s}")
        }
    };
    let headers_row = vec![
        (c.l.t("name").to_owned(), link("name")),
        (c.l.t("status").to_owned(), link("status")),
        (c.l.t("health").to_owned(), link("health")),
        (c.l.t("last_seen").to_owned(), link("seen")),
        (c.l.t("version").to_owned(), link("version")),
        (c.l.t("cpu").to_owned(), link("cpu")),
        (c.l.t("temperature").to_owned(), link("temp")),
        (c.l.t("disk").to_owned(), link("disk")),
        (c.l.t("phase").to_owned(), link("phase")),
    ];
    let matching = list.len();
    let pages = matching.div_ceil(SITES_PER_PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let mut pager = Vec::new();
    if pages > 1 {
        let with_sort = |p: usize| format!("{}&page={p}", link(&sort));
        if page_no > 1 {
            pager.push(("‹".to_owned(), with_sort(page_no - 1)));
        }
        pager.push((format!("{page_no} / {pages}"), with_sort(page_no)));
        if page_no < pages {
            pager.push(("›".to_owned(), with_sort(page_no + 1)));
        }
    }
    let rows = list
        .into_iter()
        .skip((page_no - 1) * SITES_PER_PAGE)
        .take(SITES_PER_PAGE)
        .map(|v| {
            let m = v.metrics.as_ref();
            #[allow(clippy::cast_precision_loss)]
            let disk = m.and_then(|m| match (m.disk_used_bytes, m.disk_total_bytes) {
                (Some(u), Some(t)) if t > 0 => Some(u as f64 * 100.0 / t as f64),
                _ => None,
            });
            SiteRow {
                id: v.id.to_string(),
                name: v.name.clone(),
                club: v.club.clone(),
                status: v.status.as_str().to_owned(),
                status_label: status_label(&c.l, v.status).to_owned(),
                health: health_score(v, now),
                last_seen: c.l.ago_opt(&v.last_seen),
                version: v.version.clone().unwrap_or_else(|| "–".into()),
                cpu: c.l.opt(m.and_then(|m| m.cpu_percent), 0, "%"),
                temp: c.l.opt(m.and_then(|m| m.temperature_c), 1, "°C"),
                disk: c.l.opt(disk, 0, "%"),
                phase: v.phase.clone().unwrap_or_default(),
            }
        })
        .collect();
    render(&SitesPage {
        matching,
        pager,
        q: q.q.unwrap_or_default(),
        filters,
        headers: headers_row,
        rows,
        c,
    })
}

fn urlencode(s: &str) -> String {
    askama::filters::urlencode(s)
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    c: Chrome,
    id: String,
    name: String,
    club: String,
    status: String,
    status_label: String,
    health: u8,
    last_seen: String,
    phase: String,
    labels: String,
    groups: String,
    desired: Vec<(String, String, String, String)>,
    conditions: Vec<String>,
    last_error: String,
    /// Range and whether it is shown.
    ranges: Vec<(&'static str, bool)>,
    charts: Vec<(String, String, String)>,
    events: Vec<(String, String, String)>,
    /// Videos wanted: id, path, added by.
    video_rows: Vec<(String, String, String)>,
    /// `configuration.json` leaves: pointer, value, set by.
    config_rows: Vec<(String, String, String)>,
}

/// `GET /sites/{id}` query.
#[derive(Debug, Deserialize)]
pub struct SiteQuery {
    range: Option<String>,
}

/// A line chart of `(t, value)` as an SVG (server-rendered; each point has
/// a `<title>` so that hovering shows the value without JavaScript).
fn chart_svg(
    points: &[(Timestamp, f64)],
    from: Timestamp,
    to: Timestamp,
    max: f64,
    l: &L10n,
    unit: &str,
) -> String {
    let (w, h) = (600.0_f64, 140.0_f64);
    #[allow(clippy::cast_precision_loss)]
    let span = (to.as_second() - from.as_second()).max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let x = |t: Timestamp| (t.as_second() - from.as_second()) as f64 / span * w;
    let y = |v: f64| h - (v / max).clamp(0.0, 1.0) * h;
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fafbfc\" stroke=\"#d0d7de\"/><polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/>",
        line.join(" ")
    );
    // At most ~150 hover targets.
    let step = (points.len() / 150).max(1);
    for (t, v) in points.iter().step_by(step) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#0969da\"><title>{} — {} {unit}</title></circle>",
            x(*t),
            y(*v),
            l.time(t),
            l.num(*v, 1)
        ));
    }
    s.push_str("</svg>");
    s
}

/// A chart: metric id, label key, how to read it from a point, top of
/// the scale, unit.
type ChartDef = (
    &'static str,
    &'static str,
    Box<dyn Fn(&crate::history::HistoryPoint) -> Option<f64>>,
    f64,
    &'static str,
);

/// `GET /sites/{id}`.
pub async fn site(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SiteQuery>,
) -> Response {
    let path = format!("/sites/{id}");
    let (c, _) = match page(&state, &headers, &path, "sites", false) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Ok(site) = SiteId::new(&id) else {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    };
    let now = c.l.now;
    let detail = match crate::status::site_detail(&state.fleet, &site, now) {
        Ok(Some(d)) => d,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such site").into_response(),
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store").into_response();
        }
    };
    let Ok(view) = serde_json::from_value::<serde_json::Value>(detail["site"].clone()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad site view").into_response();
    };
    let Ok(Some(v)) = crate::status::site_view(&state.fleet, &site, now) else {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    };
    let v = &v;
    let origin = |path: &str| -> String {
        detail["origins"]
            .pointer(path)
            .and_then(|o| {
                o.as_str()
                    .map(str::to_owned)
                    .or_else(|| o["set_by"].as_str().map(str::to_owned))
            })
            .unwrap_or_default()
    };
    let applied = &view["applied"];
    let desired_v = &view["desired"];
    let report = &detail["report"]["status"];
    let desired = vec![
        (
            c.l.t("serial").to_owned(),
            desired_v["serial"].to_string().replace("null", "–"),
            applied["serial"].to_string().replace("null", "–"),
            String::new(),
        ),
        (
            c.l.t("release").to_owned(),
            desired_v["release"].as_str().unwrap_or("–").to_owned(),
            applied["release"].as_str().unwrap_or("–").to_owned(),
            origin("/software/set_by"),
        ),
        (
            c.l.t("videos").to_owned(),
            detail["bundle"]["files"]
                .as_array()
                .map_or(0, Vec::len)
                .to_string(),
            v.metrics
                .as_ref()
                .and_then(|m| m.video_count)
                .map_or_else(|| "–".into(), |n| n.to_string()),
            String::new(),
        ),
    ];
    let conditions: Vec<String> = v.conditions.clone();
    let range = match q.range.as_deref() {
        Some("7d") => "7d",
        Some("30d") => "30d",
        _ => "24h",
    };
    let hours = match range {
        "7d" => 24 * 7,
        "30d" => 24 * 30,
        _ => 24,
    };
    let from = now
        .saturating_sub(SignedDuration::from_hours(hours))
        .unwrap_or(now);
    // One point per pixel of the 600-wide chart is all it can show.
    let points = crate::history::for_display(
        state
            .fleet
            .store
            .history(&site, from, now)
            .unwrap_or_default(),
        from,
        now,
        600,
    );
    let mut charts = Vec::new();
    let series =
        |f: &dyn Fn(&crate::history::HistoryPoint) -> Option<f64>| -> Vec<(Timestamp, f64)> {
            points
                .iter()
                .filter_map(|p| f(p).map(|v| (p.at, v)))
                .collect()
        };
    #[allow(clippy::cast_precision_loss)]
    let defs: [ChartDef; 4] = [
        (
            "cpu",
            "cpu",
            Box::new(|p| p.cpu_percent.map(f64::from)),
            100.0,
            "%",
        ),
        (
            "memory",
            "memory",
            Box::new(|p| p.memory_percent.map(f64::from)),
            100.0,
            "%",
        ),
        (
            "temperature",
            "temperature",
            Box::new(|p| p.temperature_c.map(f64::from)),
            100.0,
            "°C",
        ),
        (
            "disk",
            "disk",
            Box::new(|p| match (p.disk_used_bytes, p.disk_total_bytes) {
                (Some(u), Some(t)) if t > 0 => Some(u as f64 * 100.0 / t as f64),
                _ => None,
            }),
            100.0,
            "%",
        ),
    ];
    for (metric, key, f, max, unit) in defs {
        let s = series(&*f);
        if !s.is_empty() {
            charts.push((
                metric.to_owned(),
                c.l.t(key).to_owned(),
                chart_svg(&s, from, now, max, &c.l, unit),
            ));
        }
    }
    let events = detail["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["at"]
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .map(|t| c.l.time(&t))
                    .unwrap_or_default(),
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let rows = |key: &str| -> Vec<(String, String, String)> {
        detail["origins"][key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let col = |i: usize| r[i].as_str().unwrap_or("").to_owned();
                (col(0), col(1), col(2))
            })
            .collect()
    };
    let (video_rows, config_rows) = (rows("video_rows"), rows("config_rows"));
    let page = SitePage {
        video_rows,
        config_rows,
        id: site.to_string(),
        name: v.name.clone(),
        club: v.club.clone(),
        status: v.status.as_str().to_owned(),
        status_label: status_label(&c.l, v.status).to_owned(),
        health: health_score(v, now),
        last_seen: c.l.ago_opt(&v.last_seen),
        phase: v.phase.clone().unwrap_or_default(),
        labels: v
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        groups: v.groups.join(", "),
        desired,
        conditions,
        last_error: report["last_error"].as_str().unwrap_or("").to_owned(),
        ranges: ["24h", "7d", "30d"]
            .into_iter()
            .map(|r| (r, r == range))
            .collect(),
        charts,
        events,
        c,
    };
    render(&page)
}

/// `GET /sites/{id}/history.csv?range=`: the history export for a logged-in
/// reader (the JSON API wants a bearer token, which a browser link lacks).
pub async fn history_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SiteQuery>,
) -> Response {
    if session(&state, &headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    let Ok(site) = SiteId::new(&id) else {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    };
    if !state.fleet.knows_site(&site) {
        return (StatusCode::NOT_FOUND, "no such site").into_response();
    }
    let (from, now) = export_range(q.range.as_deref());
    let store = state.fleet.store.clone();
    let site2 = site.clone();
    let points = tokio::task::spawn_blocking(move || store.history(&site2, from, now)).await;
    let Ok(Ok(points)) = points else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the history").into_response();
    };
    (
        crate::status::Export::Csv.headers(&format!("{site}-history")),
        crate::status::history_csv(&points),
    )
        .into_response()
}

/// The span of a history export link: `range` is `24h` (default), `7d`,
/// `30d` or `365d`; returns (from, now).
fn export_range(range: Option<&str>) -> (Timestamp, Timestamp) {
    let days = match range {
        Some("7d") => 7,
        Some("30d") => 30,
        Some("365d") => 365,
        _ => 1,
    };
    let now = Timestamp::now();
    let from = now
        .saturating_sub(SignedDuration::from_hours(24 * days))
        .unwrap_or(now);
    (from, now)
}

/// `GET /history.csv?range=24h|7d|30d|365d`: every site's history for a
/// logged-in reader, streamed (a `site` column first).
pub async fn fleet_history_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SiteQuery>,
) -> Response {
    if session(&state, &headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    let (from, now) = export_range(q.range.as_deref());
    (
        crate::status::Export::Csv.headers("fleet-history"),
        crate::status::fleet_history_body(
            state.fleet.store.clone(),
            state.fleet.site_ids(),
            from,
            now,
            crate::status::Export::Csv,
        ),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    c: Chrome,
    rows: Vec<AlertRow>,
}

/// `GET /alerts`.
pub async fn alerts(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (c, _) = match page(&state, &headers, "/alerts", "alerts", true) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let rows = alert_rows(&state, &c.l, false);
    render(&AlertsPage { c, rows })
}

struct ReleaseRow {
    version: String,
    running: u64,
    desired: u64,
    changelog: String,
    rolled_back: String,
    waiting: String,
    staged: String,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    c: Chrome,
    rows: Vec<ReleaseRow>,
}

/// `GET /releases`.
pub async fn releases(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (c, _) = match page(&state, &headers, "/releases", "releases", false) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let views = crate::status::site_views(&state.fleet, c.l.now).unwrap_or_default();
    let rel = crate::status::releases(&state.fleet, &views);
    let join = |v: &serde_json::Value, f: &dyn Fn(&serde_json::Value) -> String| -> String {
        v.as_array()
            .into_iter()
            .flatten()
            .map(f)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = rel["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| ReleaseRow {
            version: r["version"].as_str().unwrap_or("").to_owned(),
            running: r["running"].as_u64().unwrap_or(0),
            desired: r["desired"].as_u64().unwrap_or(0),
            changelog: r["manifest"]["changelog"]
                .as_str()
                .unwrap_or("")
                .trim()
                .to_owned(),
            rolled_back: join(&r["rolled_back"], &|x| {
                format!(
                    "{} ({})",
                    x["site"].as_str().unwrap_or(""),
                    x["output"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>()
                )
            }),
            waiting: join(&r["waiting"], &|x| {
                x["site"].as_str().unwrap_or("").to_owned()
            }),
            staged: join(&r["staged"], &|x| x.as_str().unwrap_or("").to_owned()),
        })
        .collect();
    render(&ReleasesPage { c, rows })
}

struct GroupRow {
    id: String,
    priority: i32,
    description: String,
    rule: String,
    members: Vec<String>,
    sets: String,
    file: String,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    c: Chrome,
    rows: Vec<GroupRow>,
}

/// `GET /groups`: each group's rule, members, and what it sets.
pub async fn groups(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (c, _) = match page(&state, &headers, "/groups", "groups", false) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(m) = state.fleet.manifests() else {
        return render(&GroupsPage {
            c,
            rows: Vec::new(),
        });
    };
    let mut rows: Vec<GroupRow> = m
        .manifests
        .groups
        .iter()
        .map(|(gid, g)| {
            let v = &g.value;
            let mut rule: Vec<String> = v
                .selector
                .iter()
                .flat_map(|s| s.match_labels.iter().map(|(k, val)| format!("{k}={val}")))
                .collect();
            if !v.sites.is_empty() {
                rule.push(format!(
                    "sites: {}",
                    v.sites
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let members: Vec<String> = m
                .members
                .iter()
                .filter(|(_, ms)| ms.iter().any(|x| &x.group == gid))
                .map(|(s, _)| s.to_string())
                .collect();
            GroupRow {
                id: gid.to_string(),
                priority: v.priority,
                description: v.description.clone().unwrap_or_default(),
                rule: if rule.is_empty() {
                    "—".into()
                } else {
                    rule.join(" · ")
                },
                members,
                sets: serde_yaml::to_string(&v.desired).unwrap_or_default(),
                file: g.file.to_string(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.id.cmp(&b.id)));
    render(&GroupsPage { c, rows })
}
