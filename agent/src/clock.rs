//! Time on a box without a real-time clock.
//!
//! The agent never trusts a clock earlier than its *time floor*: the
//! highest of its last persisted time, the issue time of the last bundle it
//! accepted, and its own build time. A clock far ahead (a box that booted
//! with a bad RTC and says 2031) is corrected by the controller's `Date`
//! header when the two disagree by more than [`SKEW_TOLERANCE`]. Expiry only
//! blocks applying a *new* bundle; what is on disk keeps running.

use jiff::{SignedDuration, Timestamp};

/// Disagreement with the controller's clock above which the controller wins.
pub const SKEW_TOLERANCE: SignedDuration = SignedDuration::from_mins(5);

/// A source of wall-clock time (a trait so that tests can set the box's
/// clock to 1970 or 2031).
pub trait Clock: Send + Sync {
    /// The box's clock.
    fn now(&self) -> Timestamp;
}

/// The system clock. With `TOUCHLINE_TEST_CLOCK=<RFC 3339>` in the
/// environment (tests only) it starts at that time and advances normally.
#[derive(Debug)]
pub struct SystemClock {
    offset: SignedDuration,
}

impl SystemClock {
    /// Reads `TOUCHLINE_TEST_CLOCK`.
    pub fn from_env() -> Self {
        let offset = std::env::var("TOUCHLINE_TEST_CLOCK")
            .ok()
            .and_then(|v| v.parse::<Timestamp>().ok())
            .map_or(SignedDuration::ZERO, |t| t.duration_since(Timestamp::now()));
        Self { offset }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// The agent's build time (day resolution), a floor for every clock.
pub fn build_time() -> Timestamp {
    option_env!("TOUCHLINE_BUILD_EPOCH")
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What the agent believes the time is, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNow {
    /// The time used for expiry and reports.
    pub now: Timestamp,
    /// The box's own clock.
    pub clock: Timestamp,
    /// The floor in force.
    pub floor: Timestamp,
    /// `clock - controller`, when the controller's clock was used.
    pub corrected_by: Option<SignedDuration>,
}

/// `max(clock corrected by the controller's offset, floor)`.
///
/// `server_offset` is `controller clock - box clock` measured on the last
/// response with a `Date` header.
pub fn trusted_now(
    clock: Timestamp,
    floor: Timestamp,
    server_offset: Option<SignedDuration>,
) -> TrustedNow {
    let floor = floor.max(build_time());
    let (corrected, corrected_by) = match server_offset {
        Some(off) if off.abs() > SKEW_TOLERANCE => {
            (clock.checked_add(off).unwrap_or(clock), Some(-off))
        }
        _ => (clock, None),
    };
    TrustedNow {
        now: corrected.max(floor),
        clock,
        floor,
        corrected_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_clock_in_1970_is_lifted_to_the_floor() {
        let n = trusted_now(t("1970-01-01T00:00:10Z"), t("2026-11-20T10:00:00Z"), None);
        assert_eq!(n.now, t("2026-11-20T10:00:00Z").max(build_time()));
        assert!(n.corrected_by.is_none());
    }

    #[test]
    fn a_clock_in_2031_is_corrected_by_the_controller() {
        let clock = t("2031-05-01T00:00:00Z");
        let controller = t("2026-11-22T12:00:00Z");
        let n = trusted_now(
            clock,
            t("2026-11-20T10:00:00Z"),
            Some(controller.duration_since(clock)),
        );
        assert_eq!(n.now, controller.max(build_time()));
        assert_eq!(n.corrected_by, Some(clock.duration_since(controller)));
        // A small skew is not corrected: the box's clock is used.
        let n = trusted_now(
            controller,
            t("2026-11-20T10:00:00Z"),
            Some(SignedDuration::from_secs(30)),
        );
        assert_eq!(n.now, controller.max(build_time()));
        assert_eq!(n.corrected_by, None);
    }
}
