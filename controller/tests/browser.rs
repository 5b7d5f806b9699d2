//! The status page in a real browser: headless Chromium driven through
//! chromedriver (WebDriver). Logs in, opens the overview, filters the
//! sites, opens a site with charts, switches French/English, and saves a
//! screenshot of each page under `target/screenshots/`. Assertions are on
//! the DOM. On each page axe-core (from the npm registry, run in the same
//! Chromium) finds no critical or serious accessibility violation. Skipped
//! with a printed reason only when Chromium (or axe-core, for that part)
//! is absent outside CI.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::start;
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use touchline_testkit::{Killed, VIEWER};

/// axe-core's `axe.min.js`: `$TOUCHLINE_AXE`, or where `.ci/run` installs
/// it (`target/npm`). Required in CI.
fn axe_source() -> Option<String> {
    let path = std::env::var_os("TOUCHLINE_AXE").map_or_else(
        || touchline_testkit::repo_root().join("target/npm/node_modules/axe-core/axe.min.js"),
        std::path::PathBuf::from,
    );
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "axe-core is missing at {} ({e}): .ci/run installs it with npm",
                path.display()
            );
            println!(
                "skipping the accessibility checks: no axe-core at {} ({e}); `npm install --prefix target/npm axe-core@4.14.1`",
                path.display()
            );
            None
        }
    }
}

