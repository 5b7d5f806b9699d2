//! The agent-release step of a pass: stage the bundle's agent release for
//! this box's architecture (by sha256, like any content), check it (an ELF
//! for this architecture, then `<new> self-test --config …`), and switch
//! only inside the maintenance window (unless `urgent`) and while nobody
//! holds the update lock. Switching writes the journal
//! ([`crate::selfupdate`]); the daemon then restarts through the launcher,
//! which keeps the new agent on trial and puts the previous one back if it
//! fails.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use touchline_schemas::bundle::DesiredAgent;
use touchline_schemas::manifest::{AgentBinary, Arch};
use touchline_schemas::report::{AgentReleaseStatus, RollbackReport, Severity};
use touchline_schemas::{Bundle, ReleaseVersion};

use super::Agent;
use crate::condition::Item;
use crate::fetch::Wanted;
use crate::host::HostCommand;
use crate::release::{self, try_lock};
use crate::selfupdate::{self, Blocked, Installed, Journal, Trial};

/// How long `<new> self-test` may run.
const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent's view of its own releases.
#[derive(Debug)]
pub struct SelfUpdate {
    /// The journal and the executables.
    pub paths: selfupdate::Paths,
    /// What this process runs as (`None`: the package's binary).
    pub running_as: Option<Installed>,
    /// Why the desired release waits (last pass).
    pub(crate) waiting: Option<String>,
    /// Since when the update lock is seen held.
    lock_since: Option<jiff::Timestamp>,
    /// The executable that passed its self-test in this process (a release
    /// waiting for the window is not tested again every pass).
    tested: Option<touchline_schemas::Sha256>,
}

impl SelfUpdate {
    /// For `state_dir`, as the launcher started this process.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            paths: selfupdate::Paths {
                state_dir: state_dir.to_owned(),
            },
            running_as: selfupdate::running_as(),
            waiting: None,
            lock_since: None,
            tested: None,
        }
    }
}

/// How the step ended.
enum Step {
    /// Nothing to do (or nothing more).
    Done,
    /// Staged and checked; waits (why).
    Waiting(String),
    /// Cannot go on; the condition's severity and message.
    Problem(Severity, String),
}

impl Agent {
    /// The agent-release step; `Some(why)` when a checked release waits
    /// for the window or the lock.
    pub(crate) async fn execute_agent_release(
        &mut self,
        bundle: &Bundle,
        dir: Option<&Path>,
    ) -> Option<String> {
        let step = match &bundle.agent_release {
            None => Step::Done,
            Some(want) => self.agent_release_step(bundle, want, dir).await,
        };
        let waiting = match step {
            Step::Done => {
                self.clear_condition(&Item::Agent);
                None
            }
            Step::Waiting(why) => {
                self.set_condition(&Item::Agent, Severity::Info, why.clone());
                Some(why)
            }
            Step::Problem(severity, message) => {
                self.set_condition(&Item::Agent, severity, message);
                None
            }
        };
        self.upgrade.waiting.clone_from(&waiting);
        waiting
    }

