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
    /// The box's report epoch: a random id made when its state was
    /// created. A box whose state was wiped (reflashed, a new SD card)
    /// starts a new epoch and its `seq` restarts, so the controller starts
    /// a new sequence instead of taking its reports for duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
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
    /// Where the agent's own releases stand (absent: an agent older than
    /// self-update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<AgentReleaseStatus>,
}

/// The agent's own release on a box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentReleaseStatus {
    /// The version running (an agent release, or the installed package's).
    pub running: String,
    /// The version of the installed package's binary.
    pub package: String,
    /// The agent release the accepted bundle asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<ReleaseVersion>,
    /// The running agent release is on trial (it has not yet completed a
    /// pass and delivered a report).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trial: bool,
    /// Why the desired release, staged and checked, is not switched to yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The version of a release refused or rolled back, not retried for
    /// the current serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
    /// The last rollback of an agent release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackReport>,
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
    /// The board (`Raspberry Pi 4 Model B Rev 1.4`, from the device tree
    /// or the DMI product name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// The operating system (`PRETTY_NAME` of `/etc/os-release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
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

/// Longest condition message, error or rollback output kept (bytes).
pub const MAX_TEXT_BYTES: usize = 2048;
/// Longest name kept (an item, a service, an interface, a version).
pub const MAX_NAME_BYTES: usize = 128;
/// Most conditions, services, interfaces or installed releases kept.
pub const MAX_ENTRIES: usize = 64;

/// One value a report carried that the controller did not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Refusal {
    /// The field, e.g. `metrics.temperature_c` or `status.conditions[3].message`.
    pub field: String,
    /// Why: out of range (dropped) or too long (cut).
    pub reason: String,
}

fn cut(field: &str, text: &mut String, max: usize, out: &mut Vec<Refusal>) {
    if text.len() <= max {
        return;
    }
    // Room for the ellipsis: the result is at most `max` bytes.
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push(Refusal {
        field: field.to_owned(),
        reason: format!("{} bytes cut to {max}", text.len()),
    });
    text.truncate(end);
    text.push('…');
}

/// Cuts each optional text of `prefix` to [`MAX_TEXT_BYTES`].
fn cut_texts<const N: usize>(
    prefix: &str,
    fields: [(&str, &mut Option<String>); N],
    out: &mut Vec<Refusal>,
) {
    for (name, text) in fields {
        if let Some(t) = text.as_mut() {
            cut(&format!("{prefix}.{name}"), t, MAX_TEXT_BYTES, out);
        }
    }
}

fn cut_rollback(field: &str, r: &mut RollbackReport, out: &mut Vec<Refusal>) {
    cut(&format!("{field}.from"), &mut r.from, MAX_NAME_BYTES, out);
    if let Some(to) = r.to.as_mut() {
        cut(&format!("{field}.to"), to, MAX_NAME_BYTES, out);
    }
    cut(
        &format!("{field}.output"),
        &mut r.output,
        MAX_TEXT_BYTES,
        out,
    );
}

fn cut_list<T>(field: &str, list: &mut Vec<T>, out: &mut Vec<Refusal>) {
    if list.len() > MAX_ENTRIES {
        out.push(Refusal {
            field: field.to_owned(),
            reason: format!("{} entries cut to {MAX_ENTRIES}", list.len()),
        });
        list.truncate(MAX_ENTRIES);
    }
}

fn range_f64(field: &str, v: &mut Option<f64>, lo: f64, hi: f64, out: &mut Vec<Refusal>) {
    if let Some(x) = *v
        && !(x.is_finite() && (lo..=hi).contains(&x))
    {
        out.push(Refusal {
            field: field.to_owned(),
            reason: format!("{} is outside {lo}..={hi}: dropped", short(x)),
        });
        *v = None;
    }
}

