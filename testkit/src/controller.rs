//! A controller's files (manifests repository, signing key, data directory,
//! `controller.toml`) and `touchline serve` running over them on
//! `127.0.0.1:0`, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::git::Repo;
use crate::process::{Killed, bin, run, stdout};

/// An operator's token (role `operator`, name `ops`) in every test config.
pub const OPERATOR: &str = "operator-token-for-tests-0123456789abcdef";
/// A viewer's token (role `viewer`, name `watcher`).
pub const VIEWER: &str = "viewer-token-for-tests-0123456789abcdef";

/// The `token_sha256` of a token in the controller's config (the hex
/// sha256 of its text).
pub fn token_sha256(token: &str) -> String {
    touchline_schemas::Sha256::digest(token.as_bytes()).to_hex()
}

/// A temp directory holding `repo/` (a git repository), `key`/`key.pub`,
/// `data/` and `controller.toml`.
#[derive(Debug)]
pub struct ControllerFiles {
    tmp: tempfile::TempDir,
}

impl ControllerFiles {
    /// The example fleet committed as `fleet`, a key, and a config with
    /// `sync_interval = "1h"`, an operator and a viewer.
    pub fn example() -> Self {
        Self::with_repo(crate::example_fleet)
    }

    /// Like [`ControllerFiles::example`] with the manifests `fill` writes
    /// into the repository directory.
    pub fn with_repo(fill: impl FnOnce(&Path)) -> Self {
        let files = Self {
            tmp: tempfile::tempdir().unwrap(),
        };
        let dir = files.repo_dir();
        std::fs::create_dir_all(&dir).unwrap();
        fill(&dir);
        Repo::init(&dir).commit("fleet");
        run(Command::new(bin("touchline"))
            .args(["keygen", "--out"])
            .arg(files.key()));
        files.config("");
        files
    }

    /// Writes `controller.toml`: `sync_interval = "1h"`, then `extra`, then
    /// the operator and the viewer.
    pub fn config(&self, extra: &str) -> &Self {
        std::fs::write(
            self.path("controller.toml"),
            format!(
                "sync_interval = \"1h\"\n{extra}\n\n[[operators]]\nname = \"ops\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n\n[[operators]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
                token_sha256(OPERATOR),
                token_sha256(VIEWER),
            ),
        )
        .unwrap();
        self
    }

    /// Generates the example fleet's content and adds it to the store.
    pub fn add_example_content(&self) -> &Self {
        let content = self.path("content");
        run(Command::new(bin("touchline"))
            .args(["content", "generate-example", "--out"])
            .arg(&content)
            .arg(self.repo_dir()));
        let files: Vec<PathBuf> = crate::tree(&content)
            .keys()
            .map(|k| content.join(k))
            .collect();
        self.add_content(&files)
    }

    /// Adds `files` to the controller's content store
    /// (`touchline content add`).
    pub fn add_content(&self, files: &[PathBuf]) -> &Self {
        run(Command::new(bin("touchline"))
            .args(["content", "add", "--data"])
            .arg(self.data())
            .args(files));
        self
    }

    /// A path in the temp directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The temp directory.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The manifests repository's directory.
    pub fn repo_dir(&self) -> PathBuf {
        self.path("repo")
    }

    /// The manifests repository.
    pub fn repo(&self) -> Repo {
        Repo::at(self.repo_dir())
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// The signing key (its public half is `key.pub`).
    pub fn key(&self) -> PathBuf {
        self.path("key")
    }

    /// `touchline site token` for `site` (minted, or rotated).
    pub fn site_token(&self, site: &str, rotate: bool) -> String {
        let mut cmd = Command::new(bin("touchline"));
        cmd.args(["site", "token", "--data"])
            .arg(self.data())
            .arg(site);
        if rotate {
            cmd.arg("--rotate");
        }
        stdout(&run(&mut cmd))
    }

    /// The local admin's token, which the running controller wrote.
    pub fn local_admin_token(&self) -> String {
        std::fs::read_to_string(self.data().join("local-admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `touchline serve` on `127.0.0.1:0`.
    pub fn start(&self) -> RunningController {
        self.start_on("127.0.0.1:0")
    }

    /// The `touchline serve` command over these files (not started; logs
    /// at `warn`, stdout piped for the `listening on` line).
    pub fn serve_command(&self, listen: &str) -> Command {
        let mut cmd = Command::new(bin("touchline"));
        cmd.arg("serve")
            .arg("--repo")
            .arg(self.repo_dir())
            .arg("--data")
            .arg(self.data())
            .arg("--key")
            .arg(self.key())
            .args(["--listen", listen, "--config"])
            .arg(self.path("controller.toml"))
            // TOUCHLINE_TEST_LOG: the controllers' log filter in a test
            // run (`touchline_controller=debug` to follow one).
            .env(
                "RUST_LOG",
                std::env::var("TOUCHLINE_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped());
        cmd
    }

    /// `touchline serve --listen <listen>`; returns once it listens.
    pub fn start_on(&self, listen: &str) -> RunningController {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        // Owned by the guard from the start: a panic below still kills it.
        let mut process = Killed(self.serve_command(listen).spawn().unwrap());
        let url = process.listening_url();
        RunningController { url, http, process }
    }
}

/// `touchline serve`, killed when dropped.
#[derive(Debug)]
pub struct RunningController {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// A client that does not follow redirects, 30 s timeout.
    pub http: reqwest::blocking::Client,
    /// The process.
    pub process: Killed,
}

impl RunningController {
    /// `GET path` with an optional bearer token.
    pub fn get(&self, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    }

    /// `POST /api/sync` with `token`; asserts `200 OK`; the outcome.
    pub fn sync(&self, token: &str) -> serde_json::Value {
        let r = self
            .http
            .post(format!("{}/api/sync", self.url))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(status, reqwest::StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}
