//! The releases page: adoption, staging, rollbacks.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;

use super::{Chrome, LoggedIn, page, render};

struct ReleaseRow {
    version: String,
    running: u64,
    desired: u64,
    changelog: String,
    rolled_back: String,
    waiting: String,
    staged: String,
}

/// A wave as the page shows it.
struct WaveRow {
    name: String,
    /// `applied / sites`.
    applied: String,
    /// Reachable boxes that are not there yet, unreachable ones.
    waiting: usize,
    unreachable: usize,
    rolled_back: usize,
    /// Opened, passed: a time or `–`.
    opened: String,
    passed: String,
    /// Its sites not there yet: `site (state)`, at most 20.
    pending: String,
}

/// The current rollout as the page shows it.
struct RolloutShown {
    /// `moving`, `halted`, `complete`, `superseded` (a CSS class) and its
    /// label.
    state: String,
    state_label: String,
    targets: String,
    commit: String,
    started: String,
    policy_file: String,
    waves: Vec<WaveRow>,
    next_opening: Option<String>,
    /// When it halted, and the boxes behind it: site, what (label), output.
    halted_at: Option<String>,
    troubles: Vec<(String, String, String)>,
    /// The last resume: who, when.
    resumed: Option<String>,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    c: Chrome,
    rollout: Option<RolloutShown>,
    /// An operator: the resume button of a halted rollout.
    can_act: bool,
    rows: Vec<ReleaseRow>,
    /// The agent's own releases (`staged` holds the sites on trial).
    agents: Vec<ReleaseRow>,
}

/// `GET /releases`.
pub async fn releases(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let c = page(&state, &headers, &s, "/releases", "releases", false);
    let now = c.l.now;
    let Ok((rel, rollouts)) = state
        .read(move |f| {
            let views = crate::status::site_views(f, now)?;
            Ok((
                crate::status::releases(f, &views),
                crate::progress::rollouts(f, now)?,
            ))
        })
        .await
    else {
        return axum::response::IntoResponse::into_response((
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the store",
        ));
    };
    let rows = rel
        .releases
        .iter()
        .map(|r| ReleaseRow {
            version: r.version.clone(),
            running: r.running as u64,
            desired: r.desired as u64,
            changelog: r
                .manifest
                .as_ref()
                .map(|m| m.changelog.trim().to_owned())
                .unwrap_or_default(),
            rolled_back: rolled_back(&r.rolled_back),
            waiting: r
                .waiting
                .iter()
                .map(|x| x.site.clone())
                .collect::<Vec<_>>()
                .join(", "),
            staged: r.staged.join(", "),
        })
        .collect();
    let agents = rel
        .agents
        .iter()
        .filter(|a| a.in_manifests || a.running > 0)
        .map(|a| ReleaseRow {
            version: a.version.clone(),
            running: a.running as u64,
            desired: a.desired as u64,
            changelog: String::new(),
            rolled_back: rolled_back(&a.rolled_back),
            waiting: a
                .waiting
                .iter()
                .map(|x| x.site.clone())
                .collect::<Vec<_>>()
                .join(", "),
            staged: a.on_trial.join(", "),
        })
        .collect();
    let rollout = rollouts.current.as_ref().map(|r| shown(r, &c.l));
    render(&ReleasesPage {
        can_act: s.role >= crate::config::Role::Operator,
        rollout,
        c,
        rows,
        agents,
    })
}

/// A rollout in the reader's language (the API keeps its English words).
fn shown(r: &crate::progress::RolloutView, l: &crate::i18n::L10n) -> RolloutShown {
    let time = |t: Option<jiff::Timestamp>| t.map_or_else(|| "–".to_owned(), |t| l.time(&t));
    RolloutShown {
        state: r.state.to_owned(),
        state_label: l.t(&format!("ro_{}", r.state)).to_owned(),
        targets: r.targets.join(", "),
        commit: r.latest_commit.chars().take(10).collect(),
        started: l.time(&r.started_at),
        policy_file: r.policy_file.clone(),
        waves: r
            .waves
            .iter()
            .map(|w| WaveRow {
                name: w.name.clone(),
                applied: format!("{} / {}", w.tally.applied, w.tally.sites),
                waiting: w.tally.waiting + w.tally.in_progress + w.tally.not_opened,
                unreachable: w.tally.unreachable,
                rolled_back: w.tally.rolled_back + w.tally.failed,
                opened: time(w.opened_at),
                passed: time(w.passed_at),
                pending: w
                    .pending
                    .iter()
                    .take(20)
                    .map(|p| super::pending(l, p.site.as_str(), p.state, p.reason.as_deref()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
        next_opening: r.next_opening.map(|t| l.time(&t)),
        halted_at: r.halted.as_ref().map(|h| l.time(&h.at)),
        troubles: r
            .halted
            .iter()
            .flat_map(|h| &h.sites)
            .map(|t| {
                (
                    t.site.to_string(),
                    l.t(&format!("st_{}", t.kind)).to_owned(),
                    t.output.chars().take(500).collect(),
                )
            })
            .collect(),
        resumed: r
            .resumes
            .last()
            .map(|x| format!("{} · {}", x.by, l.time(&x.at))),
    }
}

/// `POST /rollout/resume` (operator): ends the halt of the current
/// rollout (audited, like `POST /api/rollout/resume`).
pub async fn resume_rollout(
    LoggedIn(s): LoggedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    axum::Form(f): axum::Form<super::CsrfForm>,
) -> Response {
    if let Err(r) = super::act(&s, &f, crate::config::Role::Operator) {
        return *r;
    }
    let fleet = state.fleet.clone();
    let who = s.name.clone();
    let source = crate::listen::source(
        &headers,
        peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a),
    );
    let done = tokio::task::spawn_blocking(move || {
        fleet.resume_rollout(&who, source, jiff::Timestamp::now())
    })
    .await;
    match done {
        Ok(Ok(_)) => {
            tracing::info!(operator = %s.name, "rollout resumed from the status page");
            axum::response::Redirect::to("/releases").into_response()
        }
        Ok(Err(crate::fleet::ResumeError::NotHalted)) => (
            axum::http::StatusCode::CONFLICT,
            "the rollout is not halted",
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "resuming the rollout failed");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "cannot resume the rollout",
            )
                .into_response()
        }
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot resume the rollout",
        )
            .into_response(),
    }
}

/// `site (why), …`, each reason cut at 200 characters.
fn rolled_back(list: &[crate::status::RolledBackSite]) -> String {
    list.iter()
        .map(|x| {
            format!(
                "{} ({})",
                x.site,
                x.output.chars().take(200).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
