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
use touchline_schemas::{Bundle, SiteId};

use crate::config::{CommitStatus, GitHost};
use crate::fleet::Fleet;
use crate::outbox::{OutboxId, Outgoing, StatusState, Target};
use crate::rollout::{Outcome, Tally};
use crate::store::{Bookkeeping, CommitState, StoreError};

/// The store's key for the last status queued (`<commit> <state>
/// <description>`), so that an unchanged status is not sent again.
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

/// What the latest commit's status is now: refused, or its boxes'
/// progress. `None`: no commit yet.
pub fn current(fleet: &Fleet, now: Timestamp) -> Result<Option<Update>, StoreError> {
    let Some(latest) = fleet.store.commits(1)?.into_iter().next() else {
        return Ok(None);
    };
    if latest.state == CommitState::Refused {
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
        return Ok(Some(Update {
            commit: latest.id,
            state: StatusState::Failure,
            description,
        }));
    }
    let rollout = fleet
        .rollout()
        .filter(|r| r.superseded_by.is_none() && r.latest_commit == latest.id);
    // Every latest report in one read, not one read a site.
    let latest_reports: std::collections::HashMap<SiteId, crate::store::SiteState> = fleet
        .store
        .latest_all()?
        .into_iter()
        .map(|s| (s.site.clone(), s))
        .collect();
    let mut tally = Tally::default();
    for (site, p) in fleet.bundles() {
        let Ok(b) = Bundle::from_slice(&p.body) else {
            continue;
        };
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
    Ok(Some(Update {
        commit: latest.id,
        state,
        description,
    }))
}

/// Queues `u` unless it is what was queued last; one outbox item per
/// commit (a newer update replaces one not delivered yet).
pub fn queue(fleet: &Fleet, u: &Update, now: Timestamp) -> Result<bool, StoreError> {
    if fleet.config.commit_status.is_none() {
        return Ok(false);
    }
    let state = serde_json::to_value(u.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let key = format!("{} {state} {}", u.commit, u.description);
    if fleet.store.meta(LAST_KEY)?.as_deref() == Some(key.as_str()) {
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
    fleet.store.set_meta(LAST_KEY, &key)?;
    Ok(true)
}

/// Computes the latest commit's status and queues it if it changed.
pub fn tick(fleet: &Fleet, now: Timestamp) -> Result<bool, StoreError> {
    if fleet.config.commit_status.is_none() {
        return Ok(false);
    }
    match current(fleet, now)? {
        Some(u) => queue(fleet, &u, now),
        None => Ok(false),
    }
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
