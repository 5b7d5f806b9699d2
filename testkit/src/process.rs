//! The built binaries, commands that must succeed, children killed on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output};

/// A built binary of the workspace (`touchline`, `touchline-agent`), next
/// to the running test's own directory (`target/<profile>/`). `cargo test
/// --workspace` builds both before any test runs; a crate's tests run alone
/// build the other crate's binary here, once; a benchmark (release)
/// rebuilds it once per run, so that it never measures a stale one.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    // A benchmark (release) builds the binary once per run: `cargo bench
    // -p <crate>` does not rebuild the other crate's binary, and a stale one
    // measures old code.
    static FRESH: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let release = dir.file_name().is_some_and(|p| p == "release");
    let stale = release
        && FRESH
            .lock()
            .map(|mut f| {
                let first = !f.iter().any(|n| n == name);
                f.push(name.to_owned());
                first
            })
            .unwrap_or(false);
    if !path.exists() || stale {
        let package = match name {
            "touchline" => "touchline-controller",
            "touchline-agent" => "touchline-agent",
            other => panic!("no binary `{other}` in this workspace"),
        };
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", package, "--bin", name])
            .current_dir(crate::repo_root());
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "building {name}");
    }
    path
}

/// Runs `cmd`; asserts it succeeded (showing its stderr when not).
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Its stdout, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Its stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Killed {
    /// The URL of a server that prints `listening on <url>` as its first
    /// line on stdout (piped): `touchline serve`, the tests' own servers.
    pub fn listening_url(&mut self) -> String {
        let mut line = String::new();
        if let Some(out) = self.0.stdout.take() {
            BufReader::new(out).read_line(&mut line).unwrap();
        }
        line.trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
            .to_owned()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
