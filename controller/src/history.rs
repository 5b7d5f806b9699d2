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
//! Stored encoding (ours, versioned): byte 0 is the version (1), byte 1 a
//! presence bitmask, then 5 × f32 (cpu, memory, temperature, temperature max,
//! load 1 min), 3 × u64 (disk used, disk total, uptime) and a u32 sample
//! count, little-endian: 50 bytes a point.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use touchline_schemas::report::Metrics;

use crate::config::HistoryTier;
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

/// One point of a site's metrics history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// When the report was taken (for a merged point: the bucket's start).
    pub at: Timestamp,
    /// CPU use, 0–100 (mean over the merged samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// Memory use, 0–100 (mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f32>,
    /// SoC temperature in °C (mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f32>,
    /// Highest temperature among the merged samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_max_c: Option<f32>,
    /// 1-minute load average (mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load1: Option<f32>,
    /// Bytes used on the videos filesystem (last sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    /// Size of the videos filesystem (last sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    /// Seconds since boot (last sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Raw reports this point stands for (1 until downsampled).
    pub samples: u32,
}

const VERSION: u8 = 1;
/// Encoded size of a point.
pub const ENCODED_LEN: usize = 2 + 5 * 4 + 3 * 8 + 4;

impl HistoryPoint {
    /// The point of one report's metrics.
    pub fn from_metrics(at: Timestamp, m: &Metrics) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let f = |v: Option<f64>| v.map(|x| x as f32);
        Self {
            at,
            cpu_percent: f(m.cpu_percent),
            memory_percent: f(m.memory_percent),
            temperature_c: f(m.temperature_c),
            temperature_max_c: f(m.temperature_c),
            load1: f(m.load.map(|l| l[0])),
            disk_used_bytes: m.disk_used_bytes,
            disk_total_bytes: m.disk_total_bytes,
            uptime_secs: m.uptime_secs,
            samples: 1,
        }
    }

    /// The stored bytes (without the time, which is in the key).
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[0] = VERSION;
        let floats = [
            self.cpu_percent,
            self.memory_percent,
            self.temperature_c,
            self.temperature_max_c,
            self.load1,
        ];
        let ints = [
            self.disk_used_bytes,
            self.disk_total_bytes,
            self.uptime_secs,
        ];
        let mut mask = 0u8;
        let mut at = 2;
        for (i, v) in floats.iter().enumerate() {
            if let Some(v) = v {
                mask |= 1 << i;
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            at += 4;
        }
        for (i, v) in ints.iter().enumerate() {
            if let Some(v) = v {
                mask |= 1 << (i + 5);
                out[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            at += 8;
        }
        out[at..at + 4].copy_from_slice(&self.samples.to_le_bytes());
        out[1] = mask;
        out
    }

    /// Decodes stored bytes; `None` when they are not a version-1 point.
    pub fn decode(at: Timestamp, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN || bytes[0] != VERSION {
            return None;
        }
        let mask = bytes[1];
        let f = |i: usize| -> Option<f32> {
            let o = 2 + i * 4;
            (mask & (1 << i) != 0)
                .then(|| bytes[o..o + 4].try_into().ok().map(f32::from_le_bytes))
                .flatten()
        };
        let u = |i: usize| -> Option<u64> {
            let o = 22 + i * 8;
            (mask & (1 << (i + 5)) != 0)
                .then(|| bytes[o..o + 8].try_into().ok().map(u64::from_le_bytes))
                .flatten()
        };
        Some(Self {
            at,
            cpu_percent: f(0),
            memory_percent: f(1),
            temperature_c: f(2),
            temperature_max_c: f(3),
            load1: f(4),
            disk_used_bytes: u(0),
            disk_total_bytes: u(1),
            uptime_secs: u(2),
            samples: u32::from_le_bytes(bytes[ENCODED_LEN - 4..].try_into().ok()?),
        })
    }

    /// Merges points (oldest first) into one point at `at`: sample-weighted
    /// means of the gauges, the highest temperature, the latest disk and
    /// uptime figures.
    pub fn merge(at: Timestamp, points: &[Self]) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let mean = |get: fn(&Self) -> Option<f32>| -> Option<f32> {
            let (mut sum, mut n) = (0f64, 0f64);
            for p in points {
                if let Some(v) = get(p) {
                    sum += f64::from(v) * f64::from(p.samples.max(1));
                    n += f64::from(p.samples.max(1));
                }
            }
            (n > 0.0).then(|| (sum / n) as f32)
        };
        let last = |get: fn(&Self) -> Option<u64>| points.iter().rev().find_map(get);
        Self {
            at,
            cpu_percent: mean(|p| p.cpu_percent),
            memory_percent: mean(|p| p.memory_percent),
            temperature_c: mean(|p| p.temperature_c),
            temperature_max_c: points
                .iter()
                .filter_map(|p| p.temperature_max_c)
                .reduce(f32::max),
            load1: mean(|p| p.load1),
            disk_used_bytes: last(|p| p.disk_used_bytes),
            disk_total_bytes: last(|p| p.disk_total_bytes),
            uptime_secs: last(|p| p.uptime_secs),
            samples: points.iter().map(|p| p.samples).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: &str, cpu: f32, temp: f32, disk: u64) -> HistoryPoint {
        HistoryPoint {
            at: at.parse().unwrap(),
            cpu_percent: Some(cpu),
            memory_percent: None,
            temperature_c: Some(temp),
            temperature_max_c: Some(temp),
            load1: Some(0.5),
            disk_used_bytes: Some(disk),
            disk_total_bytes: Some(32_000_000_000),
            uptime_secs: None,
            samples: 1,
        }
    }

    #[test]
    fn encoding_round_trips_and_keeps_absent_values_absent() {
        let p = point("2026-11-22T10:00:00Z", 12.5, 61.0, 7);
        let bytes = p.encode();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(HistoryPoint::decode(p.at, &bytes), Some(p.clone()));
        let mut bad = bytes;
        bad[0] = 2;
        assert_eq!(HistoryPoint::decode(p.at, &bad), None);
        assert_eq!(HistoryPoint::decode(p.at, &bytes[1..]), None);
    }

    #[test]
    fn merge_weights_means_by_samples_and_keeps_the_peak_temperature() {
        let a = point("2026-11-22T10:00:00Z", 10.0, 60.0, 1);
        let mut b = point("2026-11-22T10:05:00Z", 40.0, 80.0, 2);
        b.samples = 3;
        let m = HistoryPoint::merge(a.at, &[a.clone(), b]);
        assert_eq!(m.samples, 4);
        assert_eq!(m.cpu_percent, Some(32.5));
        assert_eq!(m.temperature_c, Some(75.0));
        assert_eq!(m.temperature_max_c, Some(80.0));
        assert_eq!(m.disk_used_bytes, Some(2));
        assert_eq!(m.memory_percent, None);
        // Merging a merged point with itself alone changes nothing.
        assert_eq!(HistoryPoint::merge(m.at, std::slice::from_ref(&m)), m);
    }

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
