//! `git` with a fixed identity and no signing, and a repository builder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git args` in `dir` with a test identity; asserts success and
/// returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Touchline Test",
            "-c",
            "user.email=test@example.org",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository in a directory the test owns.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// `git init` (branch `main`) in `dir`, creating it.
    pub fn init(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        Self { dir }
    }

    /// The repository already in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `rel` (creating its directories).
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }

    /// Replaces the first `from` in `rel` with `to` (which must be there).
    pub fn edit(&self, rel: &str, from: &str, to: &str) -> &Self {
        let text = std::fs::read_to_string(self.dir.join(rel)).unwrap();
        assert!(text.contains(from), "{rel} does not contain {from}");
        self.file(rel, text.replacen(from, to, 1))
    }

    /// Removes `rel`.
    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.dir.join(rel)).unwrap();
        self
    }

    /// Commits everything (`add -A`); returns the new commit id.
    pub fn commit(&self, msg: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    /// The commit id of `HEAD`.
    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// `git args` in the repository.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }
}
