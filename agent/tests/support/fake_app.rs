//! A fake NEOPRO app for the release tests: each release holds a `run.sh`
//! that the box's `start_command` launches. `Healthy` serves `/health` and
//! `/version` (Python's `http.server` on a loopback port), `NoHealth`
//! serves `/version` only (`/health` is a 404), `Crashes` dies right after
//! it starts. Shared by `release.rs` and `e2e.rs`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How a fake release behaves.
#[derive(Clone, Copy)]
pub enum App {
    /// Serves /health and /version.
    Healthy,
    /// Serves /version only: /health is a 404.
    NoHealth,
    /// Its process exits right after start.
    Crashes,
}

/// A tar.gz of a fake release.
pub fn package(version: &str, app: App) -> Vec<u8> {
    let run = match app {
        App::Healthy | App::NoHealth => {
            "#!/bin/sh\nnohup python3 -m http.server \"$APP_PORT\" --bind 127.0.0.1 --directory www >/dev/null 2>&1 &\necho $! > \"$TOUCHLINE_SOFTWARE_ROOT/app.pid\"\n"
        }
        App::Crashes => {
            "#!/bin/sh\n(sleep 0.1; exit 3) &\necho $! > \"$TOUCHLINE_SOFTWARE_ROOT/app.pid\"\n"
        }
    };
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("run.sh".into(), run.as_bytes().to_vec(), 0o755),
        ("www/version".into(), version.as_bytes().to_vec(), 0o644),
        ("VERSION".into(), version.as_bytes().to_vec(), 0o644),
    ];
    if matches!(app, App::Healthy) {
        files.push(("www/health".into(), b"ok".to_vec(), 0o644));
    }
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data, mode) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(0);
            b.append_data(&mut h, path, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    out
}

/// The box's service manager: `start.sh` runs the current release's
/// `run.sh` (unless the app runs already, like `systemctl start`);
/// `stop.sh` kills what it started and waits for the port to be free.
/// Both read `TOUCHLINE_SOFTWARE_ROOT` (set by the agent) and `APP_PORT`.
pub fn service_scripts(root: &Path) {
    std::fs::write(
        root.join("start.sh"),
        "p=\"$TOUCHLINE_SOFTWARE_ROOT/app.pid\"\nif [ -f \"$p\" ] && kill -0 \"$(cat \"$p\")\" 2>/dev/null; then exit 0; fi\ncd \"$TOUCHLINE_SOFTWARE_ROOT/current\" && exec ./run.sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("stop.sh"),
        "p=\"$TOUCHLINE_SOFTWARE_ROOT/app.pid\"\n[ -f \"$p\" ] && kill \"$(cat \"$p\")\" 2>/dev/null\nrm -f \"$p\"\n# wait for the port to be free\nfor i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$APP_PORT) 2>/dev/null || exit 0; sleep 0.1; done\n",
    )
    .unwrap();
}

/// The agent config lines for a box under `root` using those scripts.
pub fn software_config(root: &Path) -> String {
    format!(
        "software_root = \"{r}/software\"\nstart_command = [\"bash\", \"{r}/start.sh\"]\nstop_command = [\"bash\", \"{r}/stop.sh\"]\nupdate_lock = \"{r}/update.lock\"\n",
        r = root.display()
    )
}

/// Stops the app of the box under `root` (test cleanup).
pub fn stop(root: &Path, port: u16) {
    let _ = Command::new("bash")
        .arg(root.join("stop.sh"))
        .env("TOUCHLINE_SOFTWARE_ROOT", root.join("software"))
        .env("APP_PORT", port.to_string())
        .status();
}

/// The version the app on `port` serves (None: nothing answers).
pub fn serving(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /version HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.contains(" 200 ").then(|| {
        text.rsplit("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

/// Whether the fake app can run; outside CI, prints why a test is skipped
/// when python3 is missing; in CI, its absence fails the test.
pub fn python_or_skip() -> bool {
    if have_python() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3 is required in CI"
    );
    println!("SKIPPED: python3 (the fake app) is not installed");
    false
}

/// Whether python3 (the fake app) runs here.
pub fn have_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
