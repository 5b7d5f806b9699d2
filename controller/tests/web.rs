//! The status page over real HTTP: login and sessions, CSRF, roles,
//! languages, escaping, filters, charts. (The browser test drives the same
//! pages in Chromium.)
#![allow(clippy::unwrap_used)]

mod common;

use reqwest::StatusCode;
use serde_json::json;

use common::server::{cookie_of, start, value};
use touchline_testkit::{OPERATOR, VIEWER};

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
    assert!(
        page.contains("id=\"login-error\">Identifiants ou jeton refusés.<"),
        "{page}"
    );
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

/// Regression: the overview's "last commits" rows rendered with no commit
/// id, time or summary (the page read keys the record does not have).
#[test]
fn the_overview_shows_the_id_time_and_summary_of_the_last_commit() {
    let s = start();
    let head = s.files.repo().head();
    let api: serde_json::Value = s
        .http
        .get(format!("{}/api/commits", s.url))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let first = &api["commits"][0];
    assert_eq!(first["id"], head.as_str(), "{api}");
    assert_eq!(first["summary"], "fleet");
    assert_eq!(first["state"], "accepted");
    let processed: jiff::Timestamp = first["processed_at"].as_str().unwrap().parse().unwrap();
    let shown_at = processed
        .to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap())
        .strftime("%Y-%m-%d %H:%M")
        .to_string();

    let (cookies, _) = s.login(VIEWER);
    let html = s.get("/", &cookies, "en").text().unwrap();
    let table = &html[html.find("<table id=\"commits\">").unwrap()..];
    let row = &table[table.find("<tr>").unwrap()..table.find("</tr>").unwrap()];
    assert_eq!(
        row,
        format!(
            "<tr><td><code>{}</code></td><td>{shown_at}</td><td>fleet</td><td>accepted</td><td>0 / 12 applied</td><td>angers-football (never reported), brest-basket (never reported), cesson-handball (never reported), ivry-handball (never reported), la-roche-rugby (never reported)</td>",
            &head[..10]
        )
    );
    let fr = s.get("/", &cookies, "fr").text().unwrap();
    assert!(fr.contains("<td>fleet</td><td>accepté</td>"), "{fr}");
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
    let token = s.files.site_token("massy-rugby", false);
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
    assert!(
        html.contains("numéro 1 appliqué"),
        "events, in the reader's language"
    );
    // What the bundle wants, each with the manifest line that set it.
    assert!(html.contains("Vidéos voulues (11)"), "{html}");
    assert!(
        html.contains("<td><code>training-rugby-melee</code></td><td><code>Entraînement/Rugby/melee.mp4</code></td><td><code>groups/rugby.yaml:10</code></td>"),
        "{html}"
    );
    assert!(
        html.contains("<td><code>/scoreboard/period_minutes</code></td><td><code>40</code></td><td><code>groups/rugby.yaml:16</code></td>"),
        "{html}"
    );
    assert!(
        html.contains("<td><code>/club/name</code></td><td><code>&#34;RC Massy Essonne&#34;</code></td><td><code>sites/massy-rugby.yaml:17</code></td>"),
        "{html}"
    );
    // The export link works with the session (the API would want a token).
    assert!(html.contains("href=\"/sites/massy-rugby/history.csv?range=24h\" id=\"export\""));
    let csv = s.get("/sites/massy-rugby/history.csv?range=24h", &cookies, "fr");
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().unwrap();
    assert_eq!(csv.lines().count(), 7, "a header and 6 points: {csv}");
    assert_eq!(
        s.get("/sites/massy-rugby/history.csv", "", "fr").headers()["location"],
        "/login"
    );
    // The whole fleet's export, linked from the sites page: only massy-rugby
    // reported, so its 6 points with a site column.
    let list = s.get("/sites", &cookies, "fr").text().unwrap();
    assert!(
        list.contains("<a href=\"/history.csv?range=7d\">7d</a>"),
        "{list}"
    );
    let fleet = s
        .get("/history.csv?range=7d", &cookies, "fr")
        .text()
        .unwrap();
    let rows: Vec<&str> = fleet.lines().collect();
    assert!(rows[0].starts_with("site,at,cpu_percent,"), "{fleet}");
    assert_eq!(rows.len(), 7, "{fleet}");
    assert!(
        rows[1..].iter().all(|r| r.starts_with("massy-rugby,")),
        "{fleet}"
    );
    assert_eq!(
        s.get("/history.csv", "", "fr").headers()["location"],
        "/login"
    );
    // JSON Lines from the API: one object per point, with the site.
    let jl = s
        .http
        .get(format!(
            "{}/api/sites/massy-rugby/history?format=jsonl",
            s.url
        ))
        .bearer_auth(VIEWER)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<serde_json::Value> = jl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert!(
        lines
            .iter()
            .all(|l| l["site"] == "massy-rugby" && l["temperature_c"] == 55.5)
    );
    // Groups: the rule, the members, what the group sets.
    let html = s.get("/groups", &cookies, "fr").text().unwrap();
    let rugby = &html[html.find("id=\"group-rugby\"").unwrap()..];
    let rugby = &rugby[..rugby.find("</section>").unwrap()];
    assert!(rugby.contains("<code>sport=rugby</code>"), "{rugby}");
    for m in ["la-roche-rugby", "massy-rugby", "vannes-rugby"] {
        assert!(
            rugby.contains(&format!("<a href=\"/sites/{m}\">{m}</a>")),
            "{m}"
        );
    }
    let en = s
        .get("/sites/massy-rugby?range=7d", &both, "fr")
        .text()
        .unwrap();
    assert!(en.contains("55.5 °C</title>") && en.contains("class=\"current\">7d</a>"));
}

