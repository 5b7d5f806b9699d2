//! A fake [`Host`] for in-process agent tests: it records every command
//! and answers what the test scripted (success by default), and reports the
//! free space the test sets. No command runs: a test can point the reload,
//! service or reboot commands anywhere without touching the machine.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use touchline_agent::host::{BoxFuture, CommandOutput, Host, HostCommand};

/// Records commands; answers from a script.
#[derive(Debug, Default)]
pub struct FakeHost {
    ran: Mutex<Vec<HostCommand>>,
    answers: Mutex<VecDeque<CommandOutput>>,
    free: Mutex<Option<u64>>,
    before_apply: Mutex<Option<Hook>>,
}

/// A test's closure run at [`Host::before_apply`].
struct Hook(Box<dyn FnMut() + Send>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl FakeHost {
    /// Answers the next command with `ok` and `output` (then success).
    pub fn answer(&self, ok: bool, output: &str) -> &Self {
        self.answers
            .lock()
            .expect("fake host lock")
            .push_back(CommandOutput {
                ok,
                output: output.to_owned(),
            });
        self
    }

    /// Every filesystem has `bytes` free from now on (`None`: the real
    /// figure).
    pub fn set_free(&self, bytes: Option<u64>) -> &Self {
        *self.free.lock().expect("fake host lock") = bytes;
        self
    }

    /// Runs `f` each time a pass is about to write what it planned (after
    /// it looked at the box).
    pub fn before_apply(&self, f: impl FnMut() + Send + 'static) -> &Self {
        *self.before_apply.lock().expect("fake host lock") = Some(Hook(Box::new(f)));
        self
    }

    /// The argv of every command run so far.
    pub fn ran(&self) -> Vec<Vec<String>> {
        self.ran
            .lock()
            .expect("fake host lock")
            .iter()
            .map(|c| c.argv.clone())
            .collect()
    }

    /// The commands run so far, whole.
    pub fn commands(&self) -> Vec<HostCommand> {
        self.ran.lock().expect("fake host lock").clone()
    }
}

impl Host for FakeHost {
    fn run(&self, cmd: HostCommand) -> BoxFuture<'_, CommandOutput> {
        self.ran.lock().expect("fake host lock").push(cmd);
        let answer = self
            .answers
            .lock()
            .expect("fake host lock")
            .pop_front()
            .unwrap_or(CommandOutput {
                ok: true,
                output: String::new(),
            });
        Box::pin(async move { answer })
    }

    fn before_apply(&self) {
        if let Some(Hook(f)) = self.before_apply.lock().expect("fake host lock").as_mut() {
            f();
        }
    }

    fn free_space(&self, path: &Path) -> std::io::Result<u64> {
        match *self.free.lock().expect("fake host lock") {
            Some(b) => Ok(b),
            None => touchline_agent::fsx::available_space(path),
        }
    }
}
