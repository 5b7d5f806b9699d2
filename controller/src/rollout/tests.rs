use serde_json::json;
use touchline_schemas::rollout::Share;

use super::*;

fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

fn target(v: &str) -> Target {
    let sw: DesiredRelease = serde_json::from_value(json!({
        "health_check": {"timeout": "30s"},
        "sha256": Sha256::digest(v.as_bytes()).to_hex(),
        "size": 10,
        "version": v,
    }))
    .unwrap();
    Target {
        software: Some(sw),
        agent: None,
        serial: None,
    }
}

fn policy(v: serde_json::Value) -> RolloutPolicy {
    serde_json::from_value(v).unwrap()
}

/// A latest report: running `release`, with `software` extras.
fn state(name: &str, release: Option<&str>, software: serde_json::Value) -> SiteState {
    let report = serde_json::from_value(json!({
        "seq": 1,
        "at": "2026-12-01T10:00:00Z",
        "status": {
            "phase": "converged",
            "release": release,
            "software": software,
            "conditions": [],
        }
    }))
    .unwrap();
    SiteState {
        site: site(name),
        last_seq: 1,
        epoch: None,
        received_at: "2026-12-01T10:00:00Z".parse().unwrap(),
        report,
        metrics: None,
        metrics_at: None,
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn rollout(p: RolloutPolicy, waves: Vec<WaveState>, targets: Vec<Target>) -> Rollout {
    Rollout {
        commit: "c1".into(),
        serial: 3,
        latest_commit: "c1".into(),
        latest_serial: 3,
        started_at: at("2026-12-01T10:00:00Z"),
        policy: p,
        policy_file: "fleet.yaml".into(),
        targets,
        waves,
        halted: None,
        acknowledged: BTreeSet::new(),
        resumes: Vec::new(),
        finished_at: None,
        superseded_by: None,
        content_waves: false,
    }
}

/// `beta` selects the sites named b…, `bretagne` those named z… and b1.
fn selects(w: &Wave, s: &SiteId) -> bool {
    match w.name.as_str() {
        "beta" => s.as_str().starts_with('b'),
        "bretagne" => s.as_str().starts_with('z') || s.as_str() == "b1",
        _ => false,
    }
}

#[test]
fn sites_go_to_the_first_wave_that_selects_them_within_its_limit_and_the_rest_last() {
    let p = policy(json!({"waves": [
        {"name": "beta", "group": "beta"},
        {"name": "bretagne", "match_labels": {"region": "bzh"}, "max": "50%"},
        {"name": "empty", "group": "nobody"},
    ]}));
    let changing: Vec<Changing> = ["b1", "b2", "z1", "z2", "z3", "z4", "o1"]
        .iter()
        .map(|s| Changing {
            site: site(s),
            target: target(if *s == "o1" { "3.0.0" } else { "2.0.0" }),
        })
        .collect();
    let (targets, waves) = assign(&p, &changing, selects);
    assert_eq!(targets.len(), 2, "one entry per distinct target");
    let names: Vec<&str> = waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        ["beta", "bretagne", "rest"],
        "the empty wave is left out"
    );
    assert_eq!(waves[0].sites.len(), 2);
    assert_eq!(
        waves[1].sites.len(),
        2,
        "50% of the four bretagne sites left"
    );
    assert_eq!(waves[2].sites.len(), 3, "the other two and o1");
    assert_eq!(
        targets[waves[2].sites[&site("o1")]].versions().0.unwrap(),
        "3.0.0"
    );
    // The same split from one commit to the next.
    let (_, again) = assign(&p, &changing, selects);
    assert_eq!(again, waves);
}

#[test]
fn what_a_report_says_about_a_target() {
    let t = target("2.0.0");
    assert_eq!(
        outcome(&t, Some(&state("a", Some("2.0.0"), json!(null))), false),
        Outcome::Applied
    );
    assert_eq!(
        outcome(
            &t,
            Some(&state(
                "a",
                Some("1.0.0"),
                json!({"waiting": "maintenance window 02:00-05:00", "installed": []})
            )),
            true
        ),
        Outcome::Waiting("release 2.0.0: maintenance window 02:00-05:00".into()),
        "staged and waiting is not applied"
    );
    assert_eq!(
        outcome(
            &t,
            Some(&state(
                "a",
                Some("1.0.0"),
                json!({"installed": [], "held_back": "2.0.0", "last_rollback": {"from": "2.0.0", "to": "1.0.0", "at": "2026-12-01T09:00:00Z", "output": "GET /health: 500"}})
            )),
            false
        ),
        Outcome::RolledBack("GET /health: 500".into()),
        "a rollback counts even from a box offline since"
    );
    assert_eq!(
        outcome(&t, Some(&state("a", Some("1.0.0"), json!(null))), false),
        Outcome::Unreachable
    );
    assert_eq!(outcome(&t, None, false), Outcome::Unreachable);
    assert_eq!(
        outcome(&t, Some(&state("a", Some("1.0.0"), json!(null))), true),
        Outcome::InProgress("converged".into())
    );
}

/// An agent release is followed as a software release is: applied once
/// the box runs it, waiting with the box's words, rolled back or held
/// back from what the box says, and a failure of the agent's step fails.
#[test]
fn what_a_report_says_about_an_agent_release_target() {
    let t = Target {
        software: None,
        agent: Some(serde_json::from_value(json!({"binaries": {}, "version": "0.2.0"})).unwrap()),
        serial: None,
    };
    let with_agent = |agent: serde_json::Value| {
        let mut s = state("a", None, json!(null));
        s.report.status.agent_release = Some(serde_json::from_value(agent).unwrap());
        s
    };
    assert_eq!(
        outcome(
            &t,
            Some(&with_agent(json!({"running": "0.2.0", "package": "0.1.0"}))),
            true
        ),
        Outcome::Applied
    );
    assert_eq!(
        outcome(
            &t,
            Some(&with_agent(
                json!({"running": "0.1.0", "package": "0.1.0", "waiting": "maintenance window 03:00-05:00"})
            )),
            true
        ),
        Outcome::Waiting("agent 0.2.0: maintenance window 03:00-05:00".into())
    );
    assert_eq!(
        outcome(
            &t,
            Some(&with_agent(json!({"running": "0.1.0", "package": "0.1.0",
                "last_rollback": {"from": "0.2.0", "to": "0.1.0", "at": "2026-12-01T09:00:00Z",
                    "output": "the new agent did not report within 10m"}}))),
            false
        ),
        Outcome::RolledBack("the new agent did not report within 10m".into()),
        "a rollback counts even from a box offline since"
    );
    assert_eq!(
        outcome(
            &t,
            Some(&with_agent(
                json!({"running": "0.1.0", "package": "0.1.0", "held_back": "0.2.0"})
            )),
            true
        ),
        Outcome::RolledBack("agent release 0.2.0 is held back on the box".into())
    );
    let mut failing = with_agent(json!({"running": "0.1.0", "package": "0.1.0"}));
    failing.report.status.conditions = vec![
        serde_json::from_value(json!({"item": "agent", "severity": "error",
            "message": "agent 0.2.0: sha256 mismatch", "since": "2026-12-01T10:00:00Z"}))
        .unwrap(),
    ];
    assert_eq!(
        outcome(&t, Some(&failing), true),
        Outcome::Failed("agent 0.2.0: sha256 mismatch".into())
    );
    // Without an agent release report, the agent's own version counts.
    let mut old = state("a", None, json!(null));
    old.report.status.agent_version = Some("0.2.0".into());
    assert_eq!(outcome(&t, Some(&old), true), Outcome::Applied);
    assert_eq!(t.describe(), "agent 0.2.0");
}

fn two_waves(bake: &str) -> Rollout {
    let p = policy(json!({"waves": [{"name": "beta"}, {"name": "all"}], "bake": bake}));
    let beta: BTreeMap<SiteId, usize> = ["b1", "b2", "b3"].iter().map(|s| (site(s), 0)).collect();
    let all: BTreeMap<SiteId, usize> = ["o1", "o2"].iter().map(|s| (site(s), 0)).collect();
    let mut r = rollout(
        p,
        vec![
            WaveState {
                name: "beta".into(),
                sites: beta,
                opened_at: Some(at("2026-12-01T10:00:00Z")),
                passed_at: None,
            },
            WaveState {
                name: "all".into(),
                sites: all,
                opened_at: None,
                passed_at: None,
            },
        ],
        vec![target("2.0.0")],
    );
    r.policy.success = Some(Share::Percent(90.0));
    r
}

fn outs(r: &Rollout, f: impl Fn(&str) -> Outcome) -> Vec<Vec<(SiteId, Outcome)>> {
    r.waves
        .iter()
        .map(|w| {
            w.sites
                .keys()
                .map(|s| {
                    let o = if w.opened_at.is_none() {
                        Outcome::NotOpened
                    } else {
                        f(s.as_str())
                    };
                    (s.clone(), o)
                })
                .collect()
        })
        .collect()
}

#[test]
fn an_unreachable_box_does_not_block_its_wave_and_the_bake_time_holds_the_next() {
    let mut r = two_waves("2h");
    let o = outs(&r, |s| {
        if s == "b3" {
            Outcome::Unreachable
        } else {
            Outcome::Applied
        }
    });
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T11:00:00Z")),
        [Step::Passed(0)]
    );
    assert_eq!(next_opening(&r), Some(at("2026-12-01T13:00:00Z")));
    assert!(r.holds_back(&site("o1")));
    assert_eq!(
        summary(&r, &o),
        "wave 1/2 beta · 2/5 applied · 2 in waves not opened · 1 unreachable"
    );
    assert!(advance(&mut r, &o, at("2026-12-01T12:59:59Z")).is_empty());
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T13:00:00Z")),
        [Step::Opened(1)]
    );
    assert!(!r.holds_back(&site("o1")));
    let o = outs(&r, |_| Outcome::Applied);
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T14:00:00Z")),
        [Step::Passed(1), Step::Finished]
    );
    assert!(!r.active());
    assert_eq!(summary(&r, &o), "complete · 5/5 applied");
}

