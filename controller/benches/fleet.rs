//! Benchmark: `validate` and render-all + sign-all on a synthetic fleet of
//! 10,000 sites, 60 groups and 500 videos written to disk.
//!
//! Run: `cargo bench -p touchline-controller --bench fleet`
//! (options after `--`: `--sites N --groups N --videos N --runs N`).
//!
//! Each measured phase runs in a child process of this benchmark so that its
//! peak memory (VmHWM) is its own; the real `touchline` binary is timed too,
//! end to end. Figures are printed as a table; the goal is < 1 s for each.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use touchline_controller::render::BundleMeta;
use touchline_controller::{bundles, source, validate};

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child mode: run one phase, print `secs hwm_kib`.
fn phase(which: &str, dir: &Path, out: &Path) {
    let t = Instant::now();
    let set = source::read_dir(dir).unwrap();
    let checked = validate::check(&set);
    assert!(
        !checked.diags.has_errors(),
        "{:?}",
        &checked.diags.0[..3.min(checked.diags.0.len())]
    );
    if which == "render" {
        let key = touchline_schemas::SigningKey::generate();
        let now = jiff::Timestamp::now();
        let meta = BundleMeta {
            serial: 1,
            commit: None,
            issued_at: now,
            expires_at: now
                .saturating_add(jiff::SignedDuration::from_hours(168))
                .unwrap(),
        };
        // In memory: render + sign every site (what the controller does on
        // each commit), then, separately, writing the files (disk-bound).
        let t0 = Instant::now();
        let all = bundles::render_all(&checked, &meta, Some(&key), false).unwrap();
        let render_secs = t0.elapsed().as_secs_f64();
        assert_eq!(all.len(), checked.manifests.sites.len());
        let bytes: usize = all.iter().map(|s| s.body.len()).sum();
        drop(all);
        let t1 = Instant::now();
        std::fs::create_dir_all(out).unwrap();
        let n = bundles::write_all(&checked, &meta, out, Some(&key)).unwrap();
        assert_eq!(n, checked.manifests.sites.len());
        println!(
            "{} {} {} {} {}",
            t.elapsed().as_secs_f64(),
            vm_hwm_kib(),
            render_secs,
            t1.elapsed().as_secs_f64(),
            bytes
        );
        return;
    }
    println!("{} {}", t.elapsed().as_secs_f64(), vm_hwm_kib());
}

fn run_phase(which: &str, dir: &Path, out: &Path) -> Vec<f64> {
    let exe = std::env::current_exe().unwrap();
    let o = Command::new(exe)
        .args(["--phase", which])
        .arg(dir)
        .arg(out)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8(o.stdout).unwrap();
    s.split_whitespace().map(|v| v.parse().unwrap()).collect()
}

fn time_cli(args: &[&str]) -> Duration {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--phase") {
        phase(&args[2], Path::new(&args[3]), Path::new(&args[4]));
        return;
    }
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let size = touchline_testkit::synthetic::Size {
        sites: arg("--sites", 10_000),
        groups: arg("--groups", 60),
        videos: arg("--videos", 500),
    };
    let runs = arg("--runs", 5);
    let tmp = tempfile::tempdir().unwrap();
    // FLEET_BENCH_KEEP=<dir>: also leave a copy of the generated manifests there.
    let dir: PathBuf = tmp.path().join("manifests");
    let t = Instant::now();
    touchline_testkit::synthetic::generate(&dir, &size);
    if let Some(keep) = std::env::var_os("FLEET_BENCH_KEEP") {
        touchline_testkit::synthetic::generate(Path::new(&keep), &size);
    }
    println!(
        "synthetic fleet: {} sites, {} groups, {} videos written in {:.2} s",
        size.sites,
        size.groups,
        size.videos,
        t.elapsed().as_secs_f64()
    );
    let key = tmp.path().join("key");
    Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();

    let mut rows = Vec::new();
    let mut validate = Vec::new();
    let mut render = Vec::new();
    let mut write = Vec::new();
    let mut bytes = 0.0;
    let (mut hwm_v, mut hwm_r) = (0.0f64, 0.0f64);
    for r in 0..runs {
        let out = tmp.path().join(format!("out-{r}"));
        let v = run_phase("validate", &dir, &out);
        validate.push(v[0]);
        hwm_v = hwm_v.max(v[1]);
        let v = run_phase("render", &dir, &out);
        hwm_r = hwm_r.max(v[1]);
        render.push(v[2]);
        write.push(v[3]);
        bytes = v[4];
        let _ = std::fs::remove_dir_all(out);
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    rows.push((
        "read + parse + validate (library)".to_owned(),
        median(validate.clone()),
        min(&validate),
        hwm_v,
    ));
    rows.push((
        "render + sign all sites in memory (library)".to_owned(),
        median(render.clone()),
        min(&render),
        hwm_r,
    ));
    rows.push((
        format!(
            "write {} files, {:.0} MB (disk)",
            2 * size.sites,
            bytes / 1e6
        ),
        median(write.clone()),
        min(&write),
        0.0,
    ));
    let d = dir.to_str().unwrap();
    let mut cli_v = Vec::new();
    let mut cli_r = Vec::new();
    let mut cp = Vec::new();
    for r in 0..runs {
        cli_v.push(time_cli(&["validate", d]).as_secs_f64());
        let out = tmp.path().join(format!("cli-out-{r}"));
        cli_r.push(
            time_cli(&[
                "render",
                d,
                "--all",
                "--out",
                out.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ])
            .as_secs_f64(),
        );
        // Reference for the disk: `cp -r` of the same 20,000 files.
        let copy = tmp.path().join(format!("cli-copy-{r}"));
        let t = Instant::now();
        let st = Command::new("cp")
            .arg("-r")
            .arg(&out)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        cp.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(out);
        let _ = std::fs::remove_dir_all(copy);
    }
    rows.push((
        "reference: `cp -r` of the rendered files (disk)".into(),
        median(cp.clone()),
        min(&cp),
        0.0,
    ));
    rows.push((
        "`touchline validate` (binary, wall)".into(),
        median(cli_v.clone()),
        min(&cli_v),
        0.0,
    ));
    rows.push((
        "`touchline render --all --out --key` (binary, wall)".into(),
        median(cli_r.clone()),
        min(&cli_r),
        0.0,
    ));

    println!(
        "\n{:<52} {:>10} {:>10} {:>12}",
        "phase", "median s", "min s", "peak RSS"
    );
    for (label, med, min, hwm) in rows {
        let rss = if hwm > 0.0 {
            format!("{:.1} MiB", hwm / 1024.0)
        } else {
            "-".into()
        };
        println!("{label:<52} {med:>10.3} {min:>10.3} {rss:>12}");
    }
    println!(
        "\ngoal: validate < 1 s, render-all + sign-all < 1 s ({runs} runs each, 2-core machine)"
    );
}
