//! Alerts: rules from `fleet.yaml` (and groups), evaluated per site on
//! each report and on a timer; an alert is a state per (site, rule):
//!
//! ```text
//! (quiet) ──condition seen──▶ pending ──held for `hold`──▶ firing
//!    ▲                          │                            │
//!    └──────condition gone──────┘        condition gone for `hold`
//!                                                            ▼
//!                                                        resolved
//! ```
//!
//! Pure logic here (rules, observations, transitions); the engine that
//! stores states and queues notifications is the `notify` module.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use touchline_schemas::manifest::{AlertRules, Language};
use touchline_schemas::report::{Metrics, Phase, SoftwareStatus, Status};
use touchline_schemas::{HumanDuration, ReleaseVersion};

/// Thresholds once the built-in defaults, the fleet's and the groups' are
/// layered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    /// °C.
    pub temperature_warning: f64,
    /// °C.
    pub temperature_critical: f64,
    /// %.
    pub disk_warning_percent: f64,
    /// %.
    pub disk_critical_percent: f64,
    /// Bytes.
    pub disk_free_warning_bytes: u64,
    /// %.
    pub memory_warning_percent: f64,
    /// Silence before offline.
    pub offline_after: HumanDuration,
    /// Releases behind the latest.
    pub releases_behind_warning: u32,
    /// Flap damping.
    pub hold: HumanDuration,
    /// Notification cooldown.
    pub cooldown: HumanDuration,
}

impl Default for Effective {
    /// NEOPRO's monitoring thresholds.
    fn default() -> Self {
        Self {
            temperature_warning: 75.0,
            temperature_critical: 80.0,
            disk_warning_percent: 90.0,
            disk_critical_percent: 95.0,
            disk_free_warning_bytes: 2_000_000_000,
            memory_warning_percent: 90.0,
            offline_after: HumanDuration::from_secs(300),
            releases_behind_warning: 2,
            hold: HumanDuration::from_secs(120),
            cooldown: HumanDuration::from_secs(3600),
        }
    }
}

impl Effective {
    /// Layers `rules` (fleet first, then groups in layering order) over
    /// `self`.
    pub fn layered<'a>(self, rules: impl IntoIterator<Item = &'a AlertRules>) -> Self {
        let mut e = self;
        for r in rules {
            macro_rules! take {
                ($($f:ident),*) => { $( if let Some(v) = r.$f { e.$f = v; } )* };
            }
            take!(
                temperature_warning,
                temperature_critical,
                disk_warning_percent,
                disk_critical_percent,
                disk_free_warning_bytes,
                memory_warning_percent,
                offline_after,
                releases_behind_warning,
                hold,
                cooldown
            );
        }
        e
    }
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Needs a look.
    Warning,
    /// Act now.
    Critical,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// SoC temperature.
    Temperature,
    /// Videos disk use.
    Disk,
    /// Free space on the videos disk.
    DiskFree,
    /// Memory use.
    Memory,
    /// A configured service not active.
    ServiceDown,
    /// No report nor poll for `offline_after`.
    Offline,
    /// The last pass failed.
    ApplyFailed,
    /// A release was rolled back.
    RolledBack,
    /// Under-voltage (Pi power supply).
    UnderVoltage,
    /// Root filesystem read-only (failing SD card).
    ReadOnlyRoot,
    /// Release far behind the fleet's latest.
    ReleaseBehind,
}

impl Rule {
    /// How long this rule's condition must hold before it fires, and be
    /// gone before it resolves: the fleet's `hold`, except for offline,
    /// which already waited `offline_after` to fire and is over as soon as
    /// the box reports again.
    pub fn hold(self, hold: HumanDuration) -> HumanDuration {
        match self {
            Self::Offline => HumanDuration::from_secs(0),
            _ => hold,
        }
    }

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::Disk => "disk",
            Self::DiskFree => "disk-free",
            Self::Memory => "memory",
            Self::ServiceDown => "service-down",
            Self::Offline => "offline",
            Self::ApplyFailed => "apply-failed",
            Self::RolledBack => "rolled-back",
            Self::UnderVoltage => "under-voltage",
            Self::ReadOnlyRoot => "read-only-root",
            Self::ReleaseBehind => "release-behind",
        }
    }
}

