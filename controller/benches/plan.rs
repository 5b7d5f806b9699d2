//! `touchline plan` between two commits of a synthetic fleet with a change
//! to every site: `cargo bench -p touchline-controller --bench plan`
//! (`-- --sites N --runs R`). The goal is under 2 s for 10,000 sites. Next
//! to it, in the same run: `touchline validate` of one revision (the
//! parse-and-check floor each side of a plan pays) and `git diff --stat`
//! of the same two commits (the text diff a reviewer gets today).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use touchline_testkit::{Repo, bin};

fn arg(name: &str, default: usize) -> usize {
    touchline_testkit::bench_arg(name, default as u64) as usize
}

fn median(cmd: &mut dyn FnMut() -> Command, runs: usize, ok_codes: &[i32]) -> f64 {
    let mut t = Vec::new();
    for _ in 0..runs {
        let mut c = cmd();
        c.stdout(Stdio::null());
        let t0 = Instant::now();
        let st = c.status().unwrap();
        t.push(t0.elapsed().as_secs_f64());
        assert!(ok_codes.contains(&st.code().unwrap_or(-1)), "{c:?}: {st}");
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let size = touchline_testkit::synthetic::Size {
        sites: arg("--sites", 10_000),
        groups: arg("--groups", 60),
        videos: arg("--videos", 500),
    };
    let runs = arg("--runs", 5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    touchline_testkit::synthetic::generate(&dir, &size);
    let repo = Repo::init(&dir);
    repo.commit("base");
    // Every site: a configuration leaf changes in the fleet's defaults.
    repo.edit("fleet.yaml", "volume: 80", "volume: 70");
    repo.commit("head");
    // PLAN_BENCH_KEEP=<dir>: also leave a copy of the repository there.
    if let Some(keep) = std::env::var_os("PLAN_BENCH_KEEP") {
        let st = Command::new("cp")
            .arg("-r")
            .arg(&dir)
            .arg(&keep)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let t = bin("touchline");
    let plan = |format: &'static str| {
        let t = t.clone();
        let dir = dir.clone();
        move || {
            let mut c = Command::new(&t);
            c.arg("plan")
                .arg(&dir)
                .args(["--base", "HEAD~1", "--head", "HEAD", "--format", format]);
            c
        }
    };
    // One checked run: every site is in the plan.
    let out = plan("json")().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["totals"]["sites_affected"], size.sites,
        "every site changes"
    );
    let json = median(&mut plan("json"), runs, &[1]);
    let md = median(&mut plan("markdown"), runs, &[1]);
    let validate = median(
        &mut || {
            let mut c = Command::new(&t);
            c.arg("validate").arg(&dir);
            c
        },
        runs,
        &[0],
    );
    let diff = median(
        &mut || {
            let mut c = Command::new("git");
            c.current_dir(Path::new(&dir))
                .args(["diff", "--stat", "HEAD~1", "HEAD"]);
            c
        },
        runs,
        &[0],
    );
    println!(
        "plan of {} sites, a change to every site (median of {runs}): --format json {json:.2} s, --format markdown {md:.2} s (goal < 2 s)",
        size.sites
    );
    println!(
        "  same run: touchline validate of one revision {validate:.2} s; git diff --stat of the two commits {diff:.3} s"
    );
}
