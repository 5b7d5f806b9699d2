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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use touchline_controller::render::BundleMeta;
use touchline_controller::{bundles, source, validate};

const SPORTS: [&str; 4] = ["football", "rugby", "handball", "basketball"];
const REGIONS: [&str; 12] = [
    "bretagne",
    "pays-de-la-loire",
    "ile-de-france",
    "normandie",
    "occitanie",
    "grand-est",
    "hauts-de-france",
    "nouvelle-aquitaine",
    "auvergne-rhone-alpes",
    "bourgogne-franche-comte",
    "centre-val-de-loire",
    "provence-alpes-cote-d-azur",
];

struct Size {
    sites: usize,
    groups: usize,
    videos: usize,
}

fn generate(dir: &Path, size: &Size) {
    for d in ["sites", "groups", "videos", "releases"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("fleet.yaml"),
        "name: bench\ntimezone: Europe/Paris\ndefaults:\n  software:\n    version: 1.0.0\n  config:\n    version: \"1.0\"\n    display:\n      volume: 80\n      transition: fade\n  agent:\n    maintenance_window: \"03:00-05:00\"\n",
    )
    .unwrap();
    let h = |s: &str| touchline_schemas::Sha256::digest(s.as_bytes()).to_hex();
    for v in ["1.0.0", "1.1.0"] {
        std::fs::write(
            dir.join(format!("releases/{v}.yaml")),
            format!("version: {v}\npackage:\n  sha256: {}\n  size: 1000000\nhealth_check:\n  http: http://127.0.0.1:8080/health\n", h(v)),
        )
        .unwrap();
    }
    let mut cat = String::from("videos:\n");
    for i in 0..size.videos {
        let _ = write!(
            cat,
            "  - id: video-{i:04}\n    title: Vidéo {i}\n    file: video-{i:04}.mp4\n    category: Cat{}\n    subcategory: Sub{}\n    sha256: {}\n    size: {}\n    duration: 30\n",
            i % 8,
            i % 5,
            h(&format!("video-{i}")),
            1_000_000 + i
        );
    }
    std::fs::write(dir.join("videos/catalog.yaml"), cat).unwrap();
    // Groups: all, one per sport, one per region, a beta group, the rest by tier label.
    let video_list = |g: usize, n: usize| {
        (0..n)
            .map(|k| format!("video-{:04}", (g * 7 + k * 13) % size.videos))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut made = 0;
    let mut group = |id: String, prio: i32, selector: String, extra: String| {
        std::fs::write(
            dir.join(format!("groups/{id}.yaml")),
            format!("id: {id}\npriority: {prio}\n{selector}desired:\n  videos: [{}]\n  config:\n    group_{made}: true\n{extra}", video_list(made, 5)),
        )
        .unwrap();
        made += 1;
    };
    group(
        "all".into(),
        0,
        "selector:\n  match_labels: {}\n".into(),
        String::new(),
    );
    for s in SPORTS {
        group(
            s.into(),
            10,
            format!("selector:\n  match_labels:\n    sport: {s}\n"),
            format!("    sport: {s}\n"),
        );
    }
    for r in REGIONS {
        group(
            r.into(),
            20,
            format!("selector:\n  match_labels:\n    region: {r}\n"),
            String::new(),
        );
    }
    group(
        "beta".into(),
        100,
        "selector:\n  match_labels:\n    tier: beta\n".into(),
        "  software:\n    version: 1.1.0\n".into(),
    );
    let fixed = 2 + SPORTS.len() + REGIONS.len();
    let tiers = size.groups.saturating_sub(fixed).max(1);
    for t in 0..tiers {
        group(
            format!("tier-{t}"),
            30,
            format!("selector:\n  match_labels:\n    tier: t{t}\n"),
            String::new(),
        );
    }
    for i in 0..size.sites {
        let tier = if i % 50 == 0 {
            "beta".to_owned()
        } else {
            format!("t{}", i % tiers)
        };
        std::fs::write(
            dir.join(format!("sites/site-{i:05}.yaml")),
            format!(
                "id: site-{i:05}\nname: Site {i}\nclub: Club {i}\nlocation:\n  city: Ville {i}\n  region: {r}\n  latitude: {:.4}\n  longitude: {:.4}\nlabels:\n  sport: {}\n  region: {r}\n  tier: {tier}\noverrides:\n  config:\n    club:\n      name: Club {i}\n  videos: [video-{:04}]\n",
                43.0 + (i % 700) as f64 / 100.0,
                -4.0 + (i % 1100) as f64 / 100.0,
                SPORTS[i % 4],
                i % size.videos,
                r = REGIONS[i % REGIONS.len()],
            ),
        )
        .unwrap();
    }
}

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
        let all = bundles::render_all(&checked, &meta, Some(&key)).unwrap();
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
    let size = Size {
        sites: arg("--sites", 10_000),
        groups: arg("--groups", 60),
        videos: arg("--videos", 500),
    };
    let runs = arg("--runs", 5);
    let tmp = tempfile::tempdir().unwrap();
    // FLEET_BENCH_KEEP=<dir>: also leave a copy of the generated manifests there.
    let dir: PathBuf = tmp.path().join("manifests");
    let t = Instant::now();
    generate(&dir, &size);
    if let Some(keep) = std::env::var_os("FLEET_BENCH_KEEP") {
        generate(Path::new(&keep), &size);
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