/// A rule that holds now, with the value behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Which rule.
    pub rule: Rule,
    /// How bad.
    pub level: Level,
    /// The value, formatted in the fleet's language (`78.2 °C`).
    pub value: String,
    /// One line in the fleet's language.
    pub message: String,
    /// The value and the line in both languages (for the status page,
    /// which speaks its reader's), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wording: Option<Wording>,
}

/// A value and its line, in one language.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Words {
    /// `78,2 °C` / `78.2 °C`.
    pub value: String,
    /// One line.
    pub message: String,
}

/// An alert's words in French and in English.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Wording {
    /// Français.
    pub fr: Words,
    /// English.
    pub en: Words,
}

impl Wording {
    /// The words in `lang`.
    pub fn of(&self, lang: Language) -> &Words {
        match lang {
            Language::Fr => &self.fr,
            Language::En => &self.en,
        }
    }
}

/// What the rules look at for one site.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Latest status, if the box ever reported.
    pub status: Option<&'a Status>,
    /// Latest metrics.
    pub metrics: Option<&'a Metrics>,
    /// Latest report or poll.
    pub last_seen: Option<Timestamp>,
    /// When the controller started (silence counts from here at the
    /// earliest).
    pub listening_since: Timestamp,
    /// The newest release defined in the manifests.
    pub latest_release: Option<&'a ReleaseVersion>,
    /// Every release defined, to count how far behind a box is.
    pub releases: &'a [ReleaseVersion],
}

fn num(v: f64, lang: Language) -> String {
    let s = format!("{v:.1}");
    match lang {
        Language::Fr => s.replace('.', ","),
        Language::En => s,
    }
}

fn gb(bytes: u64, lang: Language) -> String {
    #[allow(clippy::cast_precision_loss)]
    let v = bytes as f64 / 1e9;
    match lang {
        Language::Fr => format!("{} Go", num(v, lang)),
        Language::En => format!("{} GB", num(v, lang)),
    }
}