#[test]
fn a_wave_of_boxes_none_of_which_is_heard_from_does_not_pass() {
    let mut r = two_waves("0s");
    let o = outs(&r, |_| Outcome::Unreachable);
    assert!(advance(&mut r, &o, at("2026-12-01T11:00:00Z")).is_empty());
    let o = outs(&r, |s| match s {
        "b1" => Outcome::Applied,
        "b2" => Outcome::Waiting("window".into()),
        _ => Outcome::Unreachable,
    });
    assert!(
        advance(&mut r, &o, at("2026-12-01T11:00:00Z")).is_empty(),
        "1 of 2 reachable is under 90%"
    );
}

#[test]
fn rollbacks_halt_the_rollout_and_a_resume_accepts_them() {
    let mut r = two_waves("0s");
    r.policy.halt.rolled_back = Some(Share::Count(2));
    r.policy.success = Some(Share::Percent(60.0));
    let o = outs(&r, |s| match s {
        "b1" => Outcome::RolledBack("health: 500".into()),
        _ => Outcome::Applied,
    });
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T11:00:00Z")),
        [Step::Passed(0), Step::Opened(1)],
        "one rollback is under the limit of 2, and 2 of 3 is over 60%"
    );
    let mut r = two_waves("0s");
    r.policy.halt.rolled_back = Some(Share::Count(2));
    let o = outs(&r, |s| match s {
        "b1" | "b2" => Outcome::RolledBack("health: 500".into()),
        _ => Outcome::Applied,
    });
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T11:00:00Z")),
        [Step::Halted]
    );
    let halt = r.halted.clone().unwrap();
    assert_eq!(
        halt.reason,
        "2 of 3 boxes in opened waves rolled the release back (limit 2)"
    );
    assert_eq!(halt.sites.len(), 2);
    assert_eq!(halt.sites[0].output, "health: 500");
    assert!(
        r.holds_back(&site("o1")),
        "a halted rollout keeps holding back"
    );
    assert!(advance(&mut r, &o, at("2026-12-01T12:00:00Z")).is_empty());
    // Resuming accepts those two: they count neither way, and the wave
    // passes on the box left.
    r.acknowledged
        .extend(halt.sites.iter().map(|t| t.site.clone()));
    r.halted = None;
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T12:00:00Z")),
        [Step::Passed(0), Step::Opened(1)]
    );
    assert!(r.halted.is_none(), "accepted trouble does not halt again");
}

