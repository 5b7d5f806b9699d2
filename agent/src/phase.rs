//! The agent's phase: one enum (`touchline_schemas::report::Phase`) and its
//! transitions, all here.
//!
//! ```text
//! starting ──pass──▶ converged | degraded | stale
//! converged ──new bundle──▶ fetching ──▶ applying ──▶ converged
//!                               └─────────┴──failure──▶ degraded
//! applying ──release staged, window closed or update lock held──▶ waiting
//! waiting ──window open, lock free──▶ updating ──▶ converged | degraded (rolled back)
//! any ──accepted bundle expired (box keeps it)──▶ stale
//! ```
//! Every change of phase goes through [`next`]: the pass reports events
//! (it starts downloading, writing files, switching a release; it ended
//! with these facts) and the phase follows.

use touchline_schemas::report::Phase;

/// What a pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Everything applied, nothing blocking.
    pub converged: bool,
    /// Some bundle is applied on disk.
    pub has_bundle: bool,
    /// The accepted bundle has expired (it keeps running).
    pub stale: bool,
    /// The pass failed while a bundle is applied.
    pub failed: bool,
    /// Files applied; a staged release waits for its window or the lock.
    pub waiting: bool,
}

/// What happens to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It starts downloading (files or a release package).
    Fetch,
    /// It starts writing files.
    Apply,
    /// It starts switching (or recovering a switch of) a release.
    Switch,
    /// A pass ended.
    Passed(Facts),
}

/// The phase after `event`.
pub fn next(phase: Phase, event: Event) -> Phase {
    match (phase, event) {
        (_, Event::Fetch) => Phase::Fetching,
        (_, Event::Apply) => Phase::Applying,
        (_, Event::Switch) => Phase::Updating,
        (_, Event::Passed(f)) if f.stale && f.has_bundle => Phase::Stale,
        (_, Event::Passed(f)) if f.converged => Phase::Converged,
        (_, Event::Passed(f)) if f.waiting && !f.failed => Phase::Waiting,
        (_, Event::Passed(f)) if f.failed || f.has_bundle => Phase::Degraded,
        // Nothing applied yet: a box that never converged is still
        // starting, whatever it tried in this pass.
        (_, Event::Passed(_)) => Phase::Starting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_after(p: Phase, f: &Facts) -> Phase {
        next(p, Event::Passed(*f))
    }

    #[test]
    fn steps_of_a_pass_set_their_phase() {
        assert_eq!(next(Phase::Converged, Event::Fetch), Phase::Fetching);
        assert_eq!(next(Phase::Fetching, Event::Apply), Phase::Applying);
        assert_eq!(next(Phase::Waiting, Event::Switch), Phase::Updating);
    }

    #[test]
    fn transitions() {
        let f = |converged, has_bundle, stale, failed| Facts {
            converged,
            has_bundle,
            stale,
            failed,
            waiting: false,
        };
        assert_eq!(
            next_after(Phase::Starting, &f(true, true, false, false)),
            Phase::Converged
        );
        assert_eq!(
            next_after(Phase::Applying, &f(false, true, false, true)),
            Phase::Degraded
        );
        assert_eq!(
            next_after(Phase::Converged, &f(true, true, true, false)),
            Phase::Stale
        );
        assert_eq!(
            next_after(Phase::Starting, &f(false, false, false, false)),
            Phase::Starting
        );
        let waiting = Facts {
            waiting: true,
            ..f(false, true, false, false)
        };
        assert_eq!(next_after(Phase::Updating, &waiting), Phase::Waiting);
        let failed = Facts {
            waiting: true,
            ..f(false, true, false, true)
        };
        assert_eq!(next_after(Phase::Updating, &failed), Phase::Degraded);
    }
}