/// The rules that hold for a site now.
pub fn observe(
    e: &Effective,
    input: &Input<'_>,
    now: Timestamp,
    lang: Language,
) -> Vec<Observation> {
    let fr = lang == Language::Fr;
    let mut out = Vec::new();
    let mut push = |rule, level, value: String, message: String| {
        out.push(Observation {
            rule,
            level,
            value,
            message,
            wording: None,
        });
    };
    // Offline: silent for longer than offline_after (a box never seen is
    // not offline: it was never installed).
    // Silence counts from the controller's start at the earliest: after a
    // restart, a box gets offline_after to poll again before it is offline.
    if let Some(seen) = input.last_seen
        && let Some(heard) = crate::liveness::silence(Some(seen), input.listening_since, now)
    {
        let silent = now.duration_since(seen);
        if heard.as_secs() > i64::try_from(e.offline_after.as_secs()).unwrap_or(i64::MAX) {
            let secs = silent.as_secs();
            let span = if secs < 120 {
                format!("{secs} s")
            } else {
                format!("{} min", secs / 60)
            };
            push(
                Rule::Offline,
                Level::Critical,
                span.clone(),
                if fr {
                    format!("hors ligne depuis {span}")
                } else {
                    format!("offline for {span}")
                },
            );
            // Metrics of a silent box are stale: nothing else is judged.
            return out;
        }
    }
    if let Some(m) = input.metrics {
        if let Some(t) = m.temperature_c {
            let level = if t > e.temperature_critical {
                Some(Level::Critical)
            } else if t > e.temperature_warning {
                Some(Level::Warning)
            } else {
                None
            };
            if let Some(level) = level {
                let v = format!("{} °C", num(t, lang));
                push(
                    Rule::Temperature,
                    level,
                    v.clone(),
                    if fr {
                        format!("température {v}")
                    } else {
                        format!("temperature {v}")
                    },
                );
            }
        }
        if let (Some(used), Some(total)) = (m.disk_used_bytes, m.disk_total_bytes)
            && total > 0
        {
            #[allow(clippy::cast_precision_loss)]
            let pct = used as f64 * 100.0 / total as f64;
            let level = if pct > e.disk_critical_percent {
                Some(Level::Critical)
            } else if pct > e.disk_warning_percent {
                Some(Level::Warning)
            } else {
                None
            };
            if let Some(level) = level {
                let v = format!("{} %", num(pct, lang));
                push(
                    Rule::Disk,
                    level,
                    v.clone(),
                    if fr {
                        format!("disque plein à {v}")
                    } else {
                        format!("disk {v} full")
                    },
                );
            }
            let free = total.saturating_sub(used);
            if free < e.disk_free_warning_bytes {
                let v = gb(free, lang);
                push(
                    Rule::DiskFree,
                    Level::Warning,
                    v.clone(),
                    if fr {
                        format!("plus que {v} libres")
                    } else {
                        format!("only {v} free")
                    },
                );
            }
        }
        if let Some(mem) = m.memory_percent
            && mem > e.memory_warning_percent
        {
            let v = format!("{} %", num(mem, lang));
            push(
                Rule::Memory,
                Level::Warning,
                v.clone(),
                if fr {
                    format!("mémoire utilisée à {v}")
                } else {
                    format!("memory {v} used")
                },
            );
        }
        let down: Vec<&str> = m
            .services
            .iter()
            .filter(|(_, st)| st.as_str() != "active" && st.as_str() != "unknown")
            .map(|(name, _)| name.as_str())
            .collect();
        if !down.is_empty() {
            let v = down.join(", ");
            push(
                Rule::ServiceDown,
                Level::Critical,
                v.clone(),
                if fr {
                    format!("service arrêté : {v}")
                } else {
                    format!("service not active: {v}")
                },
            );
        }
        if let Some(t) = &m.throttling
            && t.under_voltage
        {
            push(
                Rule::UnderVoltage,
                Level::Critical,
                "under-voltage".into(),
                if fr {
                    "sous-tension : alimentation insuffisante".into()
                } else {
                    "under-voltage: the power supply is too weak".into()
                },
            );
        }
        if m.root_read_only == Some(true) {
            push(
                Rule::ReadOnlyRoot,
                Level::Critical,
                "ro".into(),
                if fr {
                    "système de fichiers en lecture seule (carte SD ?)".into()
                } else {
                    "root filesystem read-only (SD card?)".into()
                },
            );
        }
    }
    if let Some(st) = input.status {
        if st.phase == Phase::Degraded
            && let Some(err) = &st.last_error
            && !err.starts_with("rolled back")
        {
            let v: String = err.chars().take(200).collect();
            push(
                Rule::ApplyFailed,
                Level::Critical,
                v.clone(),
                if fr {
                    format!("échec de l'application : {v}")
                } else {
                    format!("apply failed: {v}")
                },
            );
        }
        if let Some(SoftwareStatus {
            held_back: Some(v),
            last_rollback: Some(rb),
            ..
        }) = &st.software
            && &rb.from == v
        {
            let value = format!("{} → {}", rb.from, rb.to.as_deref().unwrap_or("-"));
            push(
                Rule::RolledBack,
                Level::Critical,
                value.clone(),
                if fr {
                    format!("version {} annulée ({value})", rb.from)
                } else {
                    format!("release {} rolled back ({value})", rb.from)
                },
            );
        }
        if let (Some(running), Some(latest)) = (&st.release, input.latest_release) {
            let behind = input
                .releases
                .iter()
                .filter(|r| *r > running && *r <= latest)
                .count();
            if u32::try_from(behind).unwrap_or(u32::MAX) >= e.releases_behind_warning {
                let v = format!("{running} < {latest}");
                push(
                    Rule::ReleaseBehind,
                    Level::Warning,
                    v.clone(),
                    if fr {
                        format!("version en retard de {behind} ({v})")
                    } else {
                        format!("release {behind} behind ({v})")
                    },
                );
            }
        }
    }
    out
}