/// `x` as a person reads it: `1e308`, not 309 digits.
fn short(x: f64) -> String {
    if x.is_finite() && x != 0.0 && !(1e-3..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn range_u64(field: &str, v: &mut Option<u64>, hi: u64, out: &mut Vec<Refusal>) {
    if let Some(x) = *v
        && x > hi
    {
        out.push(Refusal {
            field: field.to_owned(),
            reason: format!("{x} is over {hi}: dropped"),
        });
        *v = None;
    }
}

/// A petabyte: no box's disk or videos are larger.
const PB: u64 = 1 << 50;

impl Report {
    /// Keeps what is physically possible and bounded: a metric outside its
    /// range (a temperature of 1e308, more disk used than there is) is
    /// dropped field by field, free text is cut to [`MAX_TEXT_BYTES`] and
    /// lists to [`MAX_ENTRIES`], so one box cannot skew the fleet's
    /// averages or make the pages slow for everyone. Returns what was
    /// dropped or cut, for the box's answer and the log.
    pub fn sanitize(&mut self) -> Vec<Refusal> {
        let mut out = Vec::new();
        let st = &mut self.status;
        cut_list("status.conditions", &mut st.conditions, &mut out);
        for (i, c) in st.conditions.iter_mut().enumerate() {
            cut(
                &format!("status.conditions[{i}].item"),
                &mut c.item,
                MAX_NAME_BYTES,
                &mut out,
            );
            cut(
                &format!("status.conditions[{i}].message"),
                &mut c.message,
                MAX_TEXT_BYTES,
                &mut out,
            );
        }
        if let Some(e) = st.last_error.as_mut() {
            cut("status.last_error", e, MAX_TEXT_BYTES, &mut out);
        }
        if let Some(v) = st.agent_version.as_mut() {
            cut("status.agent_version", v, MAX_NAME_BYTES, &mut out);
        }
        if let Some(a) = st.agent_release.as_mut() {
            cut(
                "status.agent_release.running",
                &mut a.running,
                MAX_NAME_BYTES,
                &mut out,
            );
            cut(
                "status.agent_release.package",
                &mut a.package,
                MAX_NAME_BYTES,
                &mut out,
            );
            cut_texts(
                "status.agent_release",
                [("waiting", &mut a.waiting), ("held_back", &mut a.held_back)],
                &mut out,
            );
            if let Some(r) = a.last_rollback.as_mut() {
                cut_rollback("status.agent_release.last_rollback", r, &mut out);
            }
        }
        if let Some(sw) = st.software.as_mut() {
            if let Some(c) = sw.current.as_mut() {
                cut("status.software.current", c, MAX_NAME_BYTES, &mut out);
            }
            cut_list("status.software.installed", &mut sw.installed, &mut out);
            for (i, r) in sw.installed.iter_mut().enumerate() {
                cut(
                    &format!("status.software.installed[{i}]"),
                    r,
                    MAX_NAME_BYTES,
                    &mut out,
                );
            }
            cut_texts(
                "status.software",
                [
                    ("waiting", &mut sw.waiting),
                    ("held_back", &mut sw.held_back),
                ],
                &mut out,
            );
            if let Some(r) = sw.last_rollback.as_mut() {
                cut_rollback("status.software.last_rollback", r, &mut out);
            }
        }
        if let Some(m) = self.metrics.as_mut() {
            range_f64(
                "metrics.cpu_percent",
                &mut m.cpu_percent,
                0.0,
                100.0,
                &mut out,
            );
            range_f64(
                "metrics.memory_percent",
                &mut m.memory_percent,
                0.0,
                100.0,
                &mut out,
            );
            range_f64(
                "metrics.temperature_c",
                &mut m.temperature_c,
                -60.0,
                150.0,
                &mut out,
            );
            if let Some(load) = m.load
                && load
                    .iter()
                    .any(|x| !(x.is_finite() && (0.0..=1024.0).contains(x)))
            {
                out.push(Refusal {
                    field: "metrics.load".into(),
                    reason: format!("{load:?} is outside 0..=1024: dropped"),
                });
                m.load = None;
            }
            range_u64(
                "metrics.disk_total_bytes",
                &mut m.disk_total_bytes,
                PB,
                &mut out,
            );
            range_u64(
                "metrics.disk_used_bytes",
                &mut m.disk_used_bytes,
                PB,
                &mut out,
            );
            if let (Some(used), Some(total)) = (m.disk_used_bytes, m.disk_total_bytes)
                && used > total
            {
                out.push(Refusal {
                    field: "metrics.disk_used_bytes".into(),
                    reason: format!("{used} is more than the disk's {total} bytes: dropped"),
                });
                m.disk_used_bytes = None;
            }
            // A century of uptime.
            range_u64(
                "metrics.uptime_secs",
                &mut m.uptime_secs,
                3_155_760_000,
                &mut out,
            );
            range_u64("metrics.video_bytes", &mut m.video_bytes, PB, &mut out);
            range_u64(
                "metrics.video_count",
                &mut m.video_count,
                1_000_000,
                &mut out,
            );
            range_u64(
                "metrics.local_files",
                &mut m.local_files,
                10_000_000,
                &mut out,
            );
            for (field, v) in [
                ("metrics.hardware", &mut m.hardware),
                ("metrics.os", &mut m.os),
                ("metrics.kernel", &mut m.kernel),
            ] {
                if let Some(v) = v {
                    cut(field, v, MAX_NAME_BYTES, &mut out);
                }
            }
            cut_list("metrics.interfaces", &mut m.interfaces, &mut out);
            for (i, n) in m.interfaces.iter_mut().enumerate() {
                cut(
                    &format!("metrics.interfaces[{i}].name"),
                    &mut n.name,
                    MAX_NAME_BYTES,
                    &mut out,
                );
            }
            if m.services.len() > MAX_ENTRIES
                || m.services
                    .iter()
                    .any(|(k, v)| k.len() > MAX_NAME_BYTES || v.len() > MAX_NAME_BYTES)
            {
                let before = m.services.len();
                let kept: BTreeMap<String, String> = std::mem::take(&mut m.services)
                    .into_iter()
                    .take(MAX_ENTRIES)
                    .map(|(mut k, mut v)| {
                        cut("metrics.services (name)", &mut k, MAX_NAME_BYTES, &mut out);
                        cut("metrics.services (state)", &mut v, MAX_NAME_BYTES, &mut out);
                        (k, v)
                    })
                    .collect();
                if before > MAX_ENTRIES {
                    out.push(Refusal {
                        field: "metrics.services".into(),
                        reason: format!("{before} entries cut to {MAX_ENTRIES}"),
                    });
                }
                m.services = kept;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_metrics_are_dropped_and_long_text_cut_field_by_field() {
        let json = r#"{"seq":1,"at":"2026-11-22T10:00:00Z",
            "status":{"phase":"degraded","last_error":"short",
              "conditions":[{"item":"fetch","severity":"error","message":"MSG","since":"2026-11-22T10:00:00Z"}]},
            "metrics":{"temperature_c":1e308,"cpu_percent":42.5,"disk_used_bytes":18000000000000000000,
              "disk_total_bytes":1000,"load":[0.5,-1,0.1],"uptime_secs":100}}"#;
        let mut r: Report =
            serde_json::from_str(&json.replace("MSG", &"é".repeat(1_000_000))).unwrap();
        let refused = r.sanitize();
        let fields: Vec<&str> = refused.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "status.conditions[0].message",
                "metrics.temperature_c",
                "metrics.load",
                "metrics.disk_used_bytes",
            ]
        );
        assert_eq!(refused[1].reason, "1e308 is outside -60..=150: dropped");
        let m = r.metrics.as_ref().unwrap();
        assert_eq!(
            (m.temperature_c, m.cpu_percent, m.load),
            (None, Some(42.5), None)
        );
        assert_eq!(
            (m.disk_used_bytes, m.disk_total_bytes, m.uptime_secs),
            (None, Some(1000), Some(100))
        );
        let msg = &r.status.conditions[0].message;
        assert!(
            msg.len() <= MAX_TEXT_BYTES && msg.ends_with('…'),
            "{}",
            msg.len()
        );
        assert_eq!(r.status.last_error.as_deref(), Some("short"));
        // A sane report is kept whole.
        assert!(r.sanitize().is_empty());
    }

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
