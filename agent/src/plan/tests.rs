//! The plan's branches, in memory: one test per case the end-to-end tests
//! prove with real processes (club files, drift, hard-link edits, removal,
//! space, adoption, the release window, lock, hold-back, first install…).

use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use touchline_schemas::bundle::{
    AgentSettings, BUNDLE_FORMAT, BundleFile, BundleHealthCheck, DesiredRelease,
};
use touchline_schemas::manifest::{MaintenanceWindow, PackageFormat};
use touchline_schemas::{Bundle, HumanDuration, ReleaseVersion, Sha256, SiteId, TargetPath};

use super::*;
use crate::release::{ReleaseName, Rollback};

fn name(s: &str) -> ReleaseName {
    ReleaseName::new(s).unwrap()
}
use crate::state::State;

const NOW: &str = "2026-12-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn sha(n: u8) -> Sha256 {
    Sha256::digest(&[n])
}

fn path(p: &str) -> TargetPath {
    TargetPath::new(p).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A bundle placing `files` (path, content id, size) with `config`.
fn bundle(files: &[(&str, u8, u64)], config: Value) -> Bundle {
    Bundle {
        agent_release: None,
        agent: AgentSettings::default(),
        commit: None,
        config: obj(config),
        expires_at: now() + jiff::SignedDuration::from_hours(24),
        files: files
            .iter()
            .map(|(p, n, size)| BundleFile {
                path: path(p),
                sha256: sha(*n),
                size: *size,
                urls: vec![format!("https://mirror.example/{n}")],
            })
            .collect(),
        format: BUNDLE_FORMAT,
        step: 0,
        issued_at: now(),
        serial: 7,
        site: SiteId::new("cesson-handball").unwrap(),
        software: None,
    }
}

fn desired(b: &Bundle) -> Desired<'_> {
    Desired {
        bundle: b,
        max_download_bytes: 1_000_000,
        space_reserve_bytes: 100,
    }
}

fn free(available: u64) -> Free {
    Free {
        probe: PathBuf::from("/var/lib/touchline"),
        available,
    }
}

/// A box that holds nothing, with plenty of space.
fn empty_box() -> Observed {
    Observed {
        targets: BTreeMap::new(),
        config: ConfigFile::Missing,
        blobs: BTreeMap::new(),
        downloads: free(u64::MAX),
        copies: None,
        releases: None,
    }
}

/// A box where `b` is applied: every file ours, in the store, the
/// configuration written.
fn applied(b: &Bundle) -> (Observed, State) {
    let mut o = empty_box();
    let mut s = State::default();
    for f in &b.files {
        o.targets.insert(f.path.clone(), Found::File(f.sha256));
        o.blobs.insert(f.sha256, Stored::Complete);
        s.placed.insert(f.path.clone(), f.sha256);
    }
    o.config = ConfigFile::Object(b.config.clone());
    s.managed_config = b.config.clone();
    (o, s)
}

fn action(p: &PassPlan, at: &str) -> FileAction {
    p.files
        .iter()
        .find(|f| f.path == path(at))
        .map(|f| f.action)
        .unwrap()
}

fn fetched(p: &PassPlan) -> Vec<Sha256> {
    p.fetch.iter().map(|f| f.sha256).collect()
}

// ---- files -------------------------------------------------------------

#[test]
fn a_new_box_places_and_fetches_every_file_and_writes_the_configuration() {
    let b = bundle(
        &[("A/a.mp4", 1, 10), ("B/b.mp4", 2, 20)],
        json!({"volume": 3}),
    );
    let p = plan(&desired(&b), &empty_box(), &State::default(), now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Place(PlaceReason::Missing)
    );
    assert_eq!(fetched(&p), vec![sha(1), sha(2)]);
    assert_eq!(p.fetch[0].urls, vec!["https://mirror.example/1"]);
    assert_eq!(p.config.write, Some(obj(json!({"volume": 3}))));
    assert!(p.blocked.is_none());
    assert!(!p.writes_nothing());
}

#[test]
fn an_applied_bundle_plans_nothing() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({"volume": 3}));
    let (o, s) = applied(&b);
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Leave(LeaveReason::UpToDate)
    );
    assert!(p.fetch.is_empty());
    assert!(p.remove.is_empty());
    assert!(p.config.write.is_none());
    assert!(p.writes_nothing());
}

