//! Enrollment benchmark: `cargo bench -p touchline-agent --bench enroll`
//! (`-- --boxes N`, default 150: NEOPRO's fleet).
//!
//! The example fleet plus N sites in a git repository, its content in the
//! store, a real `touchline serve` on loopback. For each box, as an
//! operator migrating the fleet would: `touchline site enroll` (through
//! the running controller), `touchline-agent enroll --from-neopro` with the
//! box's site.conf, then the first `touchline-agent once`, on a box whose
//! videos are already there (the library is adopted by hash, not
//! downloaded). Prints the total and each step's median and 95th
//! percentile, and the bytes the controller served as content.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use touchline_testkit::{ControllerFiles, bin, run};

fn site_yaml(id: &str, i: usize) -> String {
    format!(
        "id: {id}\nname: Club {i}\nclub: Club {i}\nlocation:\n  city: Rennes\n  region: Bretagne\n  latitude: 48.11\n  longitude: -1.68\nlabels:\n  sport: football\n  region: bretagne\n"
    )
}

fn copy_tree(from: &Path, to: &Path) {
    touchline_testkit::copy_tree(from, to);
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Content requests the controller answered (`/metrics`).
fn content_requests(url: &str) -> u64 {
    let text = touchline_testkit::http()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| {
            l.contains("http_requests") && l.contains("/v1/content/") && !l.starts_with('#')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One box: mint, enroll, first pass; the three durations.
fn one_box(
    files: &ControllerFiles,
    url: &str,
    site: &str,
    root: &Path,
    library: &Path,
) -> [Duration; 3] {
    if library.exists() {
        copy_tree(library, &root.join("videos"));
    }
    std::fs::create_dir_all(root).unwrap();
    let conf = root.join("site.conf");
    std::fs::write(
        &conf,
        format!(
            "SITE_ID={site}\nSITE_API_KEY=old-secret\nVIDEOS_PATH={}\nCONFIG_PATH={}\nMAX_DOWNLOAD_SIZE=1073741824\n",
            root.join("videos").display(),
            root.join("app/configuration.json").display()
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let minted = run(Command::new(bin("touchline"))
        .args(["site", "enroll", "--data"])
        .arg(files.data())
        .arg(site));
    let code = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    let t1 = Instant::now();
    let cfg = root.join("etc/agent.toml");
    run(Command::new(bin("touchline-agent"))
        .args(["enroll", "--controller", url, &code, "--config"])
        .arg(&cfg)
        .arg("--from-neopro")
        .arg(&conf)
        .arg("--set")
        .arg(format!("state_dir=\"{}\"", root.join("state").display()))
        // The app's services are not on this machine.
        .args(["--set", "services=[]"]));
    let t2 = Instant::now();
    run(Command::new(bin("touchline-agent"))
        .args(["once", "--config"])
        .arg(&cfg));
    let t3 = Instant::now();
    [t1 - t0, t2 - t1, t3 - t2]
}

fn main() {
    let boxes = usize::try_from(touchline_testkit::bench_arg("--boxes", 150)).unwrap();
    let ids: Vec<String> = (0..boxes).map(|i| format!("neopro-{i:03}")).collect();
    let files = ControllerFiles::with_repo(|repo| {
        touchline_testkit::example_fleet(repo);
        for (i, id) in ids.iter().enumerate() {
            std::fs::write(repo.join(format!("sites/{id}.yaml")), site_yaml(id, i)).unwrap();
        }
        // The reference box: the same groups, so the same library.
        std::fs::write(
            repo.join("sites/neopro-ref.yaml"),
            site_yaml("neopro-ref", 999),
        )
        .unwrap();
    });
    files.add_example_content();
    let c = files.start();
    let tmp = tempfile::tempdir().unwrap();

    // The library a box already holds: what a reference box downloaded.
    let reference = tmp.path().join("reference");
    let _ = one_box(
        &files,
        &c.url,
        "neopro-ref",
        &reference,
        &tmp.path().join("empty"),
    );
    let library = reference.join("videos");
    let lib_bytes: u64 = touchline_testkit::tree(&library)
        .keys()
        .map(|k| std::fs::metadata(library.join(k)).unwrap().len())
        .sum();
    let served_before = content_requests(&c.url);
    let reference_requests = served_before;

    let mut steps: [Vec<Duration>; 3] = Default::default();
    let start = Instant::now();
    for id in &ids {
        let root: PathBuf = tmp.path().join(id);
        let d = one_box(&files, &c.url, id, &root, &library);
        for (s, v) in steps.iter_mut().zip(d) {
            s.push(v);
        }
    }
    // The library copies (before each box's clock starts) are not counted.
    let total: Duration = steps.iter().flatten().sum();
    let wall = start.elapsed();
    let served = content_requests(&c.url) - served_before;
    println!(
        "enrolled {boxes} boxes in {:.1} s ({:.0} ms a box): mint + enroll + first once, library of {} files ({:.1} MB) already on each box",
        total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / boxes as f64,
        touchline_testkit::tree(&library).len(),
        lib_bytes as f64 / 1e6
    );
    for (name, v) in [
        "site enroll (CLI through the controller)",
        "agent enroll (exchange, write, diagnose)",
        "first once (adopt, converge, report)",
    ]
    .iter()
    .zip(steps.iter_mut())
    {
        println!(
            "  {name:45} p50 {:>6.0} ms  p95 {:>6.0} ms",
            pct(v, 0.5).as_secs_f64() * 1000.0,
            pct(v, 0.95).as_secs_f64() * 1000.0
        );
    }
    println!(
        "content requests to the controller during the {boxes} first passes: {served} (the reference box made {reference_requests}); wall time with the library copies {:.1} s",
        wall.as_secs_f64()
    );
}
