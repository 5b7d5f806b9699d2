//! The machine the agent runs on, behind a small trait: run a command
//! (argv, never a shell) with a timeout, stop and start the local services,
//! reboot, and free space on a filesystem. [`SystemHost`] is the real one;
//! tests use a fake (`touchline-testkit`) that records commands and answers
//! what the test says, so that no test runs `systemctl` or reboots the
//! machine it runs on.

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

/// A boxed future (the trait is used as `dyn Host`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A command to run: an argv, extra environment, a working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCommand {
    /// Program and arguments (empty: nothing to run, success).
    pub argv: Vec<String>,
    /// Variables added to the agent's environment.
    pub env: Vec<(String, OsString)>,
    /// Working directory (the agent's when `None`).
    pub cwd: Option<PathBuf>,
    /// Killed after this long.
    pub timeout: Duration,
}

impl HostCommand {
    /// `argv` with a timeout.
    pub fn new(argv: &[String], timeout: Duration) -> Self {
        Self {
            argv: argv.to_vec(),
            timeout,
            ..Self::default()
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// It ran and exited 0.
    pub ok: bool,
    /// Its stdout then stderr; when it failed, a last line saying how
    /// (exit status, could not start, timed out).
    pub output: String,
}

/// The machine.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// Runs `cmd` to its end or its timeout.
    fn run(&self, cmd: HostCommand) -> BoxFuture<'_, CommandOutput>;

    /// Bytes available to the agent on the filesystem holding `path`.
    fn free_space(&self, path: &Path) -> io::Result<u64>;

    /// Stops the local services (the configured argv).
    fn stop_services(&self, argv: &[String], timeout: Duration) -> BoxFuture<'_, CommandOutput> {
        self.run(HostCommand::new(argv, timeout))
    }

    /// Starts them.
    fn start_services(&self, argv: &[String], timeout: Duration) -> BoxFuture<'_, CommandOutput> {
        self.run(HostCommand::new(argv, timeout))
    }

    /// Called between a pass's plan and the writes that carry it out: the
    /// seam where a test changes the box under the agent's feet (a symlink
    /// swapped in after the pass looked). A real host does nothing.
    fn before_apply(&self) {}

    /// Reboots the machine (the configured argv).
    fn reboot(&self, argv: &[String], timeout: Duration) -> BoxFuture<'_, CommandOutput> {
        self.run(HostCommand::new(argv, timeout))
    }
}

/// This machine: `tokio::process` and `statvfs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn run(&self, cmd: HostCommand) -> BoxFuture<'_, CommandOutput> {
        Box::pin(run(cmd))
    }

    fn free_space(&self, path: &Path) -> io::Result<u64> {
        crate::fsx::available_space(path)
    }
}

async fn run(cmd: HostCommand) -> CommandOutput {
    let Some((prog, args)) = cmd.argv.split_first() else {
        return CommandOutput {
            ok: true,
            output: String::new(),
        };
    };
    let mut c = tokio::process::Command::new(prog);
    c.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in &cmd.env {
        c.env(k, v);
    }
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    match tokio::time::timeout(cmd.timeout, c.output()).await {
        Ok(Ok(o)) => {
            let mut output = String::from_utf8_lossy(&o.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&o.stderr));
            let ok = o.status.success();
            if !ok {
                output.push_str(&format!(
                    "\n`{}` exited with {}",
                    cmd.argv.join(" "),
                    o.status
                ));
            }
            CommandOutput { ok, output }
        }
        Ok(Err(e)) => CommandOutput {
            ok: false,
            output: format!("`{prog}` could not start: {e}"),
        },
        Err(_) => CommandOutput {
            ok: false,
            output: format!(
                "`{}` did not finish within {}s",
                cmd.argv.join(" "),
                cmd.timeout.as_secs()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_reports_its_output_exit_status_and_timeout() {
        let h = SystemHost;
        let ok = h
            .run(HostCommand::new(
                &["sh".into(), "-c".into(), "echo hi; echo err >&2".into()],
                Duration::from_secs(5),
            ))
            .await;
        assert!(ok.ok);
        assert_eq!(ok.output, "hi\nerr\n");
        let failed = h
            .run(HostCommand::new(
                &["sh".into(), "-c".into(), "exit 3".into()],
                Duration::from_secs(5),
            ))
            .await;
        assert!(!failed.ok);
        assert!(
            failed.output.ends_with("exited with exit status: 3"),
            "{}",
            failed.output
        );
        let slow = h
            .run(HostCommand::new(
                &["sleep".into(), "5".into()],
                Duration::from_millis(100),
            ))
            .await;
        assert!(!slow.ok);
        assert_eq!(slow.output, "`sleep 5` did not finish within 0s");
        let missing = h
            .run(HostCommand::new(
                &["/nonexistent/prog".into()],
                Duration::from_secs(1),
            ))
            .await;
        assert!(
            missing
                .output
                .starts_with("`/nonexistent/prog` could not start")
        );
        assert!(h.run(HostCommand::default()).await.ok, "nothing to run");
    }
}