#[test]
fn a_club_file_with_other_content_at_a_bundle_path_is_a_conflict_left_alone() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let mut o = empty_box();
    o.targets.insert(path("A/a.mp4"), Found::File(sha(9)));
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Leave(LeaveReason::ClubFile)
    );
    assert_eq!(p.conflicts().collect::<Vec<_>>(), vec![&path("A/a.mp4")]);
    assert!(
        p.fetch.is_empty(),
        "nothing to fetch for a path we leave alone"
    );
}

#[test]
fn a_club_directory_at_a_bundle_path_is_a_conflict() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let mut o = empty_box();
    o.targets.insert(path("A/a.mp4"), Found::NotAFile);
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Leave(LeaveReason::ClubNotAFile)
    );
    assert_eq!(p.conflicts().count(), 1);
}

#[test]
fn a_club_file_with_the_right_content_is_adopted_not_fetched() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let mut o = empty_box();
    o.targets.insert(path("A/a.mp4"), Found::File(sha(1)));
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(action(&p, "A/a.mp4"), FileAction::Adopt);
    assert_eq!(p.adopt().count(), 1);
    assert!(p.fetch.is_empty());
    assert!(!p.writes_nothing(), "adopting records the file as ours");
}

#[test]
fn our_file_changed_on_the_box_is_put_back_from_the_store() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let (mut o, s) = applied(&b);
    o.targets.insert(path("A/a.mp4"), Found::File(sha(8)));
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Place(PlaceReason::Changed)
    );
    assert!(p.fetch.is_empty(), "the store still has it");
}

#[test]
fn our_file_deleted_on_the_box_is_put_back() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let (mut o, s) = applied(&b);
    o.targets.insert(path("A/a.mp4"), Found::Missing);
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Place(PlaceReason::Missing)
    );
}

#[test]
fn our_file_replaced_by_a_directory_is_placed_again() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let (mut o, s) = applied(&b);
    o.targets.insert(path("A/a.mp4"), Found::NotAFile);
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Place(PlaceReason::NotAFile)
    );
}

#[test]
fn a_new_commit_changing_a_video_places_the_new_content_and_fetches_it() {
    let old = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let (o, s) = applied(&old);
    let new = bundle(&[("A/a.mp4", 2, 12)], json!({}));
    let p = plan(&desired(&new), &o, &s, now());
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Place(PlaceReason::Changed)
    );
    assert_eq!(fetched(&p), vec![sha(2)]);
}

#[test]
fn a_hard_linked_video_edited_in_place_is_evicted_from_the_store_and_fetched_again() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let (mut o, s) = applied(&b);
    // Editing the hard link changed both the placed file and the store's copy.
    o.targets.insert(path("A/a.mp4"), Found::File(sha(5)));
    o.blobs.insert(sha(1), Stored::Corrupt);
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(p.evict, vec![sha(1)]);
    assert_eq!(
        action(&p, "A/a.mp4"),
        FileAction::Place(PlaceReason::Changed)
    );
    assert_eq!(fetched(&p), vec![sha(1)]);
}

#[test]
fn files_dropped_by_the_bundle_are_removed_and_the_clubs_are_not() {
    let old = bundle(&[("A/a.mp4", 1, 10), ("A/b.mp4", 2, 10)], json!({}));
    let (o, s) = applied(&old);
    let new = bundle(&[("A/a.mp4", 1, 10)], json!({}));
    let p = plan(&desired(&new), &o, &s, now());
    assert_eq!(p.remove, vec![path("A/b.mp4")]);
    assert!(p.fetch.is_empty());
}

#[test]
fn the_same_content_at_two_paths_is_fetched_once() {
    let b = bundle(&[("A/a.mp4", 1, 10), ("B/a.mp4", 1, 10)], json!({}));
    let p = plan(&desired(&b), &empty_box(), &State::default(), now());
    assert_eq!(p.place().count(), 2);
    assert_eq!(fetched(&p), vec![sha(1)]);
}

// ---- space and size ----------------------------------------------------