    async fn agent_release_step(
        &mut self,
        bundle: &Bundle,
        want: &DesiredAgent,
        dir: Option<&Path>,
    ) -> Step {
        let paths = self.upgrade.paths.clone();
        let mut j = match paths.load() {
            Ok(j) => j,
            Err(e) => return Step::Problem(Severity::Error, e.to_string()),
        };
        let version = &want.version;
        if selfupdate::running_version(&j) == version.to_string() {
            if let Some(rb) = &j.last_rollback
                && rb.from == *version
            {
                // Asked again by a later commit and running: done.
                j.last_rollback = None;
                let _ = paths.save(&j);
            }
            return Step::Done;
        }
        if let Some(p) = selfupdate::package_version()
            && *version <= p
        {
            return Step::Problem(
                Severity::Warning,
                format!(
                    "agent release {version} is not newer than the installed package ({p}); the package's agent runs"
                ),
            );
        }
        if let Some(b) = j.blocked.as_mut()
            && b.version == *version
        {
            let serial = *b.serial.get_or_insert(bundle.serial);
            if serial == bundle.serial {
                let msg = format!(
                    "agent release {version} is held back: {}; a new commit tries it again",
                    b.reason
                );
                let _ = paths.save(&j);
                return Step::Problem(Severity::Error, msg);
            }
            j.blocked = None;
            let _ = paths.save(&j);
        }
        let Some(arch) = Arch::this() else {
            return Step::Problem(
                Severity::Warning,
                format!(
                    "this box's architecture `{}` is not one an agent release can name",
                    std::env::consts::ARCH
                ),
            );
        };
        let Some(binary) = want.binaries.get(&arch) else {
            let has: Vec<&str> = want.binaries.keys().map(|a| a.as_str()).collect();
            return Step::Problem(
                Severity::Warning,
                format!(
                    "agent release {version} has no executable for {arch} (only {}); this box keeps its agent",
                    has.join(", ")
                ),
            );
        };
        // Staged and checked once per process: a release waiting for its
        // window is not hashed, read and self-tested again every pass (the
        // launcher hashes it again before it runs it).
        if self.upgrade.tested != Some(binary.sha256) {
            if let Err(step) = self
                .stage_and_check(&mut j, version, arch, binary, bundle.serial, dir)
                .await
            {
                return step;
            }
            self.upgrade.tested = Some(binary.sha256);
        }
        // Switch: the window, then the update lock.
        let now = self.now().now;
        if !want.urgent {
            match release::window_open(
                &bundle.agent.maintenance_window,
                &bundle.agent.timezone,
                now,
            ) {
                Ok(true) => {}
                Ok(false) => {
                    return Step::Waiting(format!(
                        "agent release {version} staged and self-tested, waiting for the maintenance window {} ({})",
                        bundle.agent.maintenance_window, bundle.agent.timezone
                    ));
                }
                Err(e) => return Step::Problem(Severity::Error, e.to_string()),
            }
        }
        let lock = match try_lock(&self.cfg.update_lock) {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                let since = *self.upgrade.lock_since.get_or_insert(now);
                return Step::Waiting(format!(
                    "agent release {version} staged and self-tested, waiting: update lock held since {}",
                    since.strftime("%Y-%m-%d %H:%M:%S UTC")
                ));
            }
            Err(e) => {
                return Step::Problem(
                    Severity::Error,
                    format!(
                        "agent release {version}: cannot check the update lock {}: {e}",
                        self.cfg.update_lock.display()
                    ),
                );
            }
        };
        self.upgrade.lock_since = None;
        let next = Installed {
            version: version.clone(),
            sha256: binary.sha256,
        };
        j.previous = j.current.take().filter(|c| paths.verify(&c.sha256));
        j.current = Some(next);
        j.trial = Some(Trial {
            limit_secs: self.cfg.agent_trial.as_secs(),
            starts: 0,
            confirmed: false,
            last_exit: None,
        });
        j.blocked = None;
        let keep: Vec<_> = [j.current.as_ref(), j.previous.as_ref()]
            .into_iter()
            .flatten()
            .map(|i| i.sha256)
            .collect();
        if let Err(e) = paths.save(&j) {
            return Step::Problem(
                Severity::Error,
                format!("agent release {version}: cannot write the journal: {e}"),
            );
        }
        crate::fsx::crash_point("agent-release-selected");
        drop(lock);
        paths.prune(&keep);
        tracing::info!(release = %version, "agent release selected; the agent restarts into it");
        Step::Done
    }

    /// Stages `binary` (the content store, then `state_dir/agent/<sha256>`,
    /// 0755) unless it is in place, then checks its architecture and runs
    /// its self-test; a refusal holds `version` back for `serial`.
    async fn stage_and_check(
        &mut self,
        j: &mut Journal,
        version: &ReleaseVersion,
        arch: Arch,
        binary: &AgentBinary,
        serial: u64,
        dir: Option<&Path>,
    ) -> Result<(), Step> {
        let paths = self.upgrade.paths.clone();
        if !paths.verify(&binary.sha256) {
            let w = Wanted {
                sha256: binary.sha256,
                size: binary.size,
            };
            if let Err(e) = self.fetch_blob(w, &binary.urls, dir).await {
                return Err(Step::Problem(
                    Severity::Error,
                    format!(
                        "agent release {version}: download failed: {}",
                        crate::transport::error_text(&e)
                    ),
                ));
            }
            if let Err(e) = install(&self.store.blob(&binary.sha256), &paths, &binary.sha256) {
                return Err(Step::Problem(
                    Severity::Error,
                    format!("agent release {version}: cannot stage the executable: {e}"),
                ));
            }
        }
        crate::fsx::crash_point("agent-release-staged");
        let exe = paths.binary(&binary.sha256);
        if let Err(why) = selfupdate::check_executable(&exe) {
            return Err(self.hold_back_agent(
                j,
                version,
                serial,
                format!("the {arch} executable is refused: {why}"),
            ));
        }
        let test = self.run_self_test(&exe).await;
        if !test.ok {
            return Err(self.hold_back_agent(
                j,
                version,
                serial,
                format!(
                    "its self-test failed: {}",
                    release::tail(test.output.trim(), 1500)
                ),
            ));
        }
        Ok(())
    }

    /// `<exe> self-test --config <this config>`.
    async fn run_self_test(&self, exe: &Path) -> crate::host::CommandOutput {
        self.host
            .run(HostCommand {
                argv: vec![
                    exe.display().to_string(),
                    "self-test".into(),
                    "--config".into(),
                    self.cfg.file.display().to_string(),
                ],
                env: vec![("RUST_LOG".into(), "warn".into())],
                cwd: None,
                timeout: SELF_TEST_TIMEOUT,
            })
            .await
    }

    /// Holds `version` back for `serial` with `why`.
    fn hold_back_agent(
        &mut self,
        j: &mut Journal,
        version: &ReleaseVersion,
        serial: u64,
        why: String,
    ) -> Step {
        j.blocked = Some(Blocked {
            version: version.clone(),
            serial: Some(serial),
            reason: why.clone(),
        });
        if let Err(e) = self.upgrade.paths.save(j) {
            tracing::warn!(error = %e, "cannot write the agent release journal");
        }
        Step::Problem(
            Severity::Error,
            format!("agent release {version} is held back: {why}; a new commit tries it again"),
        )
    }

    /// This process is an agent release on trial.
    pub(crate) fn on_agent_trial(&self) -> bool {
        let Some(me) = &self.upgrade.running_as else {
            return false;
        };
        self.upgrade.paths.load().is_ok_and(|j| {
            j.current.as_ref() == Some(me) && j.trial.as_ref().is_some_and(|t| !t.confirmed)
        })
    }

    /// The journal selects another agent than this process: the daemon
    /// restarts into it.
    pub(crate) fn agent_restart_wanted(&self) -> bool {
        let Ok(j) = self.upgrade.paths.load() else {
            return false;
        };
        j.current != self.upgrade.running_as
    }

    /// After a pass and a delivered report: a release on trial passed.
    pub(crate) fn confirm_agent_trial(&mut self) -> bool {
        let Some(me) = &self.upgrade.running_as else {
            return false;
        };
        let paths = &self.upgrade.paths;
        let Ok(mut j) = paths.load() else {
            return false;
        };
        if j.current.as_ref() != Some(me) {
            return false;
        }
        let Some(t) = j.trial.as_mut() else {
            return false;
        };
        if t.confirmed {
            return false;
        }
        t.confirmed = true;
        match paths.save(&j) {
            Ok(()) => {
                tracing::info!(release = %me.version, "agent release passed its trial");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the agent release journal");
                false
            }
        }
    }

    /// The agent-release part of a report: `None` when there is nothing
    /// to say (no agent release pinned, none ever installed), so a quiet
    /// box's reports do not grow.
    pub(crate) fn agent_release_status(
        &self,
        accepted: Option<&Bundle>,
    ) -> Option<AgentReleaseStatus> {
        let j = self.upgrade.paths.load().unwrap_or_default();
        let desired = accepted
            .and_then(|b| b.agent_release.as_ref())
            .map(|a| a.version.clone());
        if desired.is_none() && j == Journal::default() {
            return None;
        }
        Some(AgentReleaseStatus {
            running: selfupdate::running_version(&j),
            package: selfupdate::own_version().to_owned(),
            trial: j.trial.as_ref().is_some_and(|t| !t.confirmed),
            waiting: self.upgrade.waiting.clone(),
            held_back: j.blocked.as_ref().map(|b| b.version.to_string()),
            last_rollback: j.last_rollback.as_ref().map(|rb| RollbackReport {
                from: rb.from.to_string(),
                to: Some(rb.to.clone()),
                at: rb.at,
                output: rb.reason.clone(),
            }),
            desired,
        })
    }
}

/// Copies the verified blob to `state_dir/agent/<sha256>` (0755), whole or
/// not at all; checks the copy's hash.
fn install(
    blob: &Path,
    paths: &selfupdate::Paths,
    sha: &touchline_schemas::Sha256,
) -> std::io::Result<()> {
    let dir = paths.bin_dir();
    crate::fsx::create_dirs(&dir)?;
    let dest = paths.binary(sha);
    let tmp = crate::fsx::temp_path(&dest)?;
    let result = (|| {
        let mut src = selfupdate::open_regular(blob)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        std::io::copy(&mut src, &mut out)?;
        out.flush()?;
        out.sync_all()?;
        drop(out);
        let got = crate::fetch::hash_file(&tmp)?;
        if got != *sha {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the copy hashes to {got}, not {sha}"),
            ));
        }
        std::fs::rename(&tmp, &dest)?;
        crate::fsx::sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