/// [`observe`] in `lang`, each observation with its words in both
/// languages.
pub fn observe_in_both(
    e: &Effective,
    input: &Input<'_>,
    now: Timestamp,
    lang: Language,
) -> Vec<Observation> {
    let fr = observe(e, input, now, Language::Fr);
    let en = observe(e, input, now, Language::En);
    let words = |o: &Observation| Words {
        value: o.value.clone(),
        message: o.message.clone(),
    };
    let mut out = match lang {
        Language::Fr => fr.clone(),
        Language::En => en.clone(),
    };
    for (o, (f, e)) in out.iter_mut().zip(fr.iter().zip(en.iter())) {
        o.wording = Some(Wording {
            fr: words(f),
            en: words(e),
        });
    }
    out
}

/// Where one (site, rule) alert stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// Pending, firing or resolved.
    pub state: Stage,
    /// Severity (the worst seen while firing).
    pub level: Level,
    /// The latest value.
    pub value: String,
    /// The latest message.
    pub message: String,
    /// The latest value and message in both languages (older records
    /// have none: then `value` and `message` are shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wording: Option<Wording>,
    /// When the condition was first seen (this episode).
    pub since: Timestamp,
    /// When it started firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<Timestamp>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// When the condition was last seen gone (to damp the resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_since: Option<Timestamp>,
    /// The last firing notification (for the cooldown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<Timestamp>,
}

impl AlertState {
    /// Its value and message in `lang` (as stored when it has no wording).
    pub fn words(&self, lang: Language) -> Words {
        self.wording.as_ref().map_or_else(
            || Words {
                value: self.value.clone(),
                message: self.message.clone(),
            },
            |w| w.of(lang).clone(),
        )
    }
}

/// The stage of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Seen, not for `hold` yet.
    Pending,
    /// Held: operators are told.
    Firing,
    /// Gone (kept for the alerts page).
    Resolved,
}

/// A change worth a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Started firing.
    Fired,
    /// Stopped firing.
    Resolved,
}

/// One step of an alert: the previous state, what is observed now.
/// Returns the new state (`None`: forget it) and a transition.
pub fn step(
    prev: Option<&AlertState>,
    obs: Option<&Observation>,
    hold: HumanDuration,
    now: Timestamp,
) -> (Option<AlertState>, Option<Transition>) {
    let held = |since: Timestamp| {
        now.duration_since(since).as_secs() >= i64::try_from(hold.as_secs()).unwrap_or(i64::MAX)
    };
    match (prev, obs) {
        (None, None) => (None, None),
        (Some(p), None) if p.state == Stage::Resolved => (Some(p.clone()), None),
        (Some(p), None) if p.state == Stage::Pending => (None, None),
        (Some(p), None) => {
            // Firing: resolve once gone for `hold`.
            let clear = p.clear_since.unwrap_or(now);
            let mut s = p.clone();
            if held(clear) {
                s.state = Stage::Resolved;
                s.resolved_at = Some(now);
                s.clear_since = None;
                (Some(s), Some(Transition::Resolved))
            } else {
                s.clear_since = Some(clear);
                (Some(s), None)
            }
        }
        (prev, Some(o)) => {
            let mut s = match prev {
                Some(p) if p.state != Stage::Resolved => p.clone(),
                // A new episode (a resolved one keeps its cooldown).
                _ => AlertState {
                    state: Stage::Pending,
                    level: o.level,
                    value: o.value.clone(),
                    message: o.message.clone(),
                    wording: o.wording.clone(),
                    since: now,
                    fired_at: None,
                    resolved_at: None,
                    clear_since: None,
                    notified_at: prev.and_then(|p| p.notified_at),
                },
            };
            s.value.clone_from(&o.value);
            s.message.clone_from(&o.message);
            s.wording.clone_from(&o.wording);
            s.clear_since = None;
            match s.state {
                Stage::Firing => {
                    s.level = s.level.max(o.level);
                    (Some(s), None)
                }
                _ => {
                    s.level = o.level;
                    if held(s.since) {
                        s.state = Stage::Firing;
                        s.fired_at = Some(now);
                        (Some(s), Some(Transition::Fired))
                    } else {
                        (Some(s), None)
                    }
                }
            }
        }
    }
}

