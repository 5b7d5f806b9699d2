//! Agent self-update: the journal `state_dir/agent-release.json`, the
//! executables in `state_dir/agent/<sha256>`, and the launcher that picks
//! which one runs (docs/agent.md, "Self-update").
//!
//! The packaged binary (`/usr/bin/touchline-agent`, what systemd starts) is
//! the launcher. When the journal selects an agent release newer than the
//! package, `run` hands over to it:
//! - a release that passed its trial is `exec`ed (same PID for systemd);
//! - a release on trial runs as a child the launcher watches. It is on trial
//!   until it completes a pass and delivers a report (it then marks the
//!   journal confirmed). A child that exits before that is started again,
//!   at most [`MAX_STARTS`] times in all; one that does not confirm within
//!   the trial time (`agent_trial`, default 10 min, measured on the
//!   monotonic clock) is killed. Either way the launcher puts the previous
//!   agent back, records why, holds the release back for the serial that
//!   asked for it, and runs the previous one.
//!
//! Every write of the journal is atomic (temp file, fsync, rename), and the
//! start counter is written before each start: a power cut or a crash at
//! any point restarts into the same decision, and a release that keeps
//! killing the box's agent runs out of starts.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use touchline_schemas::manifest::Arch;
use touchline_schemas::{ReleaseVersion, Sha256};

use crate::fsx;

/// The journal, in the state directory.
pub const JOURNAL: &str = "agent-release.json";
/// The executables, named by sha256, in the state directory.
pub const BIN_DIR: &str = "agent";
/// Set by the launcher for the agent it runs: `<version> <sha256>`.
pub const ENV_RUNNING: &str = "TOUCHLINE_AGENT_RUNNING";
/// Set by the launcher when it watches the agent (a trial): the agent
/// exits with [`RESTART_CODE`] to be relaunched instead of `exec`ing.
pub const ENV_SUPERVISED: &str = "TOUCHLINE_AGENT_SUPERVISED";
/// The launcher's own path, for a restart.
pub const ENV_LAUNCHER: &str = "TOUCHLINE_AGENT_LAUNCHER";
/// Exit status of an agent asking its launcher to decide again.
pub const RESTART_CODE: u8 = 75;
/// Starts of a release on trial before it is rolled back.
pub const MAX_STARTS: u32 = 3;

/// An agent executable in `state_dir/agent/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The agent release's version.
    pub version: ReleaseVersion,
    /// The executable's sha256 (its file name).
    pub sha256: Sha256,
}

/// A release on trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// How long it has to complete a pass and a report, per start.
    pub limit_secs: u64,
    /// Starts so far (written before each start).
    pub starts: u32,
    /// It completed a pass and delivered a report.
    pub confirmed: bool,
    /// How the last start ended, for the rollback's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

/// A rollback of an agent release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The release that failed.
    pub from: ReleaseVersion,
    /// What runs again (a release, or the package's version).
    pub to: String,
    /// When (the box's clock).
    pub at: Timestamp,
    /// Why.
    pub reason: String,
}

/// A release not to install again for the serial that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The version.
    pub version: ReleaseVersion,
    /// The bundle serial it is held back for (`None`: the next pass fills
    /// in the serial it sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Why.
    pub reason: String,
}

/// `state_dir/agent-release.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The selected agent release (`None`: the package's binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Installed>,
    /// What ran before it (`None`: the package's binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Installed>,
    /// The current release's trial, until it is confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
    /// The last rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<Rollback>,
    /// A release held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
}

/// The version of this binary (the package's, when it is the launcher).
pub fn own_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The package's version as a release version (`None`: not one).
pub fn package_version() -> Option<ReleaseVersion> {
    ReleaseVersion::new(own_version()).ok()
}

/// Paths of the journal and the executables.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The state directory.
    pub state_dir: PathBuf,
}

impl Paths {
    /// The journal.
    pub fn journal(&self) -> PathBuf {
        self.state_dir.join(JOURNAL)
    }

    /// The executables' directory.
    pub fn bin_dir(&self) -> PathBuf {
        self.state_dir.join(BIN_DIR)
    }

    /// One executable.
    pub fn binary(&self, sha: &Sha256) -> PathBuf {
        self.bin_dir().join(sha.to_hex())
    }

