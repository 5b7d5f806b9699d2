//! The status page over real HTTP: login and sessions, CSRF, roles,
//! languages, escaping, filters, charts. (The browser test drives the same
//! pages in Chromium.)
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::json;
use touchline_controller::tokens::Token;

const OPERATOR: &str = "operator-token-for-tests-0123456789abcdef";
const VIEWER: &str = "viewer-token-for-tests-0123456789abcdef";

fn git(dir: &std::path::Path, args: &[&str]) {
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

struct Server {
    child: Child,
    url: String,
    http: Client,
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example fleet, with one club name that tries to inject a script.
fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    common::copy_tree(&common::repo_root().join("fleet-manifests"), &repo);
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
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fleet"]);
    common::touchline()
        .args(["keygen", "--out"])
        .arg(tmp.path().join("key"))
        .assert()
        .success();
    std::fs::write(
        tmp.path().join("controller.toml"),
        format!(
            "sync_interval = \"1h\"\n[[operators]]\nname = \"ops\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n[[operators]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
            Token::new(OPERATOR).hash().to_hex(),
            Token::new(VIEWER).hash().to_hex()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchline"))
        .arg("serve")
        .arg("--repo")
        .arg(&repo)
        .arg("--data")
        .arg(&data)
        .arg("--key")
        .arg(tmp.path().join("key"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(tmp.path().join("controller.toml"))
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
        .unwrap()
        .to_owned();
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

fn cookie_of(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn value(cookie: &str) -> String {
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
fn csrf_in(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[i..i + 64].to_owned()
}

impl Server {
    fn get(&self, path: &str, cookies: &str, lang: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header("cookie", cookies)
            .header("accept-language", lang)
            .send()
            .unwrap()
    }

    /// Logs in; returns the cookie header to send and the page CSRF token.
    fn login(&self, token: &str) -> (String, String) {
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

#[test]
fn login_sessions_csrf_and_roles() {
    let s = start();
    // No session: the login page.
    let r = s.get("/", "", "fr");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");
    let r = s.get("/sites", "tl_session=forged", "fr");
    assert_eq!(r.headers()["location"], "/login");
    // A login without the pre-session CSRF pair is refused.
    let r = s
        .http
        .post(format!("{}/login", s.url))
        .form(&[("token", VIEWER), ("csrf", "x")])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A wrong token goes back to the form with a message.
    let form = s.get("/login", "", "fr");
    let pre = value(&cookie_of(&form, "tl_login").unwrap());
    let r = s
        .http
        .post(format!("{}/login", s.url))
        .header("cookie", format!("tl_login={pre}"))
        .form(&[("token", "wrong"), ("csrf", pre.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.headers()["location"], "/login?failed=1");
    let page = s.get("/login?failed=1", "", "fr").text().unwrap();
    assert!(page.contains("id=\"login-error\">Jeton refusé.<"), "{page}");
    // Behind an HTTPS proxy the cookie is Secure.
    let form = s.get("/login", "", "fr");
    let pre = value(&cookie_of(&form, "tl_login").unwrap());
    let r = s
        .http
        .post(format!("{}/login", s.url))
        .header("cookie", format!("tl_login={pre}"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", VIEWER), ("csrf", pre.as_str())])
        .send()
        .unwrap();
    assert!(cookie_of(&r, "tl_session").unwrap().contains("; Secure"));

    // A viewer sees everything and cannot act.
    let (viewer, vcsrf) = s.login(VIEWER);
    let r = s.get("/", &viewer, "fr");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().unwrap();
    assert!(
        html.contains("<span class=\"n\" id=\"count-total\">12</span>"),
        "{html}"
    );
    assert!(
        !html.contains("id=\"sync\""),
        "no action button for a viewer"
    );
    let sync = |cookies: &str, csrf: Option<&str>| {
        let mut form = vec![];
        if let Some(c) = csrf {
            form.push(("csrf", c.to_owned()));
        }
        s.http
            .post(format!("{}/sync", s.url))
            .header("cookie", cookies)
            .form(&form)
            .send()
            .unwrap()
    };
    assert_eq!(sync(&viewer, Some(&vcsrf)).status(), StatusCode::FORBIDDEN);
    // An operator can, with the CSRF token only.
    let (op, ocsrf) = s.login(OPERATOR);
    assert!(
        s.get("/", &op, "fr")
            .text()
            .unwrap()
            .contains("id=\"sync\"")
    );
    assert_eq!(
        sync(&op, None).status(),
        StatusCode::FORBIDDEN,
        "CSRF missing"
    );
    assert_eq!(
        sync(&op, Some(&vcsrf)).status(),
        StatusCode::FORBIDDEN,
        "another session's CSRF"
    );
    assert_eq!(sync(&op, Some(&ocsrf)).status(), StatusCode::SEE_OTHER);
    // The JSON API does not take the session cookie.
    assert_eq!(
        s.get("/api/sites", &op, "fr").status(),
        StatusCode::UNAUTHORIZED
    );
    // Logout ends the session.
    let r = s
        .http
        .post(format!("{}/logout", s.url))
        .header("cookie", &op)
        .form(&[("csrf", ocsrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.headers()["location"], "/login");
    assert_eq!(s.get("/", &op, "fr").headers()["location"], "/login");
}

#[test]
fn pages_speak_french_and_english_escape_names_filter_and_chart() {
    let s = start();
    let (cookies, _) = s.login(VIEWER);
    // Accept-Language picks; the switch is remembered in a cookie.
    assert!(
        s.get("/", &cookies, "fr-FR,fr;q=0.9")
            .text()
            .unwrap()
            .contains("<h1>Vue d&#39;ensemble</h1>")
    );
    assert!(
        s.get("/", &cookies, "en-GB")
            .text()
            .unwrap()
            .contains("<h1>Overview</h1>")
    );
    let r = s.get("/lang/en?back=/sites", &cookies, "fr");
    assert_eq!(r.headers()["location"], "/sites");
    let lang = value(&cookie_of(&r, "tl_lang").unwrap());
    let both = format!("{cookies}; tl_lang={lang}");
    assert!(
        s.get("/sites", &both, "fr")
            .text()
            .unwrap()
            .contains("<option value=\"\">All</option>")
    );
    // No open redirect.
    let r = s.get("/lang/fr?back=//evil.example/x", &cookies, "fr");
    assert_eq!(r.headers()["location"], "/");

    // A club name with a script renders as text.
    let html = s.get("/sites", &cookies, "fr").text().unwrap();
    let shown = html
        .split("<small>")
        .find(|p| p.contains("Ivry</small>"))
        .map(|p| &p[..p.find("</small>").unwrap()])
        .unwrap_or_else(|| panic!("{html}"));
    assert_eq!(
        shown,
        "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; Ivry"
    );
    assert!(!html.contains("<script>alert"), "never raw");

    // Filters: the rugby sites only.
    let html = s.get("/sites?sport=rugby", &cookies, "fr").text().unwrap();
    let rows: Vec<&str> = html
        .split("data-site=\"")
        .skip(1)
        .map(|p| &p[..p.find('"').unwrap()])
        .collect();
    assert_eq!(
        rows,
        vec!["la-roche-rugby", "massy-rugby", "vannes-rugby"],
        "{html}"
    );
    assert!(html.contains("<option value=\"rugby\" selected>rugby</option>"));

    // A site with metrics has charts (server-rendered SVG, with hover
    // titles) and its events.
    let out = common::touchline()
        .args(["site", "token", "--data"])
        .arg(&s.data)
        .arg("massy-rugby")
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let now = jiff::Timestamp::now();
    let reports: Vec<serde_json::Value> = (1..=6)
        .map(|i| {
            json!({"seq": i, "at": now - jiff::SignedDuration::from_mins(60 - i * 10),
                   "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1},
                   "metrics": {"cpu_percent": 10.0 + i as f64, "memory_percent": 40.0, "temperature_c": 55.5,
                               "disk_used_bytes": 8_000_000_000u64, "disk_total_bytes": 32_000_000_000u64}})
        })
        .collect();
    let r = s
        .http
        .post(format!("{}/v1/sites/massy-rugby/reports", s.url))
        .bearer_auth(&token)
        .json(&json!({"format": 1, "site": "massy-rugby", "reports": reports}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = s.get("/sites/massy-rugby", &cookies, "fr").text().unwrap();
    for m in ["cpu", "memory", "temperature", "disk"] {
        assert!(
            html.contains(&format!("<figure class=\"chart\" data-metric=\"{m}\">")),
            "{m}"
        );
    }
    assert!(
        html.contains("55,5 °C</title>"),
        "hover title in French style"
    );
    assert!(
        html.contains("<strong id=\"health\">100</strong>"),
        "{html}"
    );
    assert!(html.contains("applied serial 1"), "events");
    let en = s
        .get("/sites/massy-rugby?range=7d", &both, "fr")
        .text()
        .unwrap();
    assert!(en.contains("55.5 °C</title>") && en.contains("class=\"current\">7d</a>"));
}
