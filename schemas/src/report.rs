//! What a box reports: status (always) and metrics (every metrics interval),
//! sent in batches with per-site sequence numbers so that a retried batch is
//! stored once.
//!
//! The controller reads reports leniently (unknown fields are ignored) so
//! that boxes running a newer agent are still heard.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ReleaseVersion, SiteId};

/// Format version of [`ReportBatch`].
pub const REPORT_FORMAT: u32 = 1;
/// Largest report batch body the controller accepts.
pub const MAX_REPORT_BATCH_BYTES: usize = 1024 * 1024;

/// `POST /v1/sites/{id}/reports` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportBatch {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// The reporting site (must match the URL and token).
    pub site: SiteId,
    /// Oldest first.
    pub reports: Vec<Report>,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Per-site sequence number, strictly increasing; a report whose `seq`
    /// was already stored is acknowledged and not stored again.
    pub seq: u64,
    /// When the agent made it (its `max(clock, time floor)`).
    pub at: Timestamp,
    /// Status.
    pub status: Status,
    /// Full metrics, present every metrics interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// Where the agent is in its reconcile loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started, nothing verified yet.
    Starting,
    /// Holding what the desired bundle says.
    Converged,
    /// Downloading content.
    Fetching,
    /// Writing files into place.
    Applying,
    /// A release is staged and waits for the window or the update lock.
    Waiting,
    /// Switching software.
    Updating,
    /// Something failed; the last good state keeps running.
    Degraded,
    /// The bundle held is expired and no newer one can be had.
    Stale,
}

/// Severity of a condition.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs a look.
    Warning,
    /// Something is broken.
    Error,
}

/// One observed fact about an item (bundle, a file, the release, disk…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Condition {
    /// What it is about, e.g. `bundle`, `fetch`, `disk`, `release`, `config`.
    pub item: String,
    /// How bad.
    pub severity: Severity,
    /// Plain words for the operator: what happened and what to do.
    pub message: String,
    /// Since when it holds.
    pub since: Timestamp,
}

/// The status part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// Phase.
    pub phase: Phase,
    /// Serial of the newest verified bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_serial: Option<u64>,
    /// Serial of the bundle whose files are in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_serial: Option<u64>,
    /// Release running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseVersion>,
    /// Where software releases stand on the box (absent: the box does not
    /// install releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<SoftwareStatus>,
    /// Active conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The last error, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// Software releases on a box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SoftwareStatus {
    /// What `current` points at (a release directory name; an adopted
    /// pre-Touchline install has no version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The release the accepted bundle asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<ReleaseVersion>,
    /// Release directories unpacked on the box.
    #[serde(default)]
    pub installed: Vec<String>,
    /// Why the desired release, staged, is not switched to yet (window,
    /// update lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// A release rolled back and not retried for the current serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
    /// The last rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackReport>,
}

/// A rollback, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackReport {
    /// The release that failed.
    pub from: String,
    /// The release running again (none: nothing to go back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When.
    pub at: Timestamp,
    /// Why: the health check's output (at most 2 KB).
    pub output: String,
}

/// Full metrics. A value the box cannot measure is absent ("unknown"), never
/// an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Metrics {
    /// CPU use over the last interval, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory in use, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// Load averages (1, 5, 15 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    /// SoC temperature in °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// Bytes used on the videos filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    /// Size of the videos filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    /// Seconds since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Configured services and their state (`active`, `failed`, `unknown`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, String>,
    /// Raspberry Pi throttling flags, when the firmware exposes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    /// Root filesystem mounted read-only (a failing SD card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_read_only: Option<bool>,
    /// Managed videos on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_count: Option<u64>,
    /// Their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_bytes: Option<u64>,
    /// Files in the videos directory the agent did not place (the club's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_files: Option<u64>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Interface {
    /// Name (`eth0`, `wlan0`).
    pub name: String,
    /// Bytes received since boot.
    pub rx_bytes: u64,
    /// Bytes sent since boot.
    pub tx_bytes: u64,
}

/// Raspberry Pi `get_throttled` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Throttling {
    /// Under-voltage now.
    pub under_voltage: bool,
    /// Throttled now.
    pub throttled: bool,
    /// Under-voltage happened since boot.
    pub under_voltage_occurred: bool,
    /// Throttling happened since boot.
    pub throttled_occurred: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_report_parses_and_unknowns_are_ignored() {
        let json = r#"{"format":1,"site":"a","reports":[{"seq":1,"at":"2026-11-22T10:00:00Z",
            "status":{"phase":"converged","future_field":true}}]}"#;
        let batch: ReportBatch = serde_json::from_str(json).unwrap();
        assert_eq!(batch.reports[0].status.phase, Phase::Converged);
        assert!(batch.reports[0].metrics.is_none());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let json = r#"{"format":1,"site":"a","reports":[{"seq":"one","at":"2026-11-22T10:00:00Z","status":{"phase":"converged"}}]}"#;
        let err = serde_json::from_str::<ReportBatch>(json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid type: string \"one\", expected u64"),
            "{err}"
        );
    }
}
