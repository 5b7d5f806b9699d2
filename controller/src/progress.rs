//! Where a rollout stands, as operators read it (`/api/rollout`, the
//! releases page, commit statuses): per wave N / M applied, and each site
//! that is not there yet with its reason. Derived on request from the
//! rollout record and the latest reports.

use jiff::Timestamp;
use serde::Serialize;
use touchline_schemas::SiteId;
use touchline_schemas::rollout::RolloutPolicy;

use crate::fleet::Fleet;
use crate::rollout::{self, Halt, Outcome, Resume, Rollout, Tally};
use crate::store::StoreError;

/// A site not running its target yet, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PendingSite {
    /// The site.
    pub site: SiteId,
    /// `waiting`, `in_progress`, `rolled_back`, `failed`, `unreachable`,
    /// `not_opened`.
    pub state: &'static str,
    /// What the box said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One wave.
#[derive(Debug, Clone, Serialize)]
pub struct WaveView {
    /// Its name.
    pub name: String,
    /// When it opened.
    pub opened_at: Option<Timestamp>,
    /// When it reached its success share.
    pub passed_at: Option<Timestamp>,
    /// Its counts.
    pub tally: Tally,
    /// `12/15 applied`.
    pub progress: String,
    /// Its sites not there yet (at most 200).
    pub pending: Vec<PendingSite>,
}

/// A rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    /// The commit that started it.
    pub commit: String,
    /// Its serial.
    pub serial: u64,
    /// The latest commit it goes on with.
    pub latest_commit: String,
    /// When it started.
    pub started_at: Timestamp,
    /// `moving`, `halted`, `complete`, `superseded`.
    pub state: &'static str,
    /// One line: `wave 1/3 beta · 2/5 applied · …`.
    pub summary: String,
    /// What it moves sites to (`release 2.0.0`, …).
    pub targets: Vec<String>,
    /// The policy and its file.
    pub policy: RolloutPolicy,
    /// Where the policy comes from.
    pub policy_file: String,
    /// Its waves.
    pub waves: Vec<WaveView>,
    /// When the next wave opens (bake time).
    pub next_opening: Option<Timestamp>,
    /// Why it halted.
    pub halted: Option<Halt>,
    /// Its resumes.
    pub resumes: Vec<Resume>,
    /// When its last wave passed.
    pub finished_at: Option<Timestamp>,
    /// The commit that replaced it.
    pub superseded_by: Option<String>,
}

/// `/api/rollout`.
#[derive(Debug, Clone, Serialize)]
pub struct Rollouts {
    /// The current rollout.
    pub current: Option<RolloutView>,
    /// The one before.
    pub previous: Option<RolloutView>,
}

const MAX_PENDING: usize = 200;

/// The view of one rollout.
pub fn view(fleet: &Fleet, r: &Rollout, now: Timestamp) -> Result<RolloutView, StoreError> {
    let outcomes = fleet.rollout_outcomes(r, now)?;
    let waves = r
        .waves
        .iter()
        .zip(&outcomes)
        .map(|(w, outs)| {
            let mut tally = Tally::default();
            for (_, o) in outs {
                tally.add(o);
            }
            let pending = outs
                .iter()
                .filter(|(_, o)| *o != Outcome::Applied)
                .take(MAX_PENDING)
                .map(|(site, o)| PendingSite {
                    site: site.clone(),
                    state: o.key(),
                    reason: o.reason().map(str::to_owned),
                })
                .collect();
            WaveView {
                name: w.name.clone(),
                opened_at: w.opened_at,
                passed_at: w.passed_at,
                progress: format!("{}/{} applied", tally.applied, tally.sites),
                tally,
                pending,
            }
        })
        .collect();
    let state = if r.superseded_by.is_some() {
        "superseded"
    } else if r.finished_at.is_some() {
        "complete"
    } else if r.halted.is_some() {
        "halted"
    } else {
        "moving"
    };
    Ok(RolloutView {
        commit: r.commit.clone(),
        serial: r.serial,
        latest_commit: r.latest_commit.clone(),
        started_at: r.started_at,
        state,
        summary: rollout::summary(r, &outcomes),
        targets: r.targets.iter().map(rollout::Target::describe).collect(),
        policy: r.policy.clone(),
        policy_file: r.policy_file.clone(),
        waves,
        next_opening: rollout::next_opening(r),
        halted: r.halted.clone(),
        resumes: r.resumes.clone(),
        finished_at: r.finished_at,
        superseded_by: r.superseded_by.clone(),
    })
}

/// The current and previous rollouts.
pub fn rollouts(fleet: &Fleet, now: Timestamp) -> Result<Rollouts, StoreError> {
    Ok(Rollouts {
        current: fleet.rollout().map(|r| view(fleet, &r, now)).transpose()?,
        previous: fleet
            .previous_rollout()
            .map(|r| view(fleet, &r, now))
            .transpose()?,
    })
}
