//! One status per commit on the git host (`[commit_status]`): the latest
//! commit the controller looked at is reported refused (with its first
//! diagnostics), then as its boxes converge as **one** aggregated status
//! (`142/150 applied · 6 waiting · 2 offline`), final when every reachable
//! box runs it or its rollout halts. Updates go through the notification
//! outbox (persistent, retried); one outbox item per commit, replaced by
//! each newer update, so a slow host receives the latest text, not a
//! backlog. GitHub, Gitea/Forgejo (the same statuses API) and GitLab.

use jiff::Timestamp;
use serde_json::{Value, json};
use touchline_schemas::SiteId;

use crate::config::{CommitStatus, GitHost};
use crate::fleet::Fleet;
use crate::outbox::{OutboxId, Outgoing, StatusState, Target};
use crate::rollout::{Outcome, Tally};
use crate::store::{Bookkeeping, CommitState, StoreError};

/// The store's key for the last progress status queued (`<commit>
/// <state> <description>`), so that an unchanged status is not sent
/// again.
const LAST_KEY: &str = "status/last";

/// Longest description the hosts take (GitHub: 140).
const MAX_DESCRIPTION: usize = 140;

/// A status to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The commit.
    pub commit: String,
    /// Its state.
    pub state: StatusState,
    /// One line.
    pub description: String,
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_DESCRIPTION {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_DESCRIPTION - 1).collect();
        out.push('…');
        out
    }
}

/// The HTTP request for a status: method POST, URL, headers, JSON body.
pub fn request(
    cfg: &CommitStatus,
    token: &str,
    commit: &str,
    state: StatusState,
    description: &str,
) -> (String, Vec<(&'static str, String)>, Value) {
    let api = cfg.api_url.trim_end_matches('/');
    let description = cut(description);
    match cfg.kind {
        GitHost::Github | GitHost::Gitea => {
            let state = match state {
                StatusState::Pending => "pending",
                StatusState::Success => "success",
                StatusState::Failure => "failure",
                // GitHub has no state of its own for it; Gitea's
                // `warning` is final and not a failure.
                StatusState::Superseded if cfg.kind == GitHost::Gitea => "warning",
                StatusState::Superseded => "error",
            };
            let mut body = json!({
                "state": state,
                "description": description,
                "context": cfg.context(),
            });
            if let Some(u) = &cfg.target_url {
                body["target_url"] = json!(u);
            }
            let auth = if cfg.kind == GitHost::Github {
                vec![
                    ("authorization", format!("Bearer {token}")),
                    ("accept", "application/vnd.github+json".to_owned()),
                    ("x-github-api-version", "2022-11-28".to_owned()),
                ]
            } else {
                vec![("authorization", format!("token {token}"))]
            };
            (
                format!("{api}/repos/{}/statuses/{commit}", cfg.repository),
                auth,
                body,
            )
        }
        GitHost::Gitlab => {
            // GitLab refuses a transition to the state a status is in
            // ("pending" twice), and a moving rollout runs.
            let state = match state {
                StatusState::Pending => "running",
                StatusState::Success => "success",
                StatusState::Failure => "failed",
                StatusState::Superseded => "canceled",
            };
            let mut body = json!({
                "state": state,
                "description": description,
                "name": cfg.context(),
            });
            if let Some(u) = &cfg.target_url {
                body["target_url"] = json!(u);
            }
            // The project path is one path segment (`neopro%2Ffleet`).
            let url = url::Url::parse(api)
                .ok()
                .and_then(|mut u| {
                    u.path_segments_mut().ok()?.pop_if_empty().extend([
                        "projects",
                        cfg.repository.as_str(),
                        "statuses",
                        commit,
                    ]);
                    Some(u.to_string())
                })
                .unwrap_or_else(|| {
                    format!(
                        "{api}/projects/{}/statuses/{commit}",
                        cfg.repository.replace('/', "%2F")
                    )
                });
            (url, vec![("private-token", token.to_owned())], body)
        }
    }
}

/// How far back the commit the boxes run is looked for behind refused
/// commits.
const RECENT: usize = 100;

/// The store's key for the last refused commit given its status.
const REFUSED_KEY: &str = "status/refused";

/// The statuses to show now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statuses {
    /// The latest commit, if it was refused.
    pub refused: Option<Update>,
    /// The progress of the latest accepted commit: the one the boxes move
    /// to, still reported while later commits are refused.
    pub progress: Option<Update>,
}

