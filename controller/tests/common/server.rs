//! A controller on the example fleet for the status page tests (HTTP and
//! browser), with an operator and a viewer, and one club name that tries
//! to inject a script.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use touchline_testkit::{ControllerFiles, RunningController};

/// A controller running over its files, with a client that does not follow
/// redirects.
pub struct Server {
    /// Base URL.
    pub url: String,
    /// A client that does not follow redirects.
    pub http: Client,
    /// The data directory.
    pub data: PathBuf,
    /// Its files.
    pub files: ControllerFiles,
    _running: RunningController,
}

/// The example fleet, with one club name that tries to inject a script.
pub fn start() -> Server {
    let files = ControllerFiles::with_repo(|repo| {
        touchline_testkit::example_fleet(repo);
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
    });
    launch(files, "")
}

/// A controller on a synthetic fleet of `sites` sites (`site-00000`…).
pub fn start_synthetic(sites: usize) -> Server {
    let files = ControllerFiles::with_repo(|repo| {
        touchline_testkit::synthetic::generate(
            repo,
            &touchline_testkit::synthetic::Size {
                sites,
                groups: 18,
                videos: 5,
            },
        );
    });
    launch(files, "")
}

/// Writes the config (`extra`, then an operator and a viewer) and starts
/// the controller.
pub fn launch(files: ControllerFiles, extra: &str) -> Server {
    files.config(extra);
    let running = files.start();
    Server {
        url: running.url.clone(),
        http: running.http.clone(),
        data: files.data(),
        files,
        _running: running,
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
