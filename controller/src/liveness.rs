//! How current a site's data is: its state from when the controller last
//! heard from it (its latest report or bundle poll), pure.
//!
//! ```text
//! online ──silent > 2 poll intervals──▶ overdue ──silent > offline_after──▶ offline
//!                                                  silent > bundle expiry──▶ stale
//! reporting, phase degraded or an error condition: degraded
//! reporting that its accepted bundle expired: stale
//! ```
//!
//! The controller's own downtime is not the box's silence: `offline` counts
//! from the later of the last contact and the controller's start, so a
//! restarted controller does not find the whole fleet offline before the
//! boxes had a chance to poll again. Until they do they are `overdue`
//! (late, and what is shown of them is their last known state).

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// A site's state as the status page and the API show it (ordered from
/// the best to the worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heard from within two poll intervals, nothing wrong.
    Online,
    /// Heard from, but its phase is degraded or a condition is an error.
    Degraded,
    /// Late by more than two poll intervals (not yet `offline_after`).
    Overdue,
    /// Silent for `offline_after` (or never heard from).
    Offline,
    /// Its bundle expired: it says so, or it has been silent longer than a
    /// bundle stays valid.
    Stale,
}

impl Health {
    /// Every state, in the order the page lists them.
    pub const ALL: [Health; 5] = [
        Health::Online,
        Health::Degraded,
        Health::Overdue,
        Health::Offline,
        Health::Stale,
    ];

    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Online => "online",
            Health::Degraded => "degraded",
            Health::Overdue => "overdue",
            Health::Offline => "offline",
            Health::Stale => "stale",
        }
    }

    /// Whether the box counts as reachable (a rollout wave waits for it).
    pub fn is_reachable(&self) -> bool {
        matches!(self, Health::Online | Health::Degraded | Health::Overdue)
    }
}

/// What a site's silence is measured against.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// When this controller started listening.
    pub listening_since: Timestamp,
    /// Silence after which a site is offline.
    pub offline_after: SignedDuration,
    /// The site's poll interval (its bundle's `agent.poll_interval`).
    pub poll_interval: SignedDuration,
    /// How long its bundles stay valid.
    pub bundle_validity: SignedDuration,
}

/// What the site last said of itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Said {
    /// Its phase is `stale`.
    pub stale: bool,
    /// Its phase is degraded or a condition is an error.
    pub troubled: bool,
}

/// How long the site counts as silent at `now`: since its last contact or
/// the controller's start, whichever is later (`None`: never heard from).
pub fn silence(
    last_seen: Option<Timestamp>,
    listening_since: Timestamp,
    now: Timestamp,
) -> Option<SignedDuration> {
    last_seen.map(|t| now.duration_since(t.max(listening_since)))
}

/// Whether a site heard from at `last_seen` is reachable at `now`.
pub fn reachable(
    last_seen: Option<Timestamp>,
    listening_since: Timestamp,
    offline_after: SignedDuration,
    now: Timestamp,
) -> bool {
    silence(last_seen, listening_since, now).is_some_and(|s| s <= offline_after)
}

/// Whether what the site last said (phase, conditions, metrics) is
/// current at `now`: heard from within two poll intervals. Otherwise it is
/// shown as its last known state.
pub fn fresh(last_seen: Option<Timestamp>, c: &Clocks, now: Timestamp) -> bool {
    last_seen.is_some_and(|t| now.duration_since(t) <= c.poll_interval.saturating_mul(2))
}

/// The site's state at `now`.
pub fn judge(last_seen: Option<Timestamp>, said: Said, c: &Clocks, now: Timestamp) -> Health {
    let Some(seen) = last_seen else {
        return Health::Offline;
    };
    let late = now.duration_since(seen);
    if !reachable(last_seen, c.listening_since, c.offline_after, now) {
        return if late >= c.bundle_validity {
            Health::Stale
        } else {
            Health::Offline
        };
    }
    if said.stale {
        Health::Stale
    } else if late > c.poll_interval.saturating_mul(2) {
        Health::Overdue
    } else if said.troubled {
        Health::Degraded
    } else {
        Health::Online
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn clocks() -> Clocks {
        Clocks {
            listening_since: at(0),
            offline_after: SignedDuration::from_secs(300),
            poll_interval: SignedDuration::from_secs(60),
            bundle_validity: SignedDuration::from_hours(24),
        }
    }

    #[test]
    fn a_site_goes_overdue_after_two_polls_then_offline_then_stale() {
        let c = clocks();
        let seen = Some(at(1000));
        let judge_at = |secs: i64| judge(seen, Said::default(), &c, at(1000 + secs));
        assert_eq!(judge_at(0), Health::Online);
        assert_eq!(judge_at(120), Health::Online);
        assert_eq!(judge_at(121), Health::Overdue);
        assert_eq!(judge_at(300), Health::Overdue);
        assert_eq!(judge_at(301), Health::Offline);
        assert_eq!(judge_at(86_399), Health::Offline);
        assert_eq!(judge_at(86_400), Health::Stale);
        assert_eq!(judge(None, Said::default(), &c, at(5)), Health::Offline);
        assert!(fresh(seen, &c, at(1120)));
        assert!(!fresh(seen, &c, at(1121)));
        assert!(!fresh(None, &c, at(1000)));
    }

    #[test]
    fn what_the_box_says_counts_only_while_it_is_heard() {
        let c = clocks();
        let seen = Some(at(1000));
        let troubled = Said {
            troubled: true,
            stale: false,
        };
        let stale = Said {
            stale: true,
            troubled: true,
        };
        assert_eq!(judge(seen, troubled, &c, at(1010)), Health::Degraded);
        assert_eq!(judge(seen, stale, &c, at(1010)), Health::Stale);
        // Late: the degraded phase is old news.
        assert_eq!(judge(seen, troubled, &c, at(1200)), Health::Overdue);
        assert_eq!(judge(seen, troubled, &c, at(2000)), Health::Offline);
    }

    #[test]
    fn the_controllers_downtime_is_not_the_boxes_silence() {
        // Last heard at 1000, the controller restarted at 5000: the box is
        // late (overdue) until offline_after has passed since the restart.
        let c = Clocks {
            listening_since: at(5000),
            ..clocks()
        };
        let seen = Some(at(1000));
        assert_eq!(judge(seen, Said::default(), &c, at(5001)), Health::Overdue);
        assert!(reachable(
            seen,
            c.listening_since,
            c.offline_after,
            at(5300)
        ));
        assert_eq!(judge(seen, Said::default(), &c, at(5301)), Health::Offline);
        assert_eq!(
            silence(seen, c.listening_since, at(5010)),
            Some(SignedDuration::from_secs(10))
        );
    }
}
