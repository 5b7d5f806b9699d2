//! The HTTP router in process (`router(state).oneshot(request)`), over a
//! fleet that follows the example manifests from a directory: the agents'
//! authentication rules, the bad-report corpus, content `Range` cases and
//! the operators' roles. The binary tests (`serve.rs`) keep the end-to-end
//! claims; these make each rule cheap to check.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use touchline_controller::app::AppState;
use touchline_controller::config::Config;
use touchline_controller::content::ContentStore;
use touchline_controller::fleet::Fleet;
use touchline_controller::follow::DirSource;
use touchline_controller::http::router;
use touchline_controller::redb_store::RedbStore;
use touchline_controller::store::Store;
use touchline_controller::tokens::Token;
use touchline_schemas::{SigningKey, SiteId};
use touchline_testkit::{OPERATOR, VIEWER};
use tower::ServiceExt;

const CESSON: &str = "cesson-token-for-tests-0123456789abcdef0123";
const VANNES: &str = "vannes-token-for-tests-0123456789abcdef0123";
const ADMIN: &str = "admin-token-for-tests-0123456789abcdef0123";

/// The example fleet, synced, with tokens for two sites, an operator, a
/// viewer and an admin; content holds the example fleet's videos.
struct App {
    _tmp: tempfile::TempDir,
    router: Router,
    /// A video Cesson's bundle names and Vannes's does not, and its bytes.
    content: touchline_schemas::Sha256,
    bytes: Vec<u8>,
    /// A video both bundles name.
    shared: touchline_schemas::Sha256,
}

/// The example catalog's videos as (sha256, bytes).
fn example_videos() -> Vec<(touchline_schemas::Sha256, Vec<u8>)> {
    let catalog: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            touchline_testkit::repo_root().join("fleet-manifests/videos/catalog.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    catalog["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mut bytes = Vec::new();
            let sha = touchline_controller::example::write_example(
                v["id"].as_str().unwrap(),
                v["size"].as_u64().unwrap(),
                &mut bytes,
            )
            .unwrap();
            (touchline_schemas::Sha256::from_bytes(sha), bytes)
        })
        .collect()
}

fn named(fleet: &Fleet, site: &str) -> std::collections::BTreeSet<touchline_schemas::Sha256> {
    let p = fleet.bundle(&SiteId::new(site).unwrap()).unwrap();
    touchline_schemas::Bundle::from_slice(&p.body)
        .unwrap()
        .files
        .iter()
        .map(|f| f.sha256)
        .collect()
}