#[test]
fn failures_over_the_default_ten_percent_halt() {
    let mut r = two_waves("0s");
    let o = outs(&r, |s| match s {
        "b2" => Outcome::Failed("no space left".into()),
        _ => Outcome::Applied,
    });
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T11:00:00Z")),
        [Step::Halted]
    );
    assert_eq!(
        r.halted.unwrap().reason,
        "1 of 3 boxes in opened waves failed to apply it (limit 10%)"
    );
}

#[test]
fn with_content_in_waves_a_box_counts_once_the_files_of_its_serial_are_in_place() {
    let t = Target {
        serial: Some(7),
        ..target("2.0.0")
    };
    let mut s = state("b1", Some("2.0.0"), json!({}));
    // Runs the release, its files are those of serial 6.
    s.report.status.applied_serial = Some(6);
    s.report.status.last_error = Some("fetch: connection reset".into());
    assert_eq!(
        outcome(&t, Some(&s), true),
        Outcome::InProgress("fetch: connection reset".into())
    );
    assert_eq!(outcome(&t, Some(&s), false), Outcome::Unreachable);
    s.report.status.applied_serial = Some(7);
    assert_eq!(outcome(&t, Some(&s), true), Outcome::Applied);
    // A release waiting still says why, whatever the files.
    let s = state("b1", Some("1.0.0"), json!({"waiting": "update lock held"}));
    assert_eq!(
        outcome(&t, Some(&s), true),
        Outcome::Waiting("release 2.0.0: update lock held".into())
    );
    assert_eq!(t.describe(), "release 2.0.0 · serial 7");
}