#[test]
fn downloads_that_do_not_fit_with_the_reserve_block_the_pass() {
    let b = bundle(&[("A/a.mp4", 1, 500), ("A/b.mp4", 2, 500)], json!({}));
    let mut o = empty_box();
    o.downloads = free(1000);
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(
        p.blocked,
        Some(Blocked::NoSpace {
            need: 1100,
            have: 1000,
            what: "downloads",
            probe: PathBuf::from("/var/lib/touchline"),
        })
    );
}

#[test]
fn downloads_that_fit_with_the_reserve_do_not_block() {
    let b = bundle(&[("A/a.mp4", 1, 500), ("A/b.mp4", 2, 400)], json!({}));
    let mut o = empty_box();
    o.downloads = free(1000);
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(p.blocked, None);
}

#[test]
fn a_resumable_partial_download_needs_only_the_rest() {
    let b = bundle(&[("A/a.mp4", 1, 1000)], json!({}));
    let mut o = empty_box();
    o.downloads = free(500);
    o.blobs.insert(sha(1), Stored::Missing { partial: 600 });
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(p.blocked, None, "400 left + 100 reserve fit in 500");
    o.blobs.insert(sha(1), Stored::Missing { partial: 599 });
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert!(matches!(
        p.blocked,
        Some(Blocked::NoSpace { need: 501, .. })
    ));
}

#[test]
fn copies_count_on_the_videos_filesystem_when_it_is_another_one() {
    let b = bundle(&[("A/a.mp4", 1, 500)], json!({}));
    let mut o = empty_box();
    o.blobs.insert(sha(1), Stored::Complete);
    o.copies = Some(Free {
        probe: PathBuf::from("/srv/videos"),
        available: 550,
    });
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(
        p.blocked,
        Some(Blocked::NoSpace {
            need: 600,
            have: 550,
            what: "copies into the videos directory",
            probe: PathBuf::from("/srv/videos"),
        })
    );
    // Same filesystem: hard links take no space.
    o.copies = None;
    assert_eq!(
        plan(&desired(&b), &o, &State::default(), now()).blocked,
        None
    );
}

#[test]
fn a_full_disk_does_not_block_a_pass_that_downloads_nothing() {
    let b = bundle(&[("A/a.mp4", 1, 10)], json!({"volume": 4}));
    let (mut o, s) = applied(&b);
    o.downloads = free(0);
    o.config = ConfigFile::Object(obj(json!({"volume": 1})));
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(p.blocked, None);
    assert!(p.config.write.is_some());
}

#[test]
fn adopting_a_file_needs_no_space() {
    let b = bundle(&[("A/a.mp4", 1, 10_000)], json!({}));
    let mut o = empty_box();
    o.downloads = free(0);
    o.targets.insert(path("A/a.mp4"), Found::File(sha(1)));
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(p.blocked, None);
    assert_eq!(p.adopt().count(), 1);
}

#[test]
fn a_file_over_max_download_bytes_is_refused_after_the_space_check() {
    let b = bundle(&[("A/a.mp4", 1, 2_000_000)], json!({}));
    let p = plan(&desired(&b), &empty_box(), &State::default(), now());
    assert_eq!(
        p.blocked,
        Some(Blocked::TooLarge {
            sha256: sha(1),
            size: 2_000_000,
            max: 1_000_000
        })
    );
    let mut o = empty_box();
    o.downloads = free(10);
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert!(matches!(p.blocked, Some(Blocked::NoSpace { .. })));
}

// ---- configuration.json ------------------------------------------------

#[test]
fn the_clubs_own_keys_are_kept_and_the_bundles_keys_win() {
    let b = bundle(&[], json!({"volume": 3, "club": {"name": "Cesson"}}));
    let mut o = empty_box();
    o.config = ConfigFile::Object(obj(json!({"volume": 9, "wifi": "club-guest"})));
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(
        p.config.write,
        Some(obj(
            json!({"volume": 3, "club": {"name": "Cesson"}, "wifi": "club-guest"})
        ))
    );
    assert!(p.config.drift.is_empty(), "never managed: not drift");
    assert_eq!(p.config.managed, b.config);
}

#[test]
fn a_managed_key_changed_on_the_box_is_drift_and_restored() {
    let b = bundle(&[], json!({"volume": 3}));
    let (mut o, s) = applied(&b);
    o.config = ConfigFile::Object(obj(json!({"volume": 10})));
    let p = plan(&desired(&b), &o, &s, now());
    assert_eq!(p.config.drift, vec!["volume"]);
    assert_eq!(p.config.write, Some(obj(json!({"volume": 3}))));
}

