//! A controller on the example fleet for the status page tests (HTTP and
//! browser), with an operator and a viewer, and one club name that tries
//! to inject a script.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use touchline_controller::tokens::Token;

pub const OPERATOR: &str = "operator-token-for-tests-0123456789abcdef";
pub const VIEWER: &str = "viewer-token-for-tests-0123456789abcdef";

pub fn git(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

pub struct Server {
    child: Child,
    /// Base URL.
    pub url: String,
    /// A client that does not follow redirects.
    pub http: Client,
    _tmp: tempfile::TempDir,
    /// The data directory.
    pub data: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example fleet, with one club name that tries to inject a script.
/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `touchline serve` on a free loopback port over `dir`'s `repo`,
/// `data`, `key` and `controller.toml`; returns the process and its URL.
pub fn serve(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchline"))
        .arg("serve")
        .arg("--repo")
        .arg(dir.join("repo"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--key")
        .arg(dir.join("key"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("controller.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
        .to_owned();
    (child, url)
}

pub fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    super::copy_tree(&super::repo_root().join("fleet-manifests"), &repo);
    let site = repo.join("sites/ivry-handball.yaml");
    let text = std::fs::read_to_string(&site).unwrap();
    let club_line = text
        .lines()
        .find(|l| l.starts_with("club:"))
        .unwrap()
        .to_owned();
    std::fs::write(
        &site,
        text.replace(&club_line, "club: \"<script>alert('x')</script> Ivry\""),
    )
    .unwrap();
    launch(tmp, "")
}

/// A controller on a synthetic fleet of `sites` sites (`site-00000`…).
pub fn start_synthetic(sites: usize) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    touchline_controller::synthetic::generate(
        &tmp.path().join("repo"),
        &touchline_controller::synthetic::Size {
            sites,
            groups: 18,
            videos: 5,
        },
    );
    launch(tmp, "")
}

/// Commits `tmp/repo`, writes a key and the config (`extra`, then an
/// operator and a viewer), and starts the controller.
pub fn launch(tmp: tempfile::TempDir, extra: &str) -> Server {
    let repo = tmp.path().join("repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fleet"]);
    super::touchline()
        .args(["keygen", "--out"])
        .arg(tmp.path().join("key"))
        .assert()
        .success();
    std::fs::write(
        tmp.path().join("controller.toml"),
        format!(
            "sync_interval = \"1h\"\n{extra}\n[[operators]]\nname = \"ops\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n[[operators]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
            Token::new(OPERATOR).hash().to_hex(),
            Token::new(VIEWER).hash().to_hex()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let (child, url) = serve(tmp.path());
    Server {
        child,
        url,
        http: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _tmp: tmp,
        data,
    }
}

pub fn cookie_of(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

pub fn value(cookie: &str) -> String {
    cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// The value of the hidden `csrf` input of a page.
pub fn csrf_in(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[i..i + 64].to_owned()
}

impl Server {
    pub fn get(&self, path: &str, cookies: &str, lang: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header("cookie", cookies)
            .header("accept-language", lang)
            .send()
            .unwrap()
    }

    /// Logs in; returns the cookie header to send and the page CSRF token.
    pub fn login(&self, token: &str) -> (String, String) {
        let form = self.get("/login", "", "fr");
        let pre = value(&cookie_of(&form, "tl_login").unwrap());
        let csrf = csrf_in(&form.text().unwrap());
        assert_eq!(pre, csrf);
        let r = self
            .http
            .post(format!("{}/login", self.url))
            .header("cookie", format!("tl_login={pre}"))
            .form(&[("token", token), ("csrf", &csrf)])
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/");
        let session = cookie_of(&r, "tl_session").unwrap();
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Strict"),
            "{session}"
        );
        assert!(!session.contains("Secure"), "plain HTTP: not Secure");
        let cookies = format!("tl_session={}", value(&session));
        let page = self.get("/", &cookies, "fr").text().unwrap();
        (cookies, csrf_in(&page))
    }
}