/// A box that has the new serial and cannot write its files, or whose app
/// does not reload them, failed to apply it: that counts towards the halt,
/// as a failed release does. The same error from before it saw the
/// serial, or a download error (the club's line, retried), does not.
#[test]
fn with_content_in_waves_a_box_that_cannot_write_or_reload_the_files_of_its_serial_failed() {
    let t = Target {
        serial: Some(7),
        ..target("2.0.0")
    };
    let failing = |desired: u64, item: &str| {
        let mut s = state("b1", Some("2.0.0"), json!({}));
        s.report.status.applied_serial = Some(6);
        s.report.status.desired_serial = Some(desired);
        s.report.status.conditions = vec![
            serde_json::from_value(json!({
                "item": item,
                "severity": "error",
                "message": "the app's reload command failed: exit 1",
                "since": "2026-12-01T10:00:00Z",
            }))
            .unwrap(),
        ];
        s
    };
    let failed = Outcome::Failed("the app's reload command failed: exit 1".into());
    assert_eq!(outcome(&t, Some(&failing(7, "apply")), true), failed);
    assert_eq!(outcome(&t, Some(&failing(7, "disk")), true), failed);
    assert!(matches!(
        outcome(&t, Some(&failing(6, "apply")), true),
        Outcome::InProgress(_)
    ));
    assert!(matches!(
        outcome(&t, Some(&failing(7, "fetch")), true),
        Outcome::InProgress(_)
    ));
    // Files in place and the app did not reload them: it does not run the
    // change. A release rollout (no serial) leaves that to the health check.
    let mut reloaded = state("b1", Some("2.0.0"), json!({}));
    reloaded.report.status.applied_serial = Some(7);
    reloaded.report.status.conditions = vec![
        serde_json::from_value(json!({
            "item": "reload",
            "severity": "warning",
            "message": "reload_command failed: exit 1",
            "since": "2026-12-01T10:00:00Z",
        }))
        .unwrap(),
    ];
    assert_eq!(
        outcome(&t, Some(&reloaded), true),
        Outcome::Failed("reload_command failed: exit 1".into())
    );
    assert_eq!(
        outcome(&target("2.0.0"), Some(&reloaded), true),
        Outcome::Applied
    );
    // One of the three beta boxes failing is over the default 10 %: the
    // rollout halts and says which box and why.
    let mut r = two_waves("0s");
    r.targets[0].serial = Some(7);
    let o = outs(&r, |name| {
        if name == "b2" {
            outcome(&r.targets[0], Some(&failing(7, "apply")), true)
        } else {
            Outcome::Applied
        }
    });
    assert_eq!(
        advance(&mut r, &o, at("2026-12-01T11:00:00Z")),
        [Step::Halted]
    );
    let halted = r.halted.expect("halted");
    assert_eq!(
        halted.reason,
        "1 of 3 boxes in opened waves failed to apply it (limit 10%)"
    );
    assert_eq!(halted.sites[0].site, site("b2"));
    assert_eq!(
        halted.sites[0].output,
        "the app's reload command failed: exit 1"
    );
}

#[test]
fn retargeting_a_site_leaves_the_others_and_drops_what_no_site_names() {
    let p = policy(json!({"waves": [{"name": "beta"}]}));
    let old = Target {
        serial: Some(3),
        ..target("1.0.0")
    };
    let new = Target {
        serial: Some(4),
        ..target("1.0.0")
    };
    let mut r = rollout(
        p,
        vec![
            WaveState {
                name: "beta".into(),
                sites: [(site("b1"), 0)].into(),
                opened_at: Some(at("2026-12-01T10:00:00Z")),
                passed_at: None,
            },
            WaveState {
                name: "rest".into(),
                sites: [(site("s1"), 0), (site("s2"), 0)].into(),
                opened_at: None,
                passed_at: None,
            },
        ],
        vec![old.clone()],
    );
    r.retarget(&site("s1"), &new);
    r.retarget(&site("s2"), &new);
    r.drop_unused_targets();
    assert_eq!(r.wave_of(&site("b1")).unwrap().1, &old);
    assert_eq!(r.wave_of(&site("s1")).unwrap().1, &new);
    assert_eq!(r.targets.len(), 2);
    r.retarget(&site("b1"), &new);
    r.drop_unused_targets();
    assert_eq!(r.targets, vec![new.clone()]);
    assert!(r.waves.iter().all(|w| w.sites.values().all(|&t| t == 0)));
}
