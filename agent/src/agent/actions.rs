//! Remote actions on the box: take the inbox the controller announced,
//! check each request as [`verify_action`] says (the controller's key in
//! the action namespace, this site, its times, a nonce never seen, this
//! box's allow-list from its signed bundle, the arguments), remember it
//! in `actions.json` **before** anything runs, run it (argv only; the
//! service names checked against `services`), and report `received` →
//! `waiting` / `running` → `done` / `failed`, or `refused` with the reason.
//!
//! Actions that change what plays (reboot, restart, resync) wait while the
//! update lock is held (a match), up to `lock_max_wait`, unless the
//! operator forced them. A reboot is reported `running` before it happens
//! and `done` once the box is back with a new boot id.

use std::path::PathBuf;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use touchline_schemas::action::{
    ActionArgs, ActionError, ActionRequest, ActionState, ActionUpdate, DEFAULT_LOG_LINES, Delivery,
    MAX_ACTION_OUTPUT, verify_action,
};
use touchline_schemas::manifest::RemoteAction;

use super::{Agent, Outcome};
use crate::host::HostCommand;
use crate::inventory;
use crate::pull::Controller;
use crate::release::{tail, try_lock};
use crate::state::Index;

/// Most remembered actions (the oldest finished ones go first).
const MAX_ENTRIES: usize = 256;
/// How long a restart or a log read may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after its command a reboot that did not happen is a failure.
const REBOOT_GRACE_SECS: i64 = 600;
/// The agent's own unit, whose logs may always be read.
const AGENT_UNIT: &str = "touchline-agent";

/// One action the box took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The request, as verified.
    pub request: ActionRequest,
    /// Where it is.
    pub state: ActionState,
    /// When it was taken.
    pub received_at: Timestamp,
    /// Since when it waits for the update lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// A reboot: the boot id before, and when its command ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The last update, and whether the controller has it.
    pub last: ActionUpdate,
    /// The controller took `last` (or will never take it).
    pub acked: bool,
}

/// `actions.json`: every action taken, so that none runs twice (the nonce
/// is remembered past the request's expiry) and none is lost across a
/// restart or a reboot.
#[derive(Debug, Default)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
    /// What the file holds: a turn that changed nothing writes nothing
    /// (an SD card wears out).
    on_disk: Vec<u8>,
}

impl Journal {
    /// Reads it (a missing or unreadable file is an empty journal, logged).
    pub fn load(path: PathBuf) -> Self {
        let (entries, on_disk) = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(e) => (e, b),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "actions journal does not read; starting a new one");
                    (Vec::new(), Vec::new())
                }
            },
            Err(_) => (
                Vec::new(),
                serde_json::to_vec(&Vec::<Entry>::new()).unwrap_or_default(),
            ),
        };
        let mut j = Self {
            path,
            entries,
            on_disk,
        };
        // An action the agent was running when it stopped (killed, power
        // cut) is not run again: said so. A reboot is confirmed by its boot.
        let now = Timestamp::now();
        for e in &mut j.entries {
            if e.state == ActionState::Running && e.request.action != RemoteAction::Reboot {
                e.state = ActionState::Failed;
                e.last = update(
                    ActionState::Failed,
                    now,
                    "the agent stopped while this ran (killed or power cut); not run again"
                        .to_owned(),
                );
                e.acked = false;
            }
        }
        j
    }

    fn save(&mut self) -> std::io::Result<()> {
        let body = serde_json::to_vec(&self.entries).unwrap_or_default();
        if body == self.on_disk {
            return Ok(());
        }
        crate::fsx::write_atomic(&self.path, &body)?;
        self.on_disk = body;
        Ok(())
    }

    fn find(&self, nonce: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.request.nonce == nonce)
    }

    /// Forgets finished, reported actions a day past their expiry (a
    /// replay after that is refused as expired), and the oldest finished
    /// ones beyond [`MAX_ENTRIES`].
    fn prune(&mut self, now: Timestamp) {
        let horizon = now.as_second() - 86_400;
        self.entries.retain(|e| {
            !(e.state.is_final() && e.acked && e.request.expires_at.as_second() < horizon)
        });
        while self.entries.len() > MAX_ENTRIES {
            match self.entries.iter().position(|e| e.state.is_final()) {
                Some(i) => {
                    self.entries.remove(i);
                }
                None => break,
            }
        }
    }
}

