//! A hostile club member on a box: commands run as `nobody` through
//! `setpriv` (the agent under test runs as root, as on a real box), in a
//! tree the club may write; and a canary tree outside every root whose
//! checksum proves that nothing the agent did reached it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{in_ci, require_tool};

/// `nobody`'s uid and gid on Debian.
pub const NOBODY: u32 = 65534;

/// Runs commands as `nobody`.
#[derive(Debug, Clone)]
pub struct Club {
    setpriv: PathBuf,
}

impl Club {
    /// `None` (with the reason printed) when the tests do not run as root
    /// or `setpriv` is missing; in CI, a panic.
    pub fn new_or_skip() -> Option<Self> {
        if !is_root() {
            if in_ci() {
                panic!("the club tests run as root in CI");
            }
            eprintln!(
                "SKIPPED: the hostile-club tests need root (the agent runs as root on a box)"
            );
            return None;
        }
        let setpriv = require_tool("setpriv", "apt-get install util-linux")?;
        Some(Self { setpriv })
    }

    /// Makes `dir` (created when missing) the club's: owned by `nobody`,
    /// and every directory above it up to `/` searchable.
    pub fn owns(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        for a in dir.ancestors().skip(1) {
            let Ok(m) = std::fs::metadata(a) else {
                continue;
            };
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o005)).unwrap();
            }
        }
    }

    /// Runs `sh -c script` as `nobody`; panics when it fails (the club's
    /// move must have been possible for the test to mean anything).
    pub fn run(&self, script: &str) {
        let out = Command::new(&self.setpriv)
            .args([
                "--reuid",
                &NOBODY.to_string(),
                "--regid",
                &NOBODY.to_string(),
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "as nobody: `{script}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn is_root() -> bool {
    // `id -u` keeps the kit free of libc bindings.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A root-owned tree outside the box's roots: a root-only JSON file, a
/// video-like file, a subdirectory.
#[derive(Debug)]
pub struct Canary {
    /// Its directory.
    pub dir: PathBuf,
    before: BTreeMap<String, String>,
}

/// What the canary's root-only JSON holds (it must never show up in a
/// file the club can read).
pub const SECRET: &str = "canary-secret-7f3a";

impl Canary {
    /// Makes the tree under `dir`.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let secret = dir.join("secret.json");
        std::fs::write(&secret, format!("{{\"password\": \"{SECRET}\"}}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.join("b.mp4"), b"not the club's to delete").unwrap();
        std::fs::write(dir.join("sub/keep"), b"keep").unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            dir: dir.to_path_buf(),
            before: listing(dir),
        }
    }

    /// Panics, naming the difference, when anything under the canary was
    /// added, removed, rewritten or had its mode changed.
    pub fn assert_unchanged(&self, after_what: &str) {
        assert_eq!(
            listing(&self.dir),
            self.before,
            "{after_what}: the canary tree changed"
        );
    }
}

/// Path → (mode, sha256 of the content) of everything under `dir`, not
/// following symlinks.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let content = if m.is_dir() {
                stack.push(e.path());
                "dir".to_owned()
            } else if m.is_file() {
                touchline_schemas::Sha256::digest(&std::fs::read(e.path()).unwrap()).to_hex()
            } else {
                "other".to_owned()
            };
            out.insert(rel, format!("{:o} {content}", m.permissions().mode()));
        }
    }
    out
}