/// Whether a firing notification goes out now (one per cooldown).
pub fn due_for_notice(s: &AlertState, cooldown: HumanDuration, now: Timestamp) -> bool {
    s.notified_at.is_none_or(|t| {
        now.duration_since(t).as_secs() >= i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX)
    })
}

/// Alerts of one site by rule.
pub type SiteAlerts = BTreeMap<Rule, AlertState>;

#[cfg(test)]
mod tests {
    use super::*;
    use touchline_schemas::report::Throttling;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn metrics(temp: f64, used: u64, total: u64) -> Metrics {
        Metrics {
            temperature_c: Some(temp),
            disk_used_bytes: Some(used),
            disk_total_bytes: Some(total),
            ..Metrics::default()
        }
    }

    fn input<'a>(m: Option<&'a Metrics>, seen: &str) -> Input<'a> {
        Input {
            status: None,
            metrics: m,
            last_seen: Some(at(seen)),
            listening_since: at("2026-01-01T00:00:00Z"),
            latest_release: None,
            releases: &[],
        }
    }

    #[test]
    fn thresholds_follow_neopro_and_group_overrides() {
        let now = at("2026-11-23T10:00:00Z");
        let e = Effective::default();
        let m = metrics(78.2, 16_000_000_000, 32_000_000_000);
        let o = observe(
            &e,
            &input(Some(&m), "2026-11-23T09:59:00Z"),
            now,
            Language::Fr,
        );
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!((o[0].rule, o[0].level), (Rule::Temperature, Level::Warning));
        assert_eq!(o[0].message, "température 78,2 °C");
        let m = metrics(80.5, 96, 100);
        let o = observe(
            &e,
            &input(Some(&m), "2026-11-23T09:59:00Z"),
            now,
            Language::En,
        );
        let got: Vec<(Rule, Level)> = o.iter().map(|o| (o.rule, o.level)).collect();
        assert_eq!(
            got,
            vec![
                (Rule::Temperature, Level::Critical),
                (Rule::Disk, Level::Critical),
                (Rule::DiskFree, Level::Warning)
            ]
        );
        // A group that runs hot on purpose.
        let fleet = AlertRules::default();
        let rugby = AlertRules {
            temperature_warning: Some(82.0),
            temperature_critical: Some(85.0),
            ..AlertRules::default()
        };
        let e2 = Effective::default().layered([&fleet, &rugby]);
        let m = metrics(80.5, 10, 100_000_000_000);
        assert!(
            observe(
                &e2,
                &input(Some(&m), "2026-11-23T09:59:00Z"),
                now,
                Language::En
            )
            .is_empty()
        );
    }

    #[test]
    fn offline_hides_stale_metrics_and_flags_hardware() {
        let now = at("2026-11-23T10:00:00Z");
        let e = Effective::default();
        let m = metrics(90.0, 99, 100);
        let o = observe(
            &e,
            &input(Some(&m), "2026-11-23T09:54:00Z"),
            now,
            Language::Fr,
        );
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].rule, o[0].message.as_str()),
            (Rule::Offline, "hors ligne depuis 6 min")
        );
        let mut m = metrics(50.0, 1, 100_000_000_000);
        m.throttling = Some(Throttling {
            under_voltage: true,
            ..Throttling::default()
        });
        m.root_read_only = Some(true);
        m.services.insert("neopro-app".into(), "failed".into());
        m.services.insert("nginx".into(), "active".into());
        let o = observe(
            &e,
            &input(Some(&m), "2026-11-23T09:59:00Z"),
            now,
            Language::En,
        );
        let got: Vec<(Rule, &str)> = o.iter().map(|o| (o.rule, o.value.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Rule::ServiceDown, "neopro-app"),
                (Rule::UnderVoltage, "under-voltage"),
                (Rule::ReadOnlyRoot, "ro")
            ]
        );
    }

    #[test]
    fn releases_behind_count_defined_releases_in_between() {
        let now = at("2026-11-23T10:00:00Z");
        let rel = |v: &str| ReleaseVersion::new(v).unwrap();
        let releases = [rel("2.1.1"), rel("2.1.2"), rel("2.1.3"), rel("2.2.0")];
        let mut status = Status {
            agent_release: None,
            phase: Phase::Converged,
            desired_serial: None,
            applied_serial: None,
            release: Some(rel("2.1.2")),
            software: None,
            conditions: Vec::new(),
            last_error: None,
            agent_version: None,
        };
        let latest = rel("2.2.0");
        let inp = |s: &Status| -> Vec<Observation> {
            observe(
                &Effective::default(),
                &Input {
                    status: Some(s),
                    metrics: None,
                    last_seen: Some(now),
                    listening_since: now,
                    latest_release: Some(&latest),
                    releases: &releases,
                },
                now,
                Language::En,
            )
        };
        let o = inp(&status);
        assert_eq!(o[0].rule, Rule::ReleaseBehind);
        assert_eq!(o[0].message, "release 2 behind (2.1.2 < 2.2.0)");
        status.release = Some(rel("2.1.3"));
        assert!(inp(&status).is_empty(), "one behind is fine");
    }

    #[test]
    fn every_rule_speaks_french_and_english() {
        let now = at("2026-11-23T10:00:00Z");
        let rel = |v: &str| ReleaseVersion::new(v).unwrap();
        let releases = [rel("2.1.1"), rel("2.1.2"), rel("2.2.0")];
        let mut m = metrics(85.5, 31_500_000_000, 32_000_000_000);
        m.memory_percent = Some(95.5);
        m.throttling = Some(Throttling {
            under_voltage: true,
            ..Throttling::default()
        });
        m.root_read_only = Some(true);
        m.services.insert("neopro-app".into(), "failed".into());
        let status = Status {
            agent_release: None,
            phase: Phase::Degraded,
            desired_serial: None,
            applied_serial: None,
            release: Some(rel("2.1.1")),
            software: Some(SoftwareStatus {
                current: Some("2.1.1".into()),
                desired: Some(rel("2.2.0")),
                installed: Vec::new(),
                waiting: None,
                held_back: Some("2.2.0".into()),
                last_rollback: Some(touchline_schemas::report::RollbackReport {
                    from: "2.2.0".into(),
                    to: Some("2.1.1".into()),
                    at: now,
                    output: "check failed".into(),
                }),
            }),
            conditions: Vec::new(),
            last_error: Some("download failed".into()),
            agent_version: None,
        };
        let input = |seen| Input {
            status: Some(&status),
            metrics: Some(&m),
            last_seen: Some(seen),
            listening_since: at("2026-11-01T00:00:00Z"),
            latest_release: releases.last(),
            releases: &releases,
        };
        let mut o = observe_in_both(&Effective::default(), &input(now), now, Language::Fr);
        o.extend(observe_in_both(
            &Effective::default(),
            &input(at("2026-11-23T09:00:00Z")),
            now,
            Language::Fr,
        ));
        let mut rules: Vec<Rule> = o.iter().map(|o| o.rule).collect();
        rules.sort();
        assert_eq!(
            rules,
            [
                Rule::Temperature,
                Rule::Disk,
                Rule::DiskFree,
                Rule::Memory,
                Rule::ServiceDown,
                Rule::Offline,
                Rule::ApplyFailed,
                Rule::RolledBack,
                Rule::UnderVoltage,
                Rule::ReadOnlyRoot,
                Rule::ReleaseBehind
            ],
            "every rule is exercised"
        );
        let accents = |t: &str| t.chars().any(|c| "éèêàçùâîôû".contains(c));
        for ob in &o {
            let w = ob.wording.as_ref().unwrap();
            assert_eq!(ob.message, w.fr.message, "the fleet's language is kept");
            assert_ne!(w.fr.message, w.en.message, "{:?} has one text", ob.rule);
            assert!(!accents(&w.en.message), "{:?}: {}", ob.rule, w.en.message);
            assert!(!w.en.value.contains(','), "{:?}: {}", ob.rule, w.en.value);
        }
    }

    #[test]
    fn hold_damps_flapping_and_resolve_waits_too() {
        let hold = HumanDuration::from_secs(120);
        let o = Observation {
            rule: Rule::Temperature,
            level: Level::Warning,
            value: "76 °C".into(),
            message: "temperature 76 °C".into(),
            wording: None,
        };
        let t = |s: u64| at("2026-11-23T10:00:00Z") + jiff::SignedDuration::from_secs(s as i64);
        let (s, tr) = step(None, Some(&o), hold, t(0));
        assert_eq!((s.as_ref().unwrap().state, tr), (Stage::Pending, None));
        // Gone before the hold: forgotten, never fired.
        let (gone, tr) = step(s.as_ref(), None, hold, t(60));
        assert_eq!((gone, tr), (None, None));
        // Held for 2 minutes: fires once.
        let (s, _) = step(None, Some(&o), hold, t(100));
        let (s, tr) = step(s.as_ref(), Some(&o), hold, t(160));
        assert_eq!(tr, None);
        let (s, tr) = step(s.as_ref(), Some(&o), hold, t(220));
        assert_eq!(
            (s.as_ref().unwrap().state, tr),
            (Stage::Firing, Some(Transition::Fired))
        );
        let (s, tr) = step(s.as_ref(), Some(&o), hold, t(280));
        assert_eq!(tr, None, "fires once");
        // A blip of good values does not resolve it; 2 minutes do.
        let (s, tr) = step(s.as_ref(), None, hold, t(300));
        assert_eq!((s.as_ref().unwrap().state, tr), (Stage::Firing, None));
        let (s, tr) = step(s.as_ref(), Some(&o), hold, t(330));
        assert_eq!(tr, None);
        let (s, _) = step(s.as_ref(), None, hold, t(400));
        let (s, tr) = step(s.as_ref(), None, hold, t(520));
        assert_eq!(
            (s.as_ref().unwrap().state, tr),
            (Stage::Resolved, Some(Transition::Resolved))
        );
        // Offline fires without an extra hold.
        let off = Observation {
            rule: Rule::Offline,
            level: Level::Critical,
            value: "6 min".into(),
            message: "offline for 6 min".into(),
            wording: None,
        };
        let (s, tr) = step(None, Some(&off), Rule::Offline.hold(hold), t(600));
        assert_eq!(tr, Some(Transition::Fired));
        // ... and resolves as soon as the box is back.
        let (_, tr) = step(s.as_ref(), None, Rule::Offline.hold(hold), t(610));
        assert_eq!(tr, Some(Transition::Resolved));
        assert_eq!(Rule::Temperature.hold(hold), hold);
    }

    #[test]
    fn cooldown_allows_one_notice_per_period() {
        let mut s = AlertState {
            state: Stage::Firing,
            level: Level::Critical,
            value: String::new(),
            message: String::new(),
            wording: None,
            since: at("2026-11-23T10:00:00Z"),
            fired_at: None,
            resolved_at: None,
            clear_since: None,
            notified_at: None,
        };
        let cd = HumanDuration::from_secs(3600);
        assert!(due_for_notice(&s, cd, at("2026-11-23T10:00:00Z")));
        s.notified_at = Some(at("2026-11-23T10:00:00Z"));
        assert!(!due_for_notice(&s, cd, at("2026-11-23T10:59:00Z")));
        assert!(due_for_notice(&s, cd, at("2026-11-23T11:00:00Z")));
    }
}