#[test]
fn a_key_the_bundle_no_longer_sets_is_removed() {
    let old = bundle(&[], json!({"volume": 3, "ticker": "Allez"}));
    let (o, s) = applied(&old);
    let new = bundle(&[], json!({"volume": 3}));
    let p = plan(&desired(&new), &o, &s, now());
    assert_eq!(p.config.write, Some(obj(json!({"volume": 3}))));
    assert!(p.config.drift.is_empty());
}

#[test]
fn an_unreadable_configuration_is_rewritten() {
    let b = bundle(&[], json!({"volume": 3}));
    let mut o = empty_box();
    o.config = ConfigFile::Unreadable;
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(p.config.write, Some(obj(json!({"volume": 3}))));
}

// ---- releases ----------------------------------------------------------

fn release(v: &str) -> DesiredRelease {
    DesiredRelease {
        format: PackageFormat::default(),
        health_check: BundleHealthCheck {
            command: None,
            http: Some("http://127.0.0.1:8080/health".into()),
            timeout: HumanDuration::from_secs(30),
        },
        sha256: sha(200),
        size: 5000,
        urgent: false,
        urls: Vec::new(),
        version: ReleaseVersion::new(v).unwrap(),
    }
}

/// A bundle pinning release `v`, with a night window in Paris.
fn with_release(v: &str) -> Bundle {
    let mut b = bundle(&[], json!({}));
    b.software = Some(release(v));
    b.agent.maintenance_window = MaintenanceWindow::parse("02:00-05:00").unwrap();
    b.agent.timezone = "Europe/Paris".into();
    b
}

/// A box running `current`, lock free, release `staged` or not.
fn releases(current: Option<&str>, staged: bool) -> Observed {
    let mut o = empty_box();
    o.releases = Some(ReleasesSeen {
        current: current.map(name),
        current_exists: current.is_some(),
        staged,
        package_stored: false,
        state: ReleaseState::default(),
        lock: Lock::Free,
        lock_since: None,
        package_space: free(u64::MAX),
    });
    o
}

fn seen(o: &mut Observed) -> &mut ReleasesSeen {
    o.releases.as_mut().unwrap()
}

fn step(p: &PassPlan) -> ReleaseStep {
    match &p.release {
        ReleaseAction::Managed { step, .. } => step.clone(),
        other => panic!("not managed: {other:?}"),
    }
}

/// 03:00 in Paris (inside the window) and 12:00 UTC (outside).
fn night() -> Timestamp {
    "2026-12-01T02:00:00Z".parse().unwrap()
}

#[test]
fn a_bundle_without_a_release_plans_no_release_step() {
    let b = bundle(&[], json!({}));
    let p = plan(
        &desired(&b),
        &releases(Some("1.0.0"), false),
        &State::default(),
        now(),
    );
    assert_eq!(p.release, ReleaseAction::None);
}

#[test]
fn a_release_on_a_box_without_software_root_is_unmanaged() {
    let b = with_release("2.0.0");
    let p = plan(&desired(&b), &empty_box(), &State::default(), now());
    assert_eq!(
        p.release,
        ReleaseAction::Unmanaged(ReleaseVersion::new("2.0.0").unwrap())
    );
}

#[test]
fn the_running_release_is_up_to_date_and_its_health_check_recorded_once() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("2.0.0"), true);
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(step(&p), ReleaseStep::UpToDate);
    assert!(matches!(
        p.release,
        ReleaseAction::Managed {
            record_health: true,
            ..
        }
    ));
    seen(&mut o)
        .state
        .health
        .insert(name("2.0.0"), release("2.0.0").health_check);
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert!(matches!(
        p.release,
        ReleaseAction::Managed {
            record_health: false,
            ..
        }
    ));
}