/// What the commits' statuses are now (nothing before the first commit).
pub fn current(fleet: &Fleet, now: Timestamp) -> Result<Statuses, StoreError> {
    let recent = fleet.store.commits(RECENT)?;
    let mut out = Statuses::default();
    if let Some(latest) = recent.first()
        && latest.state == CommitState::Refused
    {
        let first = latest
            .diagnostics
            .iter()
            .find(|d| d.contains("error"))
            .or(latest.diagnostics.first());
        let why = latest.reason.clone().unwrap_or_default();
        let description = match first {
            Some(d) => format!("refused: {d}"),
            None => format!("refused: {why}"),
        };
        out.refused = Some(Update {
            commit: latest.id.clone(),
            state: StatusState::Failure,
            description,
        });
    }
    if let Some(accepted) = recent.iter().find(|c| c.state == CommitState::Accepted) {
        out.progress = Some(progress(fleet, &accepted.id, now)?);
    }
    Ok(out)
}

/// The progress of `commit`, the accepted commit the boxes move to.
fn progress(fleet: &Fleet, commit: &str, now: Timestamp) -> Result<Update, StoreError> {
    let rollout = fleet
        .rollout()
        .filter(|r| r.superseded_by.is_none() && r.latest_commit == commit);
    // Every latest report in one read, not one read a site.
    let latest_reports: std::collections::HashMap<SiteId, crate::store::SiteState> = fleet
        .store
        .latest_all()?
        .into_iter()
        .map(|s| (s.site.clone(), s))
        .collect();
    let mut tally = Tally::default();
    for (site, b) in fleet.bundle_heads() {
        let reachable = fleet.reachable(&site, now);
        let o = match &rollout {
            Some(r) if r.holds_back(&site) => Outcome::NotOpened,
            _ => crate::rollout::bundle_outcome(&b, latest_reports.get(&site), reachable),
        };
        tally.add(&o);
    }
    let parts = tally.parts("waiting for the window or the lock", "offline");
    let mut description = parts.join(" · ");
    let state = match rollout.as_ref().and_then(|r| r.halted.as_ref()) {
        Some(h) => {
            description = format!("rollout halted: {} · {description}", h.reason);
            StatusState::Failure
        }
        None if tally.applied > 0
            && tally.applied == tally.reachable()
            && tally.not_opened == 0 =>
        {
            StatusState::Success
        }
        None => StatusState::Pending,
    };
    Ok(Update {
        commit: commit.to_owned(),
        state,
        description,
    })
}

