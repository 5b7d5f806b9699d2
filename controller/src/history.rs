//! Metrics history points: what the controller keeps of each report's
//! metrics for charts and the CSV export, and how older points are
//! downsampled.
//!
//! A point holds the chartable numbers only (CPU, memory, temperature, load,
//! disk, uptime). Points younger than the first tier are kept as reported
//! (one per report, typically every 5 minutes); older ones are merged into
//! one point per bucket of the tier they fall in ([`housekeeping`]; by
//! default 5 minutes after 48 hours, 1 hour after 30 days, dropped after a
//! year): means for the gauges, the maximum temperature, the last disk and
//! uptime figures, and the number of raw samples merged. A site reporting
//! every 5 minutes keeps about 16,700 points for a year instead of 105,000.
//!
//! The point itself and its stored encoding are [`crate::point`].

use jiff::{SignedDuration, Timestamp};

use crate::config::HistoryTier;
pub use crate::point::HistoryPoint;
use crate::store::{Store, StoreError};

/// What a [`housekeeping`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Housekept {
    /// Points dropped (older than the retention).
    pub pruned: usize,
    /// Points merged away into coarser ones.
    pub merged: usize,
}

/// The controller's history housekeeping at `now`: drops points older than
/// `retention`, then merges, tier by tier (finest first, so that 5-minute
/// points are what the hourly tier merges), the points older than each
/// tier's `after` into one point per its `bucket`. Idempotent; each tier
/// resumes from its own mark in the store.
pub fn housekeeping(
    store: &dyn Store,
    now: Timestamp,
    retention: SignedDuration,
    tiers: &[HistoryTier],
) -> Result<Housekept, StoreError> {
    let secs = |d: touchline_schemas::HumanDuration| {
        SignedDuration::from_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    let mut done = Housekept {
        pruned: store.prune_history(now.saturating_sub(retention).unwrap_or(now))?,
        merged: 0,
    };
    for t in tiers {
        done.merged += store.downsample_history(
            now.saturating_sub(secs(t.after)).unwrap_or(now),
            secs(t.bucket),
        )?;
    }
    Ok(done)
}

/// At most about `max` points for a chart of `[from, to)`: points are merged
/// per display bucket of `(to - from) / max` (a 30-day chart of 5-minute
/// points becomes one point per ~72 minutes: one per pixel is all a chart
/// shows).
pub fn for_display(
    points: Vec<HistoryPoint>,
    from: Timestamp,
    to: Timestamp,
    max: usize,
) -> Vec<HistoryPoint> {
    if points.len() <= max || max == 0 {
        return points;
    }
    let span = (to.as_second() - from.as_second()).max(1);
    let bucket = (span / i64::try_from(max).unwrap_or(i64::MAX)).max(1);
    let mut out: Vec<HistoryPoint> = Vec::with_capacity(max + 1);
    let mut group: Vec<HistoryPoint> = Vec::new();
    let mut current = i64::MIN;
    for p in points {
        let b = (p.at.as_second() - from.as_second()).div_euclid(bucket);
        if b != current && !group.is_empty() {
            out.push(HistoryPoint::merge(group[0].at, &group));
            group.clear();
        }
        current = b;
        group.push(p);
    }
    if !group.is_empty() {
        out.push(HistoryPoint::merge(group[0].at, &group));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::tests::point;

    #[test]
    fn display_binning_caps_the_points_and_keeps_the_sample_weighted_means() {
        let from: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        // 30 days of 5-minute points, cpu alternating 0 / 100.
        let points: Vec<HistoryPoint> = (0..30 * 288)
            .map(|i| {
                let mut p = point("2026-11-01T00:00:00Z", 0.0, 50.0, i);
                p.at = from + SignedDuration::from_mins(5 * i64::try_from(i).unwrap());
                p.cpu_percent = Some(if i % 2 == 0 { 0.0 } else { 100.0 });
                p
            })
            .collect();
        let to = from + SignedDuration::from_hours(24 * 30);
        let shown = for_display(points.clone(), from, to, 600);
        assert!(shown.len() <= 601, "{}", shown.len());
        assert!(shown.len() >= 590, "{}", shown.len());
        assert_eq!(
            shown.iter().map(|p| p.samples).sum::<u32>(),
            30 * 288,
            "every sample is in one shown point"
        );
        let mean = shown
            .iter()
            .map(|p| f64::from(p.cpu_percent.unwrap()))
            .sum::<f64>()
            / shown.len() as f64;
        assert!((mean - 50.0).abs() < 1.0, "{mean}");
        assert!(shown.windows(2).all(|w| w[0].at < w[1].at));
        // Few points: unchanged.
        assert_eq!(
            for_display(points[..10].to_vec(), from, to, 600),
            points[..10]
        );
    }
}