#[test]
fn a_release_rolled_back_for_this_serial_is_held_back_with_the_reason() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), true);
    seen(&mut o).state.blocked = Some((name("2.0.0"), 7));
    seen(&mut o).state.last_rollback = Some(Rollback {
        from: name("2.0.0"),
        to: Some(name("1.0.0")),
        serial: Some(7),
        at: now(),
        output: "GET /health: HTTP 500".into(),
    });
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert_eq!(
        step(&p),
        ReleaseStep::HeldBack {
            message: "rolled back from 2.0.0 to 1.0.0: GET /health: HTTP 500; not retried for serial 7 (a new commit, or `touchline-agent retry-release`, tries again)".into()
        }
    );
}

#[test]
fn a_release_held_back_by_hand_says_how_to_retry() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), true);
    seen(&mut o).state.blocked = Some((name("2.0.0"), 7));
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert_eq!(
        step(&p),
        ReleaseStep::HeldBack {
            message: "release 2.0.0 is held back for serial 7 (`touchline-agent retry-release` tries again)".into()
        }
    );
}

#[test]
fn a_new_commit_retries_a_release_held_back_for_an_older_serial() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), true);
    seen(&mut o).state.blocked = Some((name("2.0.0"), 6));
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert_eq!(
        step(&p),
        ReleaseStep::Install {
            stage: Stage::Staged,
            then: Then::Switch {
                first_install: false
            }
        }
    );
}

#[test]
fn a_release_not_staged_is_fetched_or_unpacked_first() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), false);
    let fetch = plan(&desired(&b), &o, &State::default(), night());
    assert!(matches!(
        step(&fetch),
        ReleaseStep::Install {
            stage: Stage::Fetch,
            ..
        }
    ));
    seen(&mut o).package_stored = true;
    let unpack = plan(&desired(&b), &o, &State::default(), night());
    assert!(matches!(
        step(&unpack),
        ReleaseStep::Install {
            stage: Stage::Unpack,
            ..
        }
    ));
}

#[test]
fn a_package_over_max_download_bytes_is_refused() {
    let mut b = with_release("2.0.0");
    if let Some(sw) = b.software.as_mut() {
        sw.size = 2_000_000;
    }
    let p = plan(
        &desired(&b),
        &releases(Some("1.0.0"), false),
        &State::default(),
        night(),
    );
    assert_eq!(
        step(&p),
        ReleaseStep::Refused {
            message:
                "release 2.0.0: the package is 2000000 bytes, over max_download_bytes (1000000)"
                    .into()
        }
    );
}

#[test]
fn a_package_that_does_not_fit_is_refused_with_the_figures() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), false);
    seen(&mut o).package_space = free(4000);
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert_eq!(
        step(&p),
        ReleaseStep::Refused {
            message: format!(
                "not enough space: need {}, have {} (release 2.0.0 package)",
                human_bytes(5100),
                human_bytes(4000)
            )
        }
    );
}

#[test]
fn the_package_fits_only_beside_the_files_downloaded_before_it() {
    let mut b = with_release("2.0.0");
    b.files = bundle(&[("A/a.mp4", 1, 3000)], json!({})).files;
    let mut o = releases(Some("1.0.0"), false);
    seen(&mut o).package_space = free(9000);
    o.downloads = free(9000);
    // 3000 for the video, then 5000 + 100 for the package: fits in 9000.
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert!(matches!(
        step(&p),
        ReleaseStep::Install {
            stage: Stage::Fetch,
            ..
        }
    ));
    seen(&mut o).package_space = free(8000);
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert!(matches!(step(&p), ReleaseStep::Refused { .. }), "{p:?}");
}

#[test]
fn a_staged_release_waits_for_the_maintenance_window() {
    let b = with_release("2.0.0");
    let p = plan(
        &desired(&b),
        &releases(Some("1.0.0"), false),
        &State::default(),
        now(),
    );
    assert_eq!(
        step(&p),
        ReleaseStep::Install {
            stage: Stage::Fetch,
            then: Then::WaitWindow
        },
        "staged any time, switched only in the window"
    );
}

#[test]
fn an_urgent_release_does_not_wait_for_the_window() {
    let mut b = with_release("2.0.0");
    if let Some(sw) = b.software.as_mut() {
        sw.urgent = true;
    }
    let p = plan(
        &desired(&b),
        &releases(Some("1.0.0"), true),
        &State::default(),
        now(),
    );
    assert_eq!(
        step(&p),
        ReleaseStep::Install {
            stage: Stage::Staged,
            then: Then::Switch {
                first_install: false
            }
        }
    );
}