/// Queues `u` unless it is what was queued last under `last_key`; one
/// outbox item per commit (a newer update replaces one not delivered
/// yet).
fn queue(fleet: &Fleet, u: &Update, last_key: &str, now: Timestamp) -> Result<bool, StoreError> {
    if fleet.config.commit_status.is_none() {
        return Ok(false);
    }
    let state = serde_json::to_value(u.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let key = format!("{} {state} {}", u.commit, u.description);
    if fleet.store.meta(last_key)?.as_deref() == Some(key.as_str()) {
        return Ok(false);
    }
    let item = Outgoing {
        target: Target::CommitStatus {
            commit: u.commit.clone(),
            state: u.state,
            description: u.description.clone(),
        },
        attempts: 0,
        next_at: now,
        last_error: None,
    };
    // The id sorts after the alerts queued before the commit's first status
    // and is the same for every update of the commit.
    let id = OutboxId::new(Timestamp::UNIX_EPOCH, &format!("status-{}", u.commit), 0);
    fleet.store.write_bookkeeping(Bookkeeping {
        outbox: vec![(id, Some(item))],
        ..Bookkeeping::default()
    })?;
    fleet.store.set_meta(last_key, &key)?;
    Ok(true)
}

/// The final status of a commit whose last one was still pending when
/// `newer` took its place: `last` is what was queued for it
/// (`<commit> <state> <description>`).
pub fn superseded(last: &str, newer: &str) -> Option<Update> {
    let (commit, rest) = last.split_once(' ')?;
    let description = rest.strip_prefix("pending ")?;
    if commit == newer {
        return None;
    }
    let short: String = newer.chars().take(10).collect();
    Some(Update {
        commit: commit.to_owned(),
        state: StatusState::Superseded,
        description: cut(&format!("superseded by {short} · {description}")),
    })
}

/// Computes the latest commit's status and queues it if it changed;
/// first, a commit left pending by a newer one gets its final status.
pub fn tick(fleet: &Fleet, now: Timestamp) -> Result<bool, StoreError> {
    if fleet.config.commit_status.is_none() {
        return Ok(false);
    }
    let mut sent = false;
    let now_shown = current(fleet, now)?;
    if let Some(u) = &now_shown.refused {
        sent |= queue(fleet, u, REFUSED_KEY, now)?;
    }
    if let Some(u) = &now_shown.progress {
        if let Some(old) = fleet
            .store
            .meta(LAST_KEY)?
            .and_then(|last| superseded(&last, &u.commit))
        {
            sent |= queue(fleet, &old, LAST_KEY, now)?;
        }
        sent |= queue(fleet, u, LAST_KEY, now)?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: GitHost, api: &str, repo: &str) -> CommitStatus {
        CommitStatus {
            kind,
            api_url: api.into(),
            repository: repo.into(),
            token_file: "/dev/null".into(),
            context: None,
            target_url: Some("https://tl.example.org/".into()),
        }
    }

    #[test]
    fn a_pending_commit_is_finalised_when_a_newer_one_replaces_it() {
        let u = superseded("aaa pending 3/5 applied · 2 offline", "bbbbbbbbbbbbbbbb").unwrap();
        assert_eq!(u.commit, "aaa");
        assert_eq!(u.state, StatusState::Superseded);
        assert_eq!(
            u.description,
            "superseded by bbbbbbbbbb · 3/5 applied · 2 offline"
        );
        // Final already, or the same commit: nothing to do.
        assert_eq!(superseded("aaa success 5/5 applied", "bbb"), None);
        assert_eq!(superseded("aaa failure refused: x", "bbb"), None);
        assert_eq!(superseded("aaa pending 3/5 applied", "aaa"), None);
        let host = |kind, api| {
            request(
                &cfg(kind, api, "neopro/fleet"),
                "tok",
                "aaa",
                StatusState::Superseded,
                "x",
            )
            .2["state"]
                .clone()
        };
        assert_eq!(host(GitHost::Github, "https://api.github.com"), "error");
        assert_eq!(
            host(GitHost::Gitea, "https://git.example.org/api/v1"),
            "warning"
        );
        assert_eq!(
            host(GitHost::Gitlab, "https://gitlab.example.org/api/v4"),
            "canceled"
        );
    }

    #[test]
    fn each_host_gets_its_own_request() {
        let (url, headers, body) = request(
            &cfg(GitHost::Github, "https://api.github.com/", "neopro/fleet"),
            "tok",
            "abc",
            StatusState::Pending,
            "2/5 applied",
        );
        assert_eq!(
            url,
            "https://api.github.com/repos/neopro/fleet/statuses/abc"
        );
        assert_eq!(headers[0], ("authorization", "Bearer tok".to_owned()));
        assert_eq!(
            body,
            json!({"state": "pending", "description": "2/5 applied", "context": "touchline", "target_url": "https://tl.example.org/"})
        );
        let (url, headers, _) = request(
            &cfg(
                GitHost::Gitea,
                "https://git.example.org/api/v1",
                "neopro/fleet",
            ),
            "tok",
            "abc",
            StatusState::Failure,
            "x",
        );
        assert_eq!(
            url,
            "https://git.example.org/api/v1/repos/neopro/fleet/statuses/abc"
        );
        assert_eq!(headers, [("authorization", "token tok".to_owned())]);
        let (url, headers, body) = request(
            &cfg(
                GitHost::Gitlab,
                "https://gitlab.example.org/api/v4",
                "neopro/fleet",
            ),
            "tok",
            "abc",
            StatusState::Pending,
            &"é".repeat(200),
        );
        assert_eq!(
            url,
            "https://gitlab.example.org/api/v4/projects/neopro%2Ffleet/statuses/abc"
        );
        assert_eq!(headers, [("private-token", "tok".to_owned())]);
        assert_eq!(body["state"], "running");
        assert_eq!(body["name"], "touchline");
        assert_eq!(
            body["description"].as_str().unwrap().chars().count(),
            MAX_DESCRIPTION
        );
    }
}
