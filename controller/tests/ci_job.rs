//! The pull-request job of `docs/ci.md`, its script run for real: a git
//! repository with a base and a head commit, `packaging/ci/plan-job.sh`
//! (what both the GitHub Actions and the GitLab CI job run: `touchline
//! validate`, `touchline plan`, the exit-status gate, then
//! `plan-comment.sh`) posting the Markdown to the stand-in host
//! (`support/status_recorder.py`; GitHub, Gitea and GitLab cannot run
//! here). Asserts method, path, auth header and body for each host, a retry
//! after a 500, a job that stops before posting (bad base revision, invalid
//! head), and the comment script's refusals.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::recorder::Recorder;
use touchline_testkit::bin;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/ci")
        .join(name)
}

/// The host variables of the scripts: the test's and none of the caller's.
fn host_env(cmd: &mut Command, env: &[(&str, &str)]) {
    for v in ["GIT_HOST", "API_URL", "REPOSITORY", "PR_NUMBER", "TOKEN"] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

fn tools_or_skip() -> bool {
    let ok = ["curl", "jq"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "curl and jq are required in CI"
        );
        println!("SKIPPED: curl or jq is not installed");
    }
    ok
}

fn comment(plan: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(script("plan-comment.sh")).arg(plan);
    host_env(&mut cmd, env);
    cmd.output().unwrap()
}

/// The whole job, as the CI runner runs it: in `cwd` (where it writes
/// `plan.md`), with the built `touchline` first on the `PATH`.
fn plan_job(repo: &Path, base: &str, cwd: &Path, env: &[(&str, &str)]) -> Output {
    let bins = bin("touchline").parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg(script("plan-job.sh"))
        .arg(repo.join("fleet"))
        .arg(base)
        .current_dir(cwd)
        .env("PATH", path)
        .env("RUST_LOG", "warn");
    host_env(&mut cmd, env);
    cmd.output().unwrap()
}

#[test]
fn the_pull_request_job_posts_the_plan_to_each_host() {
    if !tools_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let fleet = repo.join("fleet");
    touchline_testkit::copy_tree(&touchline_testkit::data("base"), &fleet);
    let git = touchline_testkit::git::Repo::init(&repo);
    git.commit("base");
    git.edit("fleet/fleet.yaml", "volume: 80", "volume: 60");
    git.commit("quieter");

    for (host, prefix, fail_first) in [
        ("github", "", 1),
        ("gitea", "/api/v1", 0),
        ("gitlab", "/api/v4", 0),
    ] {
        let dir = tmp.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        let Some(rec) = Recorder::start(&dir, fail_first) else {
            return;
        };
        let api = format!("{}{prefix}", rec.url);
        let token = format!("tok-{host}");
        let out = plan_job(
            &repo,
            "HEAD~1",
            &dir,
            &[
                ("GIT_HOST", host),
                ("API_URL", &api),
                ("REPOSITORY", "neopro/fleet"),
                ("PR_NUMBER", "42"),
                ("TOKEN", &token),
            ],
        );
        assert!(
            out.status.success(),
            "{host}: a plan that changes boxes (exit 1) is not a failure of the job: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let markdown = std::fs::read_to_string(dir.join("plan.md")).unwrap();
        assert!(
            markdown.starts_with("**touchline plan** `HEAD~1` → `HEAD`: 2 of 2 sites change"),
            "{markdown}"
        );
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            log.starts_with("0 errors, 0 warnings in ") && log.contains(&markdown),
            "the log holds validate's line and the whole plan: {log}"
        );
        let reqs = rec.requests();
        assert_eq!(reqs.len(), 1 + fail_first as usize, "{host}: {reqs:#?}");
        let r = reqs.last().unwrap();
        let (path, header, value) = match host {
            "github" => (
                "/repos/neopro/fleet/issues/42/comments",
                "authorization",
                "Bearer tok-github",
            ),
            "gitea" => (
                "/api/v1/repos/neopro/fleet/issues/42/comments",
                "authorization",
                "token tok-gitea",
            ),
            _ => (
                "/api/v4/projects/neopro%2Ffleet/merge_requests/42/notes",
                "private-token",
                "tok-gitlab",
            ),
        };
        assert_eq!(r["method"], "POST");
        assert_eq!(r["path"], path, "{host}");
        assert_eq!(r["headers"][header], value, "{host}");
        assert_eq!(r["headers"]["content-type"], "application/json");
        assert_eq!(
            r["body"]["body"],
            markdown.as_str(),
            "{host}: the exact plan"
        );
        if fail_first > 0 {
            assert_eq!(reqs[0]["answered"], 500, "a 500 is retried");
        }
    }

    // Refusals, each with its reason and nothing posted; first the job's,
    // then the comment script's.
    let dir = tmp.path().join("refusals");
    std::fs::create_dir_all(&dir).unwrap();
    let Some(rec) = Recorder::start(&dir, 0) else {
        return;
    };
    let url = rec.url.clone();
    let good = [
        ("GIT_HOST", "github"),
        ("API_URL", url.as_str()),
        ("REPOSITORY", "neopro/fleet"),
        ("PR_NUMBER", "42"),
        ("TOKEN", "t"),
    ];
    // The job stops before posting: a base revision that does not resolve
    // (plan cannot run), then a head whose manifests do not validate.
    let out = plan_job(&repo, "no-such-branch", &dir, &good);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plan-job: touchline plan could not run (exit 2); nothing posted"),
        "{err}"
    );
    std::fs::remove_file(dir.join("plan.md")).unwrap();
    git.edit("fleet/fleet.yaml", "version: 1.0.0", "version: 9.9.9");
    git.commit("a release nobody defined");
    let out = plan_job(&repo, "HEAD~1", &dir, &good);
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "validate's exit status: {log}");
    assert!(
        log.contains("error: release `9.9.9` is not defined"),
        "the diagnostics are in the log: {log}"
    );
    assert!(!dir.join("plan.md").exists(), "no plan was made");
    assert!(rec.requests().is_empty(), "{:#?}", rec.requests());
    let plan = tmp.path().join("github/plan.md");
    for (change, expect) in [
        (("TOKEN", ""), "plan-comment: TOKEN is not set"),
        (
            ("PR_NUMBER", "42; rm -rf /"),
            "plan-comment: PR_NUMBER must be a number",
        ),
        (
            ("GIT_HOST", "bitbucket"),
            "plan-comment: GIT_HOST must be github, gitea or gitlab",
        ),
    ] {
        let env: Vec<(&str, &str)> = good
            .iter()
            .map(|(k, v)| {
                if *k == change.0 {
                    (*k, change.1)
                } else {
                    (*k, *v)
                }
            })
            .collect();
        let out = comment(&plan, &env);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(expect), "{err}");
    }
    let out = comment(&tmp.path().join("missing.md"), &good);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    assert!(rec.requests().is_empty());
    // A host that refuses (no recorder listening any more): exit 2, said.
    drop(rec);
    let out = comment(&plan, &good);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the comment was not posted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
