//! One point of a site's metrics history and its stored encoding: the
//! record the store keeps per report and merges when it downsamples
//! (the downsampling policy is the `history` module).
//!
//! Stored encoding (ours, versioned): byte 0 is the version (1), byte 1 a
//! presence bitmask, then 5 × f32 (cpu, memory, temperature, temperature max,
//! load 1 min), 3 × u64 (disk used, disk total, uptime) and a u32 sample
//! count, little-endian: 50 bytes a point.

use jiff::Timestamp;
use serde::Serialize;
use touchline_schemas::report::Metrics;
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn point(at: &str, cpu: f32, temp: f32, disk: u64) -> HistoryPoint {
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
}