#[test]
fn a_first_install_does_not_wait_for_the_window() {
    let b = with_release("2.0.0");
    let p = plan(
        &desired(&b),
        &releases(None, false),
        &State::default(),
        now(),
    );
    assert_eq!(
        step(&p),
        ReleaseStep::Install {
            stage: Stage::Fetch,
            then: Then::Switch {
                first_install: true
            }
        }
    );
}

#[test]
fn a_plain_current_directory_is_not_a_first_install() {
    let b = with_release("2.0.0");
    let mut o = releases(None, true);
    seen(&mut o).current_exists = true;
    let p = plan(&desired(&b), &o, &State::default(), now());
    assert!(matches!(
        step(&p),
        ReleaseStep::Install {
            then: Then::WaitWindow,
            ..
        }
    ));
}

#[test]
fn the_window_is_in_the_boxs_time_zone() {
    let b = with_release("2.0.0");
    let o = releases(Some("1.0.0"), true);
    // 01:30 UTC is 02:30 in Paris (inside); 04:30 UTC is 05:30 (outside).
    let inside: Timestamp = "2026-12-01T01:30:00Z".parse().unwrap();
    let outside: Timestamp = "2026-12-01T04:30:00Z".parse().unwrap();
    assert!(matches!(
        step(&plan(&desired(&b), &o, &State::default(), inside)),
        ReleaseStep::Install {
            then: Then::Switch { .. },
            ..
        }
    ));
    assert!(matches!(
        step(&plan(&desired(&b), &o, &State::default(), outside)),
        ReleaseStep::Install {
            then: Then::WaitWindow,
            ..
        }
    ));
}

#[test]
fn an_unknown_time_zone_is_an_error_not_a_switch() {
    let mut b = with_release("2.0.0");
    b.agent.timezone = "Mars/Olympus".into();
    let p = plan(
        &desired(&b),
        &releases(Some("1.0.0"), true),
        &State::default(),
        night(),
    );
    assert!(
        matches!(step(&p), ReleaseStep::Install { then: Then::WindowError(ref e), .. } if e.contains("Mars/Olympus")),
        "{p:?}"
    );
}

#[test]
fn a_held_update_lock_waits_and_remembers_since_when() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), true);
    seen(&mut o).lock = Lock::Held;
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert_eq!(
        step(&p),
        ReleaseStep::Install {
            stage: Stage::Staged,
            then: Then::WaitLock { since: night() }
        }
    );
    let earlier: Timestamp = "2026-12-01T01:00:00Z".parse().unwrap();
    seen(&mut o).lock_since = Some(earlier);
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert!(
        matches!(step(&p), ReleaseStep::Install { then: Then::WaitLock { since }, .. } if since == earlier)
    );
}

#[test]
fn an_unreadable_update_lock_is_an_error() {
    let b = with_release("2.0.0");
    let mut o = releases(Some("1.0.0"), true);
    seen(&mut o).lock = Lock::Unreadable {
        path: PathBuf::from("/run/neopro/update.lock"),
        error: "permission denied".into(),
    };
    let p = plan(&desired(&b), &o, &State::default(), night());
    assert!(matches!(
        step(&p),
        ReleaseStep::Install {
            then: Then::LockError { .. },
            ..
        }
    ));
}

#[test]
fn files_and_release_are_planned_together() {
    let mut b = with_release("2.0.0");
    b.files = bundle(&[("A/a.mp4", 1, 10)], json!({})).files;
    let p = plan(
        &desired(&b),
        &releases(Some("2.0.0"), true),
        &State::default(),
        now(),
    );
    assert_eq!(fetched(&p), vec![sha(1)]);
    assert_eq!(step(&p), ReleaseStep::UpToDate);
}

#[test]
fn planning_is_deterministic() {
    let b = bundle(&[("A/a.mp4", 1, 10), ("B/b.mp4", 2, 20)], json!({"v": 1}));
    let mut o = empty_box();
    o.targets.insert(path("B/b.mp4"), Found::File(sha(9)));
    let a = plan(&desired(&b), &o, &State::default(), now());
    let c = plan(&desired(&b), &o, &State::default(), now());
    assert_eq!(a, c);
}
