//! The agent's pass in process, through a fake host: the commands it runs
//! (reload) and the free space it sees come from the test, so a failing
//! reload and a full disk are checked without touching the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use touchline_agent::agent::{Agent, Origin, Outcome};
use touchline_agent::clock::SystemClock;
use touchline_agent::config::Config;
use touchline_testkit::agent_box::{AgentBox, sample_bundle, with_content};
use touchline_testkit::fake_host::FakeHost;

fn open(b: &AgentBox, host: &Arc<FakeHost>) -> Agent {
    let cfg = Config::load(&b.config).unwrap();
    Agent::open_on(cfg, Box::new(SystemClock::from_env()), host.clone()).unwrap()
}

fn condition(agent: &Agent, item: &str) -> Option<String> {
    agent
        .state
        .conditions
        .iter()
        .find(|c| c.item == item)
        .map(|c| c.message.clone())
}

#[tokio::test]
async fn a_failing_reload_command_is_a_warning_and_the_files_stay_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, signer) = AgentBox::offline(
        tmp.path(),
        "reload_command = [\"/usr/local/bin/neopro-reload\", \"--soft\"]",
    );
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"sponsor reel")];
    let usb = tmp.path().join("usb");
    signer.write(&usb, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&usb, files);
    let host = Arc::new(FakeHost::default());
    host.answer(
        false,
        "app not running\n`/usr/local/bin/neopro-reload --soft` exited with exit status: 3",
    );
    let mut agent = open(&b, &host);
    let outcome = agent.pass(&Origin::Dir(usb.clone())).await;
    assert!(matches!(outcome, Outcome::Converged), "{outcome:?}");
    assert_eq!(
        host.ran(),
        vec![vec![
            "/usr/local/bin/neopro-reload".to_owned(),
            "--soft".into()
        ]]
    );
    assert_eq!(
        condition(&agent, "reload").as_deref(),
        Some(
            "reload_command failed: app not running\n`/usr/local/bin/neopro-reload --soft` exited with exit status: 3"
        )
    );
    assert_eq!(
        std::fs::read(tmp.path().join("videos/Sponsors/a.mp4")).unwrap(),
        b"sponsor reel"
    );
    // Nothing changed since: no reload, and the old warning stays until
    // the next reload says otherwise.
    let outcome = agent.pass(&Origin::Dir(usb)).await;
    assert!(matches!(outcome, Outcome::Converged), "{outcome:?}");
    assert_eq!(host.ran().len(), 1, "an unchanged bundle does not reload");
}

#[tokio::test]
async fn a_disk_the_host_says_is_full_blocks_the_download_with_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, signer) = AgentBox::offline(tmp.path(), "");
    let video = vec![7u8; 4096];
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", &video)];
    let usb = tmp.path().join("usb");
    signer.write(&usb, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&usb, files);
    let host = Arc::new(FakeHost::default());
    host.set_free(Some(1000));
    let mut agent = open(&b, &host);
    let outcome = agent.pass(&Origin::Dir(usb.clone())).await;
    let Outcome::NotConverged(e) = outcome else {
        panic!("{outcome:?}")
    };
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "not enough space: need 4.1 KB, have 1.0 KB (downloads, on the filesystem of "
        ),
        "{msg}"
    );
    assert_eq!(condition(&agent, "disk").as_deref(), Some(msg.as_str()));
    assert!(!tmp.path().join("videos/Sponsors/a.mp4").exists());
    // Space freed: the same pass converges and clears the condition.
    host.set_free(None);
    let outcome = agent.pass(&Origin::Dir(usb)).await;
    assert!(matches!(outcome, Outcome::Converged), "{outcome:?}");
    assert_eq!(condition(&agent, "disk"), None);
}

/// A category directory swapped for a symlink after the pass looked and
/// before it writes (the host's seam between plan and execute): the write
/// is refused by the kernel, the pass fails naming the path, and nothing
/// reaches the link's target.
#[tokio::test]
async fn a_symlink_swapped_in_between_plan_and_execute_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, signer) = AgentBox::offline(tmp.path(), "");
    let canary = touchline_testkit::club::Canary::new(&tmp.path().join("canary"));
    let first: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"aaaa")];
    let usb = tmp.path().join("usb1");
    signer.write(&usb, &sample_bundle("cesson-handball", 1, first, &[]));
    with_content(&usb, first);
    let host = Arc::new(FakeHost::default());
    let mut agent = open(&b, &host);
    assert!(matches!(
        agent.pass(&Origin::Dir(usb)).await,
        Outcome::Converged
    ));

    let videos = tmp.path().join("videos");
    let target = canary.dir.clone();
    let swap = videos.clone();
    host.before_apply(move || {
        if !swap.join("Moved").exists() {
            std::fs::rename(swap.join("Sponsors"), swap.join("Moved")).unwrap();
            std::os::unix::fs::symlink(&target, swap.join("Sponsors")).unwrap();
        }
    });
    let second: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"aaaa"), ("Sponsors/c.mp4", b"cccc")];
    let usb = tmp.path().join("usb2");
    signer.write(&usb, &sample_bundle("cesson-handball", 2, second, &[]));
    with_content(&usb, second);
    let outcome = agent.pass(&Origin::Dir(usb.clone())).await;
    let Outcome::NotConverged(e) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        e.to_string(),
        format!(
            "`{}` is a symlink: not followed, left alone",
            videos.join("Sponsors").display()
        )
    );
    canary.assert_unchanged("a symlink swapped in before execute");
    // The next pass sees the link and reports the conflict.
    let outcome = agent.pass(&Origin::Dir(usb)).await;
    assert!(matches!(outcome, Outcome::NotConverged(_)), "{outcome:?}");
    assert!(
        condition(&agent, "file:Sponsors/c.mp4")
            .is_some_and(|m| m.contains("is a symlink, not a directory: not followed")),
        "{:?}",
        agent.state.conditions
    );
    canary.assert_unchanged("the pass after");
}