    /// Reads the journal (absent: the default).
    pub fn load(&self) -> io::Result<Journal> {
        let path = self.journal();
        match read_bounded(&path, 64 * 1024) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not an agent release journal: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the journal atomically.
    pub fn save(&self, j: &Journal) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(j).map_err(io::Error::other)?;
        fsx::write_atomic(&self.journal(), &bytes)
    }

    /// Whether `sha`'s executable is in place: a regular file (not a
    /// symlink) whose bytes hash to `sha`.
    pub fn verify(&self, sha: &Sha256) -> bool {
        let path = self.binary(sha);
        open_regular(&path)
            .and_then(|mut f| crate::fetch::hash_reader(&mut f))
            .is_ok_and(|h| h == *sha)
    }

    /// Removes executables other than `keep`.
    pub fn prune(&self, keep: &[Sha256]) {
        let Ok(entries) = std::fs::read_dir(self.bin_dir()) else {
            return;
        };
        let keep: Vec<String> = keep.iter().map(Sha256::to_hex).collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The version the box's agent is: the selected release, else the
/// package's.
pub fn running_version(j: &Journal) -> String {
    j.current
        .as_ref()
        .map_or_else(|| own_version().to_owned(), |c| c.version.to_string())
}

/// What this process runs as, from the launcher's environment
/// (`None`: the package's binary).
pub fn running_as() -> Option<Installed> {
    let v = std::env::var(ENV_RUNNING).ok()?;
    let (version, sha) = v.split_once(' ')?;
    Some(Installed {
        version: ReleaseVersion::new(version).ok()?,
        sha256: Sha256::new(sha).ok()?,
    })
}

/// Opens `path` for reading, refusing a symlink or a non-regular file.
pub(crate) fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is over {max} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Why an executable cannot be an agent for this box.
#[derive(Debug, thiserror::Error)]
pub enum ExecutableError {
    /// Not readable (or a symlink, or not a regular file).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// This agent runs on an architecture no release names.
    #[error("this agent's architecture `{0}` is not one agent releases name")]
    UnknownArch(&'static str),
    /// Not an ELF executable.
    #[error("it is not an ELF executable ({0})")]
    NotElf(String),
    /// Built for another machine.
    #[error("it is an executable for {found}, and this box is {want}")]
    OtherArch {
        /// What its header names.
        found: &'static str,
        /// This box.
        want: Arch,
    },
}

/// Checks that `path` is an executable for this box's architecture.
pub fn check_executable(path: &Path) -> Result<(), ExecutableError> {
    let mut bytes = Vec::new();
    open_regular(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut bytes))
        .map_err(|source| ExecutableError::Read {
            path: path.to_owned(),
            source,
        })?;
    let Some(want) = Arch::this() else {
        return Err(ExecutableError::UnknownArch(std::env::consts::ARCH));
    };
    let found = elf_arch(&bytes)?;
    if found != Some(want) {
        return Err(ExecutableError::OtherArch {
            found: found.map_or("another architecture", Arch::as_str),
            want,
        });
    }
    Ok(())
}

/// The architecture an ELF header names (`Ok(None)`: one agent releases
/// do not name).
fn elf_arch(bytes: &[u8]) -> Result<Option<Arch>, ExecutableError> {
    use object::elf;
    use object::read::elf::FileHeader;
    let not_elf = |e: object::Error| ExecutableError::NotElf(e.to_string());
    let (machine, class64) = match object::FileKind::parse(bytes) {
        Ok(object::FileKind::Elf64) => {
            let h = elf::FileHeader64::<object::Endianness>::parse(bytes).map_err(not_elf)?;
            let e = h.endian().map_err(not_elf)?;
            (h.e_machine(e), true)
        }
        Ok(object::FileKind::Elf32) => {
            let h = elf::FileHeader32::<object::Endianness>::parse(bytes).map_err(not_elf)?;
            let e = h.endian().map_err(not_elf)?;
            (h.e_machine(e), false)
        }
        Ok(other) => return Err(ExecutableError::NotElf(format!("it is {other:?}"))),
        Err(e) => return Err(not_elf(e)),
    };
    Ok(match (machine, class64) {
        (elf::EM_X86_64, true) => Some(Arch::Amd64),
        (elf::EM_AARCH64, true) => Some(Arch::Arm64),
        (elf::EM_ARM, false) => Some(Arch::Armhf),
        _ => None,
    })
}

/// What `run` does.
#[derive(Debug)]
pub enum Launch {
    /// Run the agent in this process.
    Here,
    /// The launcher ran an agent release to its end: exit with this.
    Exit(ExitCode),
}

/// Puts the previous agent back and holds `from` back: `reason` says why.
fn roll_back(paths: &Paths, j: &mut Journal, reason: String) {
    let Some(from) = j.current.take() else {
        return;
    };
    let to = j.previous.take();
    let to_name = to
        .as_ref()
        .map_or_else(|| own_version().to_owned(), |p| p.version.to_string());
    tracing::error!(from = %from.version, to = %to_name, reason = %reason, "agent release rolled back");
    j.current = to;
    j.trial = None;
    j.blocked = Some(Blocked {
        version: from.version.clone(),
        serial: None,
        reason: reason.clone(),
    });
    j.last_rollback = Some(Rollback {
        from: from.version,
        to: to_name,
        at: Timestamp::now(),
        reason,
    });
    if let Err(e) = paths.save(j) {
        tracing::error!(error = %e, "cannot write the agent release journal");
    }
}

/// How a child ended, for people.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// The launcher: decides which agent runs, and watches a release on
/// trial. `args` are this process's arguments (given to the agent it
/// starts); `trial` is the configured trial time.
pub async fn launch(state_dir: &Path, args: &[OsString]) -> Launch {
    let paths = Paths {
        state_dir: state_dir.to_owned(),
    };
    let launcher = std::env::var_os(ENV_LAUNCHER)
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok());
    loop {
        let mut j = match paths.load() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "the agent release journal is unreadable; the package's agent runs");
                return Launch::Here;
            }
        };
        let Some(cur) = j.current.clone() else {
            return Launch::Here;
        };
        if package_version().is_some_and(|p| cur.version <= p) {
            tracing::info!(
                release = %cur.version,
                package = own_version(),
                "the installed package is not older than the agent release; the package's agent runs"
            );
            j.current = None;
            j.previous = None;
            j.trial = None;
            if let Err(e) = paths.save(&j) {
                tracing::error!(error = %e, "cannot write the agent release journal");
            }
            return Launch::Here;
        }
        let bin = paths.binary(&cur.sha256);
        if !paths.verify(&cur.sha256) {
            roll_back(
                &paths,
                &mut j,
                format!(
                    "the executable {} is missing or does not hash to {}",
                    bin.display(),
                    cur.sha256
                ),
            );
            continue;
        }
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(args)
            .env(ENV_RUNNING, format!("{} {}", cur.version, cur.sha256))
            .env_remove(ENV_SUPERVISED);
        if let Some(l) = &launcher {
            cmd.env(ENV_LAUNCHER, l);
        }
        let trial = match &j.trial {
            Some(t) if !t.confirmed => t.clone(),
            _ => {
                // Confirmed: hand the process over.
                let e = cmd.exec();
                roll_back(
                    &paths,
                    &mut j,
                    format!("cannot start {}: {e}", bin.display()),
                );
                continue;
            }
        };
        if trial.starts >= MAX_STARTS {
            let last = trial.last_exit.as_deref().unwrap_or("no pass completed");
            roll_back(
                &paths,
                &mut j,
                format!(
                    "it did not complete a pass and a report in {MAX_STARTS} starts (last: {last})"
                ),
            );
            continue;
        }
        if let Some(t) = j.trial.as_mut() {
            t.starts += 1;
        }
        if let Err(e) = paths.save(&j) {
            tracing::error!(error = %e, "cannot write the agent release journal; the package's agent runs");
            return Launch::Here;
        }
        fsx::crash_point("agent-trial-start");
        tracing::info!(
            release = %cur.version,
            start = trial.starts + 1,
            "starting the agent release on trial"
        );
        cmd.env(ENV_SUPERVISED, "1");
        match supervise(&paths, cmd, Duration::from_secs(trial.limit_secs)).await {
            Watch::Exit(code) => return Launch::Exit(code),
            Watch::Decide => {}
            Watch::Ended(how) => {
                if let Ok(mut j) = paths.load()
                    && let Some(t) = j.trial.as_mut()
                {
                    t.last_exit = Some(how);
                    if let Err(e) = paths.save(&j) {
                        tracing::error!(error = %e, "cannot write the agent release journal");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Watch::TimedOut => {
                let mut j = paths.load().unwrap_or_default();
                roll_back(
                    &paths,
                    &mut j,
                    format!(
                        "it did not complete a pass and a report within {}s of its start",
                        trial.limit_secs
                    ),
                );
            }
        }
    }
}

/// How watching a child ended.
enum Watch {
    /// Confirmed and ended (or stopped with the launcher): exit with this.
    Exit(ExitCode),
    /// It asked for a new decision (a newer release was selected).
    Decide,
    /// It ended before it was confirmed: how.
    Ended(String),
    /// Not confirmed within the trial time; killed.
    TimedOut,
}

async fn supervise(paths: &Paths, cmd: std::process::Command, limit: Duration) -> Watch {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Watch::Ended(format!("could not start: {e}")),
    };
    let started = Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let confirmed = || {
        paths
            .load()
            .ok()
            .and_then(|j| j.trial)
            .is_none_or(|t| t.confirmed)
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = match status {
                    Ok(s) => s,
                    Err(e) => return Watch::Ended(format!("cannot wait for it: {e}")),
                };
                if status.code() == Some(i32::from(RESTART_CODE)) {
                    return Watch::Decide;
                }
                if confirmed() {
                    let code = status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1);
                    return Watch::Exit(ExitCode::from(code));
                }
                return Watch::Ended(describe(status));
            }
            () = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                // Stopped: pass it on, and let the next start carry on.
                if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
                return Watch::Exit(ExitCode::SUCCESS);
            }
            _ = tick.tick() => {
                if started.elapsed() >= limit && !confirmed() {
                    let _ = child.kill().await;
                    return Watch::TimedOut;
                }
            }
        }
    }
}