fn app() -> App {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&data).unwrap());
    let content = ContentStore::open(&data).unwrap();
    let videos = example_videos();
    for (_, bytes) in &videos {
        content
            .add_reader(bytes.as_slice(), std::path::Path::new("video.mp4"))
            .unwrap();
    }
    let config = Config::parse(
        &format!(
            "sync_interval = \"1h\"\n[[operators]]\nname = \"ops\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n[[operators]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n[[operators]]\nname = \"boss\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
            Token::new(OPERATOR).hash().to_hex(),
            Token::new(VIEWER).hash().to_hex(),
            Token::new(ADMIN).hash().to_hex(),
        ),
        "test.toml",
    )
    .unwrap();
    let fleet = Fleet::open(
        store,
        content,
        config,
        SigningKey::generate(),
        Box::new(DirSource::new(
            touchline_testkit::repo_root().join("fleet-manifests"),
        )),
    )
    .unwrap();
    fleet.sync(jiff::Timestamp::now()).unwrap();
    for (site, token) in [("cesson-handball", CESSON), ("vannes-rugby", VANNES)] {
        fleet
            .set_token(&SiteId::new(site).unwrap(), Token::new(token).hash())
            .unwrap();
    }
    let (cesson, vannes) = (
        named(&fleet, "cesson-handball"),
        named(&fleet, "vannes-rugby"),
    );
    let only = *cesson.difference(&vannes).next().unwrap();
    let shared = *cesson.intersection(&vannes).next().unwrap();
    let bytes = videos.into_iter().find(|(h, _)| *h == only).unwrap().1;
    let state = AppState {
        fleet: Arc::new(fleet),
        local_admin: None,
        metrics: Arc::default(),
        sessions: Arc::default(),
        logins: Arc::default(),
        files: None,
    };
    App {
        _tmp: tmp,
        router: router(state),
        content: only,
        bytes,
        shared,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

async fn call(
    app: &App,
    method: Method,
    uri: &str,
    token: Option<&str>,
    extra: &[(header::HeaderName, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(k, *v);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &App, uri: &str, token: Option<&str>) -> Answer {
    call(app, Method::GET, uri, token, &[], Vec::new()).await
}

#[tokio::test]
async fn a_bundle_is_served_only_to_its_sites_token() {
    let a = app();
    let uri = "/v1/sites/cesson-handball/bundle";
    let cases = [
        (None, StatusCode::UNAUTHORIZED, "missing bearer token"),
        (
            Some("not-a-token"),
            StatusCode::UNAUTHORIZED,
            "invalid token",
        ),
        (
            Some(VANNES),
            StatusCode::FORBIDDEN,
            "this token belongs to another site",
        ),
        (Some(OPERATOR), StatusCode::UNAUTHORIZED, "invalid token"),
    ];
    for (token, status, error) in cases {
        let r = get(&a, uri, token).await;
        assert_eq!((r.status, r.error().as_str()), (status, error), "{token:?}");
        let challenge = r.headers.get(header::WWW_AUTHENTICATE);
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(challenge.unwrap(), "Bearer");
        } else {
            assert!(challenge.is_none());
        }
    }
    // A known and an unknown site answer the same without a valid token
    // (site ids cannot be enumerated); a valid token is told it is not
    // this site's.
    for token in [None, Some("not-a-token"), Some(OPERATOR)] {
        let known = get(&a, uri, token).await;
        let unknown = get(&a, "/v1/sites/no-such-site/bundle", token).await;
        assert_eq!(
            (known.status, known.error()),
            (unknown.status, unknown.error()),
            "{token:?}"
        );
    }
    let r = get(&a, "/v1/sites/no-such-site/bundle", Some(CESSON)).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (StatusCode::FORBIDDEN, "this token belongs to another site")
    );
    let r = get(&a, "/v1/sites/NOT..VALID/bundle", Some(CESSON)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let ok = get(&a, uri, Some(CESSON)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["site"], "cesson-handball");
    let etag = ok.headers[header::ETAG].to_str().unwrap().to_owned();
    let again = call(
        &a,
        Method::GET,
        uri,
        Some(CESSON),
        &[(header::IF_NONE_MATCH, etag.as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let sig = get(&a, "/v1/sites/cesson-handball/bundle.sig", Some(CESSON)).await;
    assert_eq!(sig.headers[header::ETAG].to_str().unwrap(), etag);
    assert!(String::from_utf8_lossy(&sig.body).starts_with("-----BEGIN SSH SIGNATURE-----"));
    let r = get(
        &a,
        "/v1/sites/cesson-handball/bundle?wait=301",
        Some(CESSON),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn reports_are_authenticated_before_their_body_is_read() {
    let a = app();
    // A body that is not even JSON: the token decides first.
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(VANNES), StatusCode::FORBIDDEN),
    ] {
        let r = call(
            &a,
            Method::POST,
            "/v1/sites/cesson-handball/reports",
            token,
            &[(header::CONTENT_TYPE, "application/json")],
            b"this is not json".to_vec(),
        )
        .await;
        assert_eq!(r.status, status);
    }
}

#[tokio::test]
async fn every_bad_report_in_the_corpus_is_refused_with_its_reason() {
    let a = app();
    let site = "cesson-handball";
    let mut failures = Vec::new();
    for case in touchline_testkit::corpus::bad_reports(site) {
        let r = call(
            &a,
            Method::POST,
            "/v1/sites/cesson-handball/reports",
            Some(CESSON),
            &[(header::CONTENT_TYPE, "application/json")],
            case.body.clone(),
        )
        .await;
        failures.extend(case.mismatch(r.status.as_u16(), &r.json()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn content_is_served_by_hash_with_ranges() {
    let a = app();
    let uri = format!("/v1/content/{}", a.content.to_hex());
    let ranged = |range: &'static str| {
        let uri = uri.clone();
        let a = &a;
        async move {
            call(
                a,
                Method::GET,
                &uri,
                Some(CESSON),
                &[(header::RANGE, range)],
                Vec::new(),
            )
            .await
        }
    };
    let whole = get(&a, &uri, Some(CESSON)).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body == a.bytes, "the whole file");
    let size = a.bytes.len();
    let part = ranged("bytes=2-5").await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, a.bytes[2..6]);
    assert_eq!(
        part.headers[header::CONTENT_RANGE],
        format!("bytes 2-5/{size}").as_str()
    );
    let tail = ranged("bytes=-3").await;
    assert_eq!(tail.body, a.bytes[size - 3..]);
    let past = call(
        &a,
        Method::GET,
        &uri,
        Some(CESSON),
        &[(header::RANGE, format!("bytes={size}-").as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers[header::CONTENT_RANGE],
        format!("bytes */{size}").as_str()
    );
    assert_eq!(get(&a, &uri, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&a, &uri, Some(OPERATOR)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let bad = get(&a, "/v1/content/..%2F..%2Fetc%2Fpasswd", Some(CESSON)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_sites_token_reads_only_what_its_bundles_name() {
    let a = app();
    let uri = |h: touchline_schemas::Sha256| format!("/v1/content/{}", h.to_hex());
    // Vannes's bundle does not name Cesson's video: answered as missing,
    // the same as a hash nobody holds, so a token cannot probe the store.
    let other = get(&a, &uri(a.content), Some(VANNES)).await;
    let nobody = get(&a, &format!("/v1/content/{}", "0".repeat(64)), Some(VANNES)).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.error(),
        format!(
            "no content {} for site `vannes-rugby`: neither its current nor its previous bundle names it (poll the bundle again)",
            a.content.to_hex()
        )
    );
    assert_eq!(
        nobody.error().replace(&"0".repeat(64), "X"),
        other.error().replace(&a.content.to_hex(), "X")
    );
    // A video both name: both read it.
    for token in [CESSON, VANNES] {
        assert_eq!(
            get(&a, &uri(a.shared), Some(token)).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn operator_roles_gate_the_operators_api() {
    let a = app();
    for token in [VIEWER, OPERATOR, ADMIN] {
        let r = get(&a, "/api/sites", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{token}");
        assert_eq!(r.json()["sites"].as_array().map(Vec::len), Some(12));
    }
    let r = get(&a, "/api/sites", None).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (StatusCode::UNAUTHORIZED, "missing bearer token")
    );
    let r = get(&a, "/api/sites", Some(CESSON)).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid token")
    );
    // Sync: operators, not viewers.
    let sync = |t| call(&a, Method::POST, "/api/sync", Some(t), &[], Vec::new());
    let r = sync(VIEWER).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            StatusCode::FORBIDDEN,
            "operator `watcher` has role viewer; this needs operator"
        )
    );
    let r = sync(OPERATOR).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["result"], "unchanged");
    // Tokens: admins only.
    let mint = |t| {
        call(
            &a,
            Method::POST,
            "/api/sites/ivry-handball/token",
            Some(t),
            &[],
            Vec::new(),
        )
    };
    assert_eq!(mint(OPERATOR).await.status, StatusCode::FORBIDDEN);
    let r = mint(ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&a, "/v1/sites/ivry-handball/bundle", Some(&token))
            .await
            .status,
        StatusCode::OK,
        "the minted token works at once"
    );
    assert_eq!(mint(ADMIN).await.status, StatusCode::CONFLICT);
    let r = get(&a, "/api/commits", Some(VIEWER)).await;
    assert_eq!(r.json()["commits"][0]["state"], "accepted");
    assert_eq!(
        r.json()["commits"][0]["summary"],
        json!(format!(
            "the manifests in {}",
            touchline_testkit::repo_root()
                .join("fleet-manifests")
                .display()
        ))
    );
}

/// One box with impossible metrics and 400 KB texts: the
/// values are dropped and the text cut at ingestion, field by field, said
/// in the answer, and `/api/sites` stays small for everyone.
#[tokio::test]
async fn impossible_values_and_huge_text_never_reach_the_pages() {
    let a = app();
    let huge = "x".repeat(400_000);
    let batch = json!({"format": 1, "site": "cesson-handball", "reports": [{
        "seq": 1, "at": jiff::Timestamp::now().to_string(),
        "status": {"phase": "degraded", "last_error": huge,
            "conditions": [{"item": "fetch", "severity": "error", "message": huge,
                "since": jiff::Timestamp::now().to_string()}]},
        "metrics": {"temperature_c": 1e308, "disk_used_bytes": 18_000_000_000_000_000_000u64,
            "disk_total_bytes": 32_000_000_000u64, "cpu_percent": 12.0}
    }]});
    let r = call(
        &a,
        Method::POST,
        "/v1/sites/cesson-handball/reports",
        Some(CESSON),
        &[(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&batch).unwrap(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let answer = r.json();
    assert_eq!(answer["accepted"], 1);
    let fields: Vec<&str> = answer["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "status.conditions[0].message",
            "status.last_error",
            "metrics.temperature_c",
            "metrics.disk_used_bytes"
        ]
    );
    let sites = get(&a, "/api/sites", Some(OPERATOR)).await;
    assert_eq!(sites.status, StatusCode::OK);
    assert!(sites.body.len() < 100_000, "{} bytes", sites.body.len());
    let site = get(&a, "/api/sites/cesson-handball", Some(OPERATOR)).await;
    let text = String::from_utf8_lossy(&site.body);
    assert!(site.body.len() < 100_000, "{} bytes", site.body.len());
    assert!(
        !text.contains("1e308") && !text.contains("18000000000000000000"),
        "{text}"
    );
}
