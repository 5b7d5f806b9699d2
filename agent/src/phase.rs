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
//! `fetching` and `applying` are entered inside a pass (the reconcile code
//! sets them as it goes); the end of every pass goes through
//! [`after_pass`]. `updating` is set by the software step during a switch.

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

/// The phase at the end of a pass.
pub fn after_pass(_current: Phase, f: &Facts) -> Phase {
    if f.stale && f.has_bundle {
        Phase::Stale
    } else if f.converged {
        Phase::Converged
    } else if f.waiting && !f.failed {
        Phase::Waiting
    } else if f.failed || f.has_bundle {
        Phase::Degraded
    } else {
        Phase::Starting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            after_pass(Phase::Starting, &f(true, true, false, false)),
            Phase::Converged
        );
        assert_eq!(
            after_pass(Phase::Applying, &f(false, true, false, true)),
            Phase::Degraded
        );
        assert_eq!(
            after_pass(Phase::Converged, &f(true, true, true, false)),
            Phase::Stale
        );
        assert_eq!(
            after_pass(Phase::Starting, &f(false, false, false, false)),
            Phase::Starting
        );
        let waiting = Facts {
            waiting: true,
            ..f(false, true, false, false)
        };
        assert_eq!(after_pass(Phase::Updating, &waiting), Phase::Waiting);
        let failed = Facts {
            waiting: true,
            ..f(false, true, false, true)
        };
        assert_eq!(after_pass(Phase::Updating, &failed), Phase::Degraded);
    }
}