/// After a restart request: the launcher again (same PID). Returns only
/// when that cannot start.
pub fn relaunch(args: &[OsString]) -> io::Error {
    let launcher = std::env::var_os(ENV_LAUNCHER)
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/touchline-agent"));
    std::process::Command::new(launcher)
        .args(args)
        .env_remove(ENV_RUNNING)
        .env_remove(ENV_SUPERVISED)
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elf_header_names_the_architecture() {
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_arch(&own).unwrap(), Arch::this());
        let mut other = own.clone();
        // e_machine (offset 18, little-endian) of an x86-64 / AArch64 build
        // swapped for the other one.
        let m = if Arch::this() == Some(Arch::Arm64) {
            elf::EM_X86_64
        } else {
            elf::EM_AARCH64
        };
        other[18..20].copy_from_slice(&m.0.to_le_bytes());
        assert_ne!(elf_arch(&other).unwrap(), Arch::this());
        let err = elf_arch(b"#!/bin/sh\nexit 0\n").unwrap_err().to_string();
        assert!(err.starts_with("it is not an ELF executable"), "{err}");
    }

    use object::elf;

    #[test]
    fn a_rollback_puts_the_previous_agent_back_and_holds_the_release_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            state_dir: dir.path().to_owned(),
        };
        let a = Installed {
            version: ReleaseVersion::new("90.0.0").unwrap(),
            sha256: Sha256::digest(b"a"),
        };
        let b = Installed {
            version: ReleaseVersion::new("91.0.0").unwrap(),
            sha256: Sha256::digest(b"b"),
        };
        let mut j = Journal {
            current: Some(b.clone()),
            previous: Some(a.clone()),
            trial: Some(Trial {
                limit_secs: 600,
                starts: 3,
                confirmed: false,
                last_exit: Some("exited with status 1".into()),
            }),
            ..Journal::default()
        };
        roll_back(&paths, &mut j, "why".into());
        assert_eq!(j.current, Some(a));
        assert_eq!(j.previous, None);
        assert_eq!(j.trial, None);
        let rb = j.last_rollback.clone().unwrap();
        assert_eq!(
            (rb.from.to_string(), rb.to.as_str()),
            ("91.0.0".into(), "90.0.0")
        );
        assert_eq!(j.blocked.as_ref().unwrap().version, b.version);
        assert_eq!(paths.load().unwrap(), j);
    }
}