/// The request's id when its bytes say one (for a refusal's report; not
/// trusted for anything else).
fn claimed_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v.get("id")?.as_str()?;
    (id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| id.to_owned())
}

/// An update in `state` now.
fn update(state: ActionState, at: Timestamp, message: impl Into<Option<String>>) -> ActionUpdate {
    ActionUpdate {
        state,
        at,
        message: message.into(),
        exit_status: None,
        output: None,
        truncated: false,
    }
}

/// How a command ended, as an update.
fn ran(ok: bool, output: &str, at: Timestamp, what: &str) -> ActionUpdate {
    let cut = output.len() > MAX_ACTION_OUTPUT;
    ActionUpdate {
        state: if ok {
            ActionState::Done
        } else {
            ActionState::Failed
        },
        at,
        message: Some(if ok {
            format!("{what}: done")
        } else {
            let last = output.lines().last().unwrap_or("").trim();
            format!("{what} failed: {last}")
        }),
        exit_status: Some(exit_status(ok, output)),
        output: Some(tail(output, MAX_ACTION_OUTPUT)),
        truncated: cut,
    }
}

/// The exit status a [`crate::host::CommandOutput`] names (`exit status N`
/// in its last line), 0 when it succeeded, -1 when it did not say.
fn exit_status(ok: bool, output: &str) -> i32 {
    if ok {
        return 0;
    }
    output
        .lines()
        .last()
        .and_then(|l| l.rsplit_once("exit status"))
        .and_then(|(_, n)| {
            n.trim_start_matches([':', ' '])
                .trim()
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .unwrap_or(-1)
}

impl Agent {
    /// One round of remote actions: confirm a reboot, take what the poll
    /// announced, run what waited for the lock, re-send unacknowledged
    /// updates. Called after each poll.
    pub(crate) async fn action_turn(&mut self) {
        let Some(c) = self.controller.clone() else {
            return;
        };
        let now = self.now().now;
        self.confirm_reboots(now);
        if std::mem::take(&mut self.actions_pending) > 0 {
            match c.inbox().await {
                Ok(inbox) => {
                    for d in inbox.actions {
                        self.take(&c, &d).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the actions waiting for this box")
                }
            }
        }
        self.run_waiting().await;
        self.send_updates(&c).await;
        self.journal.prune(self.now().now);
        self.save_journal();
    }

    fn save_journal(&mut self) {
        if let Err(e) = self.journal.save() {
            tracing::error!(error = %e, "cannot save the actions journal");
        }
    }

    /// Sets an entry's state and its update (to be sent).
    fn set(&mut self, i: usize, u: ActionUpdate) {
        if let Some(e) = self.journal.entries.get_mut(i) {
            e.state = u.state;
            e.last = u;
            e.acked = false;
        }
        self.save_journal();
    }

    /// Checks one delivered request; remembers and runs it, or reports why
    /// not.
    async fn take(&mut self, c: &Controller, d: &Delivery) {
        let now = self.now().now;
        let allowed = self
            .accepted()
            .map(|b| b.agent.allowed_actions)
            .unwrap_or_default();
        let body = d.request.as_bytes();
        let journal = &self.journal;
        let checked = verify_action(
            body,
            d.signature.as_bytes(),
            &self.cfg.trusted_keys,
            &self.cfg.site_id,
            &allowed,
            now,
            |n| journal.find(n).is_some(),
        );
        let req = match checked {
            Ok(r) => r,
            Err(ActionError::Replay(nonce)) => {
                // The same request again: an update the controller did not
                // get is sent again; a finished one is a replay.
                if let Some(i) = self.journal.find(&nonce) {
                    let e = &mut self.journal.entries[i];
                    if !e.state.is_final() {
                        e.acked = false;
                        return;
                    }
                }
                self.refuse(c, body, &ActionError::Replay(nonce), now).await;
                return;
            }
            Err(e) => {
                self.refuse(c, body, &e, now).await;
                return;
            }
        };
        if let Some(reason) = self.local_refusal(&req) {
            tracing::warn!(id = %req.id, %reason, "remote action refused");
            self.remember(req, update(ActionState::Refused, now, reason));
            return;
        }
        tracing::info!(id = %req.id, action = req.action.as_str(), "remote action received");
        self.remember(req, update(ActionState::Received, now, None));
        crate::fsx::crash_point("action-received");
        let i = self.journal.entries.len() - 1;
        self.send_updates(c).await;
        self.execute(i).await;
    }

    /// Adds an entry, saved before anything runs.
    fn remember(&mut self, req: ActionRequest, u: ActionUpdate) {
        self.journal.entries.push(Entry {
            received_at: u.at,
            state: u.state,
            request: req,
            waiting_since: None,
            boot_id: None,
            started_at: None,
            last: u,
            acked: false,
        });
        self.save_journal();
    }

    /// A refusal of a request that did not verify: reported against the id
    /// it claims (the controller takes it only for one of its own), never
    /// remembered (forged requests must not fill the journal).
    async fn refuse(&mut self, c: &Controller, body: &[u8], e: &ActionError, now: Timestamp) {
        tracing::warn!(error = %e, "remote action refused");
        if let Some(id) = claimed_id(body) {
            let u = update(ActionState::Refused, now, e.to_string());
            if let Err(err) = c.post_action(&id, &u).await {
                tracing::warn!(%id, error = %err, "cannot report a refused action");
            }
        }
    }

    /// What the box itself refuses beyond the signature: a service that is
    /// not one of its own.
    fn local_refusal(&self, req: &ActionRequest) -> Option<String> {
        let svc = req.args.service.as_deref()?;
        let known = self.cfg.services.iter().any(|s| s == svc)
            || (req.action == RemoteAction::GetLogs && svc == AGENT_UNIT);
        (!known).then(|| {
            format!(
                "service `{svc}` is not one of this box's services ({}: `services` in agent.toml)",
                if self.cfg.services.is_empty() {
                    "none".to_owned()
                } else {
                    self.cfg.services.join(", ")
                }
            )
        })
    }

    /// Runs entry `i` (or makes it wait for the update lock).
    async fn execute(&mut self, i: usize) {
        let Some(e) = self.journal.entries.get(i).cloned() else {
            return;
        };
        let req = &e.request;
        let now = self.now().now;
        // Held for the length of the action: the app cannot start a match
        // in the middle of a restart.
        let mut _guard = None;
        if req.action.waits_for_lock() && !req.force {
            match try_lock(&self.cfg.update_lock) {
                Ok(Some(g)) => _guard = g,
                Ok(None) => {
                    let since = e.waiting_since.unwrap_or(now);
                    let max = self.cfg.lock_max_wait;
                    let waited = now.duration_since(since);
                    if waited.as_secs() >= i64::try_from(max.as_secs()).unwrap_or(i64::MAX) {
                        self.set(
                            i,
                            update(
                                ActionState::Failed,
                                now,
                                format!(
                                    "the update lock {} was held for more than {max} (lock_max_wait): not run; request it again, or force it",
                                    self.cfg.update_lock.display()
                                ),
                            ),
                        );
                    } else if e.state != ActionState::Waiting {
                        if let Some(x) = self.journal.entries.get_mut(i) {
                            x.waiting_since = Some(since);
                        }
                        self.set(
                            i,
                            update(
                                ActionState::Waiting,
                                now,
                                format!(
                                    "waiting for the update lock {} (a match is on); runs when it is released, for at most {max}",
                                    self.cfg.update_lock.display()
                                ),
                            ),
                        );
                    }
                    return;
                }
                Err(err) => {
                    self.set(
                        i,
                        update(
                            ActionState::Failed,
                            now,
                            format!(
                                "cannot read the update lock {}: {err}",
                                self.cfg.update_lock.display()
                            ),
                        ),
                    );
                    return;
                }
            }
        }
        let req = req.clone();
        let result = match req.action {
            RemoteAction::SystemInfo => self.system_info(now),
            RemoteAction::ReportNow => match self.report(true).await {
                Ok(()) => update(ActionState::Done, self.now().now, "report sent".to_owned()),
                Err(e) => update(
                    ActionState::Failed,
                    self.now().now,
                    format!("report not sent: {e}"),
                ),
            },
            RemoteAction::GetLogs => self.logs(&req.args).await,
            RemoteAction::RestartService => {
                self.set(i, update(ActionState::Running, now, None));
                crate::fsx::crash_point("action-running");
                let svc = req.args.service.clone().unwrap_or_default();
                let mut argv = self.cfg.restart_command.clone();
                argv.push(svc.clone());
                let out = self
                    .host
                    .run(HostCommand::new(&argv, COMMAND_TIMEOUT))
                    .await;
                ran(
                    out.ok,
                    &out.output,
                    self.now().now,
                    &format!("restart {svc}"),
                )
            }
            RemoteAction::Resync => {
                self.set(i, update(ActionState::Running, now, None));
                self.resync().await
            }
            RemoteAction::Reboot => {
                let boot_id = inventory::read_boot_id(&self.cfg.boot_id_path);
                if let Some(x) = self.journal.entries.get_mut(i) {
                    x.boot_id = boot_id;
                    x.started_at = Some(now);
                }
                self.set(
                    i,
                    update(ActionState::Running, now, "rebooting now".to_owned()),
                );
                // Said before it happens: after it, nothing is sent.
                if let Some(c) = self.controller.clone() {
                    self.send_updates(&c).await;
                }
                let out = self
                    .host
                    .reboot(&self.cfg.reboot_command, Duration::from_secs(60))
                    .await;
                if out.ok {
                    // Confirmed by the next boot (`confirm_reboots`); a
                    // command that returns before the box goes down is
                    // looked at once now, harmlessly.
                    self.confirm_reboots(self.now().now);
                    return;
                }
                ran(false, &out.output, self.now().now, "reboot")
            }
        };
        tracing::info!(id = %req.id, state = result.state.as_str(), "remote action finished");
        self.set(i, result);
    }

    fn system_info(&self, now: Timestamp) -> ActionUpdate {
        let t = self.now();
        let inv = inventory::collect(
            &self.cfg.boot_id_path,
            inventory::Clocks {
                clock: self.clock.now(),
                trusted: t.now,
                floor: self.state.time_floor,
                offset_secs: self.server_offset.map(|o| o.as_secs()),
            },
        );
        let text = serde_json::to_string_pretty(&inv).unwrap_or_default();
        ActionUpdate {
            output: Some(text),
            ..update(
                ActionState::Done,
                now,
                format!(
                    "{} · {} · agent {}",
                    inv.model.as_deref().unwrap_or(inv.arch),
                    inv.os.as_deref().unwrap_or("unknown OS"),
                    inv.agent_version
                ),
            )
        }
    }

    async fn logs(&self, args: &ActionArgs) -> ActionUpdate {
        let svc = args.service.clone().unwrap_or_default();
        let lines = args.lines.unwrap_or(DEFAULT_LOG_LINES);
        let mut argv = self.cfg.journal_command.clone();
        argv.extend([
            format!("--unit={svc}"),
            format!("--lines={lines}"),
            "--no-pager".into(),
            "--output=short-iso".into(),
        ]);
        if let Some(t) = &args.since {
            argv.push(format!("--since={t}"));
        }
        let out = self
            .host
            .run(HostCommand::new(&argv, COMMAND_TIMEOUT))
            .await;
        let mut u = ran(
            out.ok,
            &out.output,
            self.now().now,
            &format!("logs of {svc}"),
        );
        if out.ok {
            u.message = Some(format!(
                "{} lines of {svc}{}",
                out.output.lines().count().min(lines as usize),
                if u.truncated {
                    " (cut to the last 256 KiB)"
                } else {
                    ""
                }
            ));
        }
        u
    }

    /// Forgets what was hashed, then a pass on the bundle held: every
    /// managed file is hashed again and what differs is put right.
    async fn resync(&mut self) -> ActionUpdate {
        let old = std::mem::take(&mut self.index);
        if let Err(e) = self.paths.save_index(&old, &Index::default()) {
            tracing::warn!(error = %e, "cannot clear the file index");
        }
        let outcome = self.settle(Ok(None), None).await;
        let now = self.now().now;
        let hashed = self.index.files.len();
        match outcome {
            Outcome::Converged => update(
                ActionState::Done,
                now,
                format!("{hashed} files hashed again; the box holds its bundle"),
            ),
            Outcome::Waiting(why) => update(
                ActionState::Done,
                now,
                format!("{hashed} files hashed again; {why}"),
            ),
            Outcome::NotConverged(e) => update(ActionState::Failed, now, format!("resync: {e}")),
        }
    }

    /// A reboot whose command ran: done once the boot id changed; failed
    /// when the box is still up long after.
    fn confirm_reboots(&mut self, now: Timestamp) {
        // Every poll comes here: the boot id is read only for a reboot to
        // confirm.
        let pending =
            self.journal.entries.iter().any(|e| {
                e.request.action == RemoteAction::Reboot && e.state == ActionState::Running
            });
        if !pending {
            return;
        }
        let current = inventory::read_boot_id(&self.cfg.boot_id_path);
        for i in 0..self.journal.entries.len() {
            let e = &self.journal.entries[i];
            if e.request.action != RemoteAction::Reboot
                || e.state != ActionState::Running
                || e.started_at.is_none()
            {
                continue;
            }
            let up = inventory::uptime()
                .map(|s| format!("; up {s} s"))
                .unwrap_or_default();
            if current.is_some() && current != e.boot_id {
                self.set(
                    i,
                    update(
                        ActionState::Done,
                        now,
                        format!("rebooted (new boot id){up}"),
                    ),
                );
            } else if e.started_at.is_some_and(|t| {
                now.duration_since(t) > SignedDuration::from_secs(REBOOT_GRACE_SECS)
            }) {
                self.set(
                    i,
                    update(
                        ActionState::Failed,
                        now,
                        format!(
                            "the reboot command ran but the box did not restart (same boot id){up}"
                        ),
                    ),
                );
            }
        }
    }

    /// Actions that wait for the lock: run when it is free (or fail past
    /// `lock_max_wait`).
    async fn run_waiting(&mut self) {
        let waiting: Vec<usize> = (0..self.journal.entries.len())
            .filter(|&i| {
                matches!(
                    self.journal.entries[i].state,
                    ActionState::Waiting | ActionState::Received
                )
            })
            .collect();
        for i in waiting {
            self.execute(i).await;
        }
    }

    /// Sends the updates the controller does not have yet, oldest first;
    /// stops at the first that cannot be sent (the controller is away).
    async fn send_updates(&mut self, c: &Controller) {
        for i in 0..self.journal.entries.len() {
            let e = &self.journal.entries[i];
            if e.acked {
                continue;
            }
            let (id, u) = (e.request.id.clone(), e.last.clone());
            match c.post_action(&id, &u).await {
                Ok(taken) => {
                    if !taken {
                        tracing::warn!(%id, state = u.state.as_str(), "the controller does not take this action update");
                    }
                    self.journal.entries[i].acked = true;
                }
                Err(err) => {
                    tracing::debug!(%id, error = %err, "action update not sent; kept for later");
                    break;
                }
            }
        }
        self.save_journal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_that_changes_nothing_writes_nothing() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("actions.json");
        let mut j = Journal::load(path.clone());
        j.save().unwrap();
        assert!(!path.exists(), "an empty journal is not written");
        let now = Timestamp::from_second(1_795_000_000).unwrap();
        j.entries.push(Entry {
            request: ActionRequest {
                format: touchline_schemas::action::ACTION_FORMAT,
                id: "a".into(),
                site: touchline_schemas::SiteId::new("cesson-handball").unwrap(),
                action: RemoteAction::SystemInfo,
                args: ActionArgs::default(),
                issued_at: now,
                expires_at: now,
                nonce: "n".into(),
                force: false,
            },
            state: ActionState::Done,
            received_at: now,
            waiting_since: None,
            boot_id: None,
            started_at: None,
            last: update(ActionState::Done, now, None),
            acked: true,
        });
        j.save().unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        j.save().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            ino,
            "not rewritten"
        );
        // Read back, then saved: still not rewritten.
        let mut again = Journal::load(path.clone());
        assert_eq!(again.entries, j.entries);
        again.save().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    }

    #[test]
    fn an_exit_status_is_read_from_the_commands_last_line() {
        assert_eq!(exit_status(true, "fine\n"), 0);
        assert_eq!(
            exit_status(false, "oops\n`x` exited with exit status: 3"),
            3
        );
        assert_eq!(exit_status(false, "oops\nexit status 4"), 4);
        assert_eq!(exit_status(false, "could not start"), -1);
        assert_eq!(claimed_id(br#"{"id":"a-1"}"#).as_deref(), Some("a-1"));
        assert_eq!(claimed_id(br#"{"id":"../x"}"#), None);
        assert_eq!(claimed_id(b"nope"), None);
    }
}
