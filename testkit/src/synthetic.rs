//! A synthetic fleet for benchmarks and load tests: N sites with sport,
//! region and tier labels, groups by sport, region and tier, a beta group
//! pinning another release, and a catalog of M videos.

use std::fmt::Write as _;
use std::path::Path;

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

/// How big a fleet to generate.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Sites.
    pub sites: usize,
    /// Groups (at least 18: all, 4 sports, 12 regions, beta).
    pub groups: usize,
    /// Catalog videos.
    pub videos: usize,
}

impl Size {
    /// The fleet the benchmarks measure: `sites`, 60 groups, 500 videos.
    pub fn bench(sites: usize) -> Self {
        Self {
            sites,
            groups: 60,
            videos: 500,
        }
    }
}

/// Writes the fleet into `dir` (which must not hold one already).
///
/// # Panics
/// On I/O errors: this is a benchmark and test helper.
#[allow(clippy::unwrap_used)]
pub fn generate(dir: &Path, size: &Size) {
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

/// The `count` 5-minute reports of synthetic site `site` from report number
/// `first` on (report `n` is taken at `start + 5 min × n`, sequence `n + 1`):
/// converged, with varying CPU, temperature and disk figures.
///
/// # Panics
/// Never for in-range inputs (a benchmark and test helper).
#[allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::missing_panics_doc
)]
pub fn reports(
    first: u64,
    count: u64,
    start: jiff::Timestamp,
) -> Vec<touchline_schemas::report::Report> {
    use touchline_schemas::report::{Interface, Metrics, Phase, Report, Status};
    (first..first + count)
        .map(|n| Report {
            seq: n + 1,
            at: start + jiff::SignedDuration::from_secs(i64::try_from(n * 300).unwrap_or(0)),
            status: Status {
                agent_release: None,
                phase: Phase::Converged,
                desired_serial: Some(1),
                applied_serial: Some(1),
                release: Some("2.1.3".parse().unwrap()),
                software: None,
                conditions: vec![],
                last_error: None,
                agent_version: Some("0.1.0".into()),
            },
            metrics: Some(Metrics {
                cpu_percent: Some((n % 97) as f64 + 0.5),
                memory_percent: Some(41.2),
                load: Some([0.4, 0.3, 0.2]),
                temperature_c: Some(50.0 + (n % 20) as f64),
                disk_used_bytes: Some(12_000_000_000 + n),
                disk_total_bytes: Some(32_000_000_000),
                uptime_secs: Some(n * 300),
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    rx_bytes: n * 1000,
                    tx_bytes: n * 100,
                }],
                services: [("neopro-app".to_owned(), "active".to_owned())].into(),
                ..Metrics::default()
            }),
        })
        .collect()
}

/// Simulates `days` of a fleet's history ending at `end`: for each day,
/// every site (`site-00000`…) sends its 288 five-minute reports in one
/// batch (from `threads` threads), then the controller's housekeeping runs
/// as of the end of that day ([`touchline_controller::history::housekeeping`]), as the
/// hourly housekeeping of a controller that ran all along would have.
/// Returns the reports ingested.
///
/// # Panics
/// On store errors: this is a benchmark helper.
#[allow(clippy::unwrap_used)]
pub fn simulate_history(
    store: &dyn touchline_controller::store::Store,
    sites: usize,
    days: u64,
    end: jiff::Timestamp,
    retention: jiff::SignedDuration,
    tiers: &[touchline_controller::config::HistoryTier],
    threads: usize,
) -> u64 {
    let per_day = 288u64;
    let start = end - jiff::SignedDuration::from_hours(24 * i64::try_from(days).unwrap_or(0));
    let threads = threads.max(1);
    for day in 0..days {
        std::thread::scope(|scope| {
            for worker in 0..threads {
                scope.spawn(move || {
                    for i in (worker..sites).step_by(threads) {
                        let site = touchline_schemas::SiteId::new(&format!("site-{i:05}")).unwrap();
                        let batch = reports(day * per_day, per_day, start);
                        store.ingest(&site, None, &batch, end).unwrap();
                    }
                });
            }
        });
        let day_end =
            start + jiff::SignedDuration::from_hours(24 * i64::try_from(day + 1).unwrap_or(0));
        touchline_controller::history::housekeeping(store, day_end, retention, tiers).unwrap();
    }
    sites as u64 * days * per_day
}