/// The `data-site` ids of a sites page, in order.
fn row_ids(html: &str) -> Vec<String> {
    html.split("data-site=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_owned())
        .collect()
}

#[test]
fn the_sites_table_pages_450_sites_200_at_a_time_keeping_sort_and_filters() {
    let s = common::server::start_synthetic(450);
    let (cookies, _) = s.login(VIEWER);
    let page = |q: &str| {
        let r = s.get(&format!("/sites?{q}"), &cookies, "en");
        assert_eq!(r.status(), StatusCode::OK, "{q}");
        r.text().unwrap()
    };
    // Sorted by name, 200 a page, three pages that together hold every
    // site once, in order.
    let first = page("");
    assert!(first.contains("450 sites"), "{first}");
    assert!(first.contains(">1 / 3</a>"), "{first}");
    assert!(
        first.contains("href=\"/sites?sort=name&#38;page=2\">›</a>"),
        "{first}"
    );
    let mut all = Vec::new();
    for p in 1..=3 {
        let ids = row_ids(&page(&format!("sort=name&page={p}")));
        assert_eq!(ids.len(), if p < 3 { 200 } else { 50 }, "page {p}");
        all.extend(ids);
    }
    let mut want: Vec<(String, String)> = (0..450)
        .map(|i| (format!("Site {i}"), format!("site-{i:05}")))
        .collect();
    want.sort();
    assert_eq!(
        all,
        want.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
        "every site once, in name order"
    );
    // Past the end: the last page.
    assert_eq!(row_ids(&page("page=99")), row_ids(&page("page=3")));
    // A filter narrows the count and the pages; the pager keeps it.
    let rugby = page("sport=rugby");
    let n = rugby
        .split("id=\"site-count\">")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse::<usize>()
        .unwrap();
    assert!((100..=130).contains(&n), "{n}");
    let ids = row_ids(&rugby);
    assert_eq!(ids.len(), n.min(200));
    if n <= 200 {
        assert!(!rugby.contains("id=\"pager\""), "one page: no pager");
    }
    let api = s
        .http
        .get(format!("{}/api/sites", s.url))
        .bearer_auth(VIEWER)
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    let rugby_ids: std::collections::BTreeSet<String> = api["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["labels"]["sport"] == "rugby")
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        rugby_ids,
        "the filtered page holds exactly the rugby sites"
    );
}

/// The site page's "enroll a box" button: admins only, with the CSRF
/// token; the code is shown once, never cached, and it enrolls.
#[test]
fn an_admin_mints_an_enrollment_code_from_the_site_page() {
    let s = common::server::start();
    let admin = s.files.local_admin_token();
    let (op, ocsrf) = s.login(OPERATOR);
    let page = s.get("/sites/angers-football", &op, "en").text().unwrap();
    assert!(!page.contains("id=\"enroll\""), "no button for an operator");
    let post = |cookies: &str, csrf: &str| {
        s.http
            .post(format!("{}/sites/angers-football/enroll", s.url))
            .header("cookie", cookies)
            .form(&[("csrf", csrf)])
            .send()
            .unwrap()
    };
    assert_eq!(post(&op, &ocsrf).status(), StatusCode::FORBIDDEN);
    let (ad, acsrf) = s.login(&admin);
    let page = s.get("/sites/angers-football", &ad, "en").text().unwrap();
    assert!(page.contains("id=\"enroll\""), "{page}");
    assert_eq!(post(&ad, "wrong").status(), StatusCode::FORBIDDEN);
    let r = post(&ad, &acsrf);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().unwrap();
    let code = html
        .split("<code id=\"code\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_owned();
    let parsed = touchline_schemas::enroll::EnrollCode::parse(&code).unwrap();
    assert!(
        html.contains(&format!("/install.sh | sudo sh -s -- {code}")),
        "{html}"
    );
    // The code it shows is live: the controller answers its lookup id.
    let redeem = || {
        s.http
            .post(format!("{}/v1/enroll", s.url))
            .header("content-type", "application/json")
            .body(json!({"lookup": parsed.lookup()}).to_string())
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(redeem(), StatusCode::OK);
    assert_eq!(redeem(), StatusCode::GONE, "once");
}

/// Remote actions from the pages: an operator requests one on a site and on
/// the checked rows of the sites table (CSRF-checked); a viewer has no form
/// and is refused; the audit page and its CSV show who did what from where.
#[test]
fn an_operator_requests_remote_actions_from_the_pages_and_the_audit_page_shows_them() {
    let s = common::server::start();
    let (viewer, vcsrf) = s.login(VIEWER);
    let page = s
        .get("/sites/angers-football", &viewer, "en")
        .text()
        .unwrap();
    assert!(page.contains("Remote actions") && !page.contains("id=\"action-form\""));
    let post = |path: &str, cookies: &str, form: &[(&str, &str)]| {
        s.http
            .post(format!("{}{path}", s.url))
            .header("cookie", cookies)
            .form(form)
            .send()
            .unwrap()
    };
    let r = post(
        "/sites/angers-football/actions",
        &viewer,
        &[("csrf", &vcsrf), ("action", "system-info")],
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let (op, csrf) = s.login(OPERATOR);
    let page = s.get("/sites/angers-football", &op, "fr").text().unwrap();
    assert!(page.contains("id=\"action-form\"") && page.contains("Actions à distance"));
    assert!(
        page.contains("<option value=\"restart-service\">"),
        "{page}"
    );
    let r = post(
        "/sites/angers-football/actions",
        &op,
        &[("csrf", "wrong"), ("action", "system-info")],
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post(
        "/sites/angers-football/actions",
        &op,
        &[
            ("csrf", &csrf),
            ("action", "logs"),
            ("service", "neopro-app"),
            ("lines", "50"),
        ],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/sites/angers-football#actions");
    let page = s.get("/sites/angers-football", &op, "en").text().unwrap();
    assert!(
        page.contains("<code>logs neopro-app --lines 50</code>") && page.contains(">queued<"),
        "{page}"
    );
    // A bad service name never reaches a box.
    let r = post(
        "/sites/angers-football/actions",
        &op,
        &[
            ("csrf", &csrf),
            ("action", "restart-service"),
            ("service", "a b"),
        ],
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().unwrap().contains("is not a unit name"));

    // The sites table: a checkbox per row, one action for the checked ones.
    let table = s.get("/sites", &op, "en").text().unwrap();
    assert!(table.contains("form=\"bulk-action\""), "{table}");
    let r = post(
        "/sites/actions",
        &op,
        &[
            ("csrf", &csrf),
            ("action", "restart-service"),
            ("service", "neopro-app"),
            ("site", "angers-football"),
            ("site", "brest-basket"),
            ("site", "no-such-site"),
        ],
    );
    assert_eq!(r.status(), StatusCode::OK);
    let done = r.text().unwrap();
    assert!(
        done.contains("angers-football (") && done.contains("brest-basket ("),
        "{done}"
    );
    assert!(
        done.contains("no site `no-such-site` in the manifests"),
        "{done}"
    );
    let brest: serde_json::Value = s
        .http
        .get(format!("{}/api/sites/brest-basket/actions", s.url))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(brest["actions"][0]["command"], "restart-service neopro-app");
    assert_eq!(brest["actions"][0]["state"], "queued");
    assert_eq!(brest["actions"][0]["requested_by"], "ops");

    // The audit page: every request, filtered by who and what.
    let audit = s.get("/audit?action=remote", &viewer, "en").text().unwrap();
    assert_eq!(audit.matches("<td>ops</td>").count(), 5, "{audit}");
    assert!(
        audit.contains("refused: service `a b` is not a unit name"),
        "{audit}"
    );
    assert!(audit.contains("127.0.0.1"), "the source address: {audit}");
    let audit = s.get("/audit?actor=nobody", &viewer, "en").text().unwrap();
    assert!(!audit.contains("<td>ops</td>"));
    let csv = s
        .get("/audit.csv?target=brest", &viewer, "en")
        .text()
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "at,actor,action,target,source,result");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains(",ops,remote action,brest-basket restart-service neopro-app ("));
    let bad = s
        .get("/audit?since=yesterday", &viewer, "en")
        .text()
        .unwrap();
    assert!(bad.contains("is not an RFC 3339 time"), "{bad}");
}