/// The critical and serious violations axe-core finds on the current page.
async fn axe_violations(c: &fantoccini::Client, axe: &str) -> Vec<String> {
    c.execute(axe, vec![]).await.unwrap();
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]}).then(r => done(r.violations
  .filter(v => v.impact === "critical" || v.impact === "serious")
  .map(v => v.impact + " " + v.id + ": " + v.help + " — " +
    v.nodes.slice(0, 3).map(n => n.target.join(" ") + " (" + n.failureSummary + ")").join("; "))))
  .catch(e => done(["axe failed: " + e]));"#,
            vec![],
        )
        .await
        .unwrap();
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn screenshots() -> std::path::PathBuf {
    let dir = touchline_testkit::repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_status_page_in_headless_chromium() {
    let (Some(driver), Some(chromium)) = (
        touchline_testkit::require_tool("chromedriver", "apt-get install chromium-driver"),
        touchline_testkit::require_tool("chromium", "apt-get install chromium"),
    ) else {
        return;
    };
    let s = start();
    // A site with a day of metrics, for its charts.
    let token = s.files.site_token("massy-rugby", false);
    let now = jiff::Timestamp::now();
    let reports: Vec<serde_json::Value> = (1..=48)
        .map(|i| {
            json!({"seq": i, "at": now - jiff::SignedDuration::from_mins(30 * (48 - i)),
                   "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1},
                   "metrics": {"cpu_percent": 10.0 + (i % 7) as f64 * 5.0, "memory_percent": 40.0,
                               "temperature_c": 50.0 + (i % 5) as f64, "disk_used_bytes": 8_000_000_000u64,
                               "disk_total_bytes": 32_000_000_000u64}})
        })
        .collect();
    let r = s
        .http
        .post(format!("{}/v1/sites/massy-rugby/reports", s.url))
        .bearer_auth(&token)
        .json(&json!({"format": 1, "site": "massy-rugby", "reports": reports}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    // A site with a single report: its charts show one marker and its
    // value, not an empty box.
    let token = s.files.site_token("vannes-rugby", false);
    let r = s
        .http
        .post(format!("{}/v1/sites/vannes-rugby/reports", s.url))
        .bearer_auth(&token)
        .json(&json!({"format": 1, "site": "vannes-rugby", "reports": [{"seq": 1, "at": now,
            "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1},
            "metrics": {"cpu_percent": 12.0, "memory_percent": 41.5, "temperature_c": 52.3,
                "disk_used_bytes": 8_000_000_000u64, "disk_total_bytes": 32_000_000_000u64,
                "hardware": "Raspberry Pi 4 Model B Rev 1.4", "os": "Debian GNU/Linux 12 (bookworm)",
                "kernel": "6.1.0-rpi7-rpi-v8", "uptime_secs": 273_600}}]}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let axe = axe_source();
    let mut accessibility: Vec<String> = Vec::new();

    let port = touchline_testkit::free_port();
    let _driver = Killed(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1280,900", "--lang=fr-FR",
                         format!("--user-data-dir={}", profile.path().display())],
                "prefs": {"intl.accept_languages": "fr-FR,fr"}
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        let shot = |name: &'static str, c: fantoccini::Client| async move {
            let png = c.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"));
            std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
            c
        };
        // The text of `css` once the page that has it is loaded (a click
        // navigates; the old page's elements go stale meanwhile).
        let text = |c: &fantoccini::Client, css: &'static str| {
            let c = c.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Ok(e) = c.wait().for_element(Locator::Css(css)).await
                        && let Ok(t) = e.text().await
                    {
                        return t;
                    }
                    assert!(Instant::now() < deadline, "no `{css}`");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };

        // Not logged in: the login page.
        c.goto(&s.url).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/login"));
        let c = shot("login", c).await;
        c.find(Locator::Css("#token")).await.unwrap().send_keys("wrong").await.unwrap();
        c.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
        assert_eq!(text(&c, "#login-error").await, "Identifiants ou jeton refusés.");
        c.find(Locator::Css("#token")).await.unwrap().send_keys(VIEWER).await.unwrap();
        c.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
        text(&c, "#count-total").await;

        // Overview, in French (the browser's language).
        assert_eq!(text(&c, "h1").await, "Vue d'ensemble");
        assert_eq!(text(&c, "#count-total").await, "12");
        let dots = c.find_all(Locator::Css("#map circle.site")).await.unwrap();
        assert_eq!(dots.len(), 12, "a dot per site on the map");
        // The refresh can be paused, and the pause is kept.
        assert_eq!(text(&c, "#refresh-state").await, "Actualisé toutes les 60 s");
        c.find(Locator::Css("#refresh-toggle")).await.unwrap().click().await.unwrap();
        assert_eq!(text(&c, "#refresh-state").await, "Actualisation en pause");
        assert_eq!(text(&c, "#refresh-toggle").await, "Reprendre");
        let c = shot("overview-fr", c).await;
        let audit = |c: fantoccini::Client, page: &'static str| {
            let axe = axe.clone();
            async move {
                let found = match &axe {
                    Some(a) => axe_violations(&c, a).await,
                    None => Vec::new(),
                };
                (c, found.into_iter().map(|f| format!("{page}: {f}")).collect::<Vec<_>>())
            }
        };
        let (c, found) = audit(c, "overview").await;
        accessibility.extend(found);

        // Sites, filtered to rugby with the form.
        c.find(Locator::Css("#nav-sites")).await.unwrap().click().await.unwrap();
        text(&c, "#site-count").await;
        let all = c.find_all(Locator::Css("#sites-table tbody tr")).await.unwrap();
        assert_eq!(all.len(), 12);
        c.find(Locator::Css("#f-sport")).await.unwrap().select_by_value("rugby").await.unwrap();
        c.find(Locator::Css("#apply-filters")).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.current_url().await.unwrap().as_str().contains("sport=rugby") {
            assert!(Instant::now() < deadline, "the filter did not submit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        text(&c, "#site-count").await;
        let rows = c.find_all(Locator::Css("#sites-table tbody tr")).await.unwrap();
        let mut ids = Vec::new();
        for r in &rows {
            ids.push(r.attr("data-site").await.unwrap().unwrap());
        }
        assert_eq!(ids, ["la-roche-rugby", "massy-rugby", "vannes-rugby"]);
        assert!(c.current_url().await.unwrap().query().unwrap().contains("sport=rugby"));
        let c = shot("sites-rugby", c).await;
        let (c, found) = audit(c, "sites").await;
        accessibility.extend(found);

        // A site with its charts.
        c.find(Locator::Css("tr[data-site=massy-rugby] a")).await.unwrap().click().await.unwrap();
        text(&c, "#site-name").await;
        for m in ["cpu", "memory", "temperature", "disk"] {
            let fig = c
                .find(Locator::Css(&format!("figure[data-metric={m}] svg polyline")))
                .await
                .unwrap();
            let points = fig.attr("points").await.unwrap().unwrap();
            assert_eq!(points.split(' ').count(), 48, "{m}: one point per report");
        }
        let c = shot("site-fr", c).await;
        let (c, found) = audit(c, "site").await;
        accessibility.extend(found);

        // One report: a marker with its value, and the figures of now.
        c.goto(&format!("{}/sites/vannes-rugby", s.url)).await.unwrap();
        text(&c, "#site-name").await;
        let cpu = c
            .find_all(Locator::Css("figure[data-metric=cpu] svg circle"))
            .await
            .unwrap();
        assert_eq!(cpu.len(), 1);
        assert_eq!(cpu[0].attr("r").await.unwrap().as_deref(), Some("4"));
        assert_eq!(
            text(&c, "figure[data-metric=cpu] svg text.last").await,
            "12,0 %"
        );
        let label = c
            .find(Locator::Css("figure[data-metric=temperature] svg"))
            .await
            .unwrap()
            .attr("aria-label")
            .await
            .unwrap()
            .unwrap();
        assert!(label.starts_with("Température : dernière valeur 52,3 °C"), "{label}");
        let now_table = text(&c, "#now").await;
        for want in [
            "12,0 %",
            "41,5 %",
            "52,3 °C",
            "8,0 / 32,0 Go (25 %)",
            "3 j 4 h",
            "Raspberry Pi 4 Model B Rev 1.4",
            "Debian GNU/Linux 12 (bookworm) · Linux 6.1.0-rpi7-rpi-v8",
            "Vannes",
        ] {
            assert!(now_table.contains(want), "`{want}` in {now_table}");
        }
        let c = shot("site-one-report", c).await;
        let (c, found) = audit(c, "site with one report").await;
        accessibility.extend(found);
        let mut c = c;
        for (path, name) in [("/alerts", "alerts"), ("/releases", "releases"), ("/groups", "groups"), ("/audit", "audit")] {
            c.goto(&format!("{}{path}", s.url)).await.unwrap();
            text(&c, "h1").await;
            if name == "alerts" {
                // The pause holds on the next page that refreshes.
                assert_eq!(text(&c, "#refresh-state").await, "Actualisation en pause");
            }
            let (next, found) = audit(c, name).await;
            accessibility.extend(found);
            c = next;
        }

        // English, remembered across pages.
        c.goto(&format!("{}/sites/massy-rugby", s.url)).await.unwrap();
        text(&c, "#site-name").await;
        c.find(Locator::Css("#lang-switch")).await.unwrap().click().await.unwrap();
        assert_eq!(text(&c, "figure[data-metric=temperature] figcaption").await, "Temperature");
        c.find(Locator::Css("#nav-overview")).await.unwrap().click().await.unwrap();
        assert_eq!(text(&c, "h1").await, "Overview");
        let c = shot("overview-en", c).await;
        let (c, found) = audit(c, "overview (English)").await;
        accessibility.extend(found);
        c.close().await.unwrap();
    });
    assert!(
        accessibility.is_empty(),
        "axe-core found:\n{}",
        accessibility.join("\n")
    );
    println!("screenshots in {}", screenshots().display());
}
