//! A network partition: the box in its own network namespace, joined to
//! the controller by a veth pair whose link is cut for a stretch and
//! restored. Unlike a stopped controller (`offline.rs`), packets vanish:
//! the long-poll in flight and every connect hang until their timeouts.

use super::*;

/// A network namespace with a veth pair to the host, removed on drop
/// (deleting the namespace destroys the pair).
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A namespace named after this process; `None` with the reason
    /// printed where namespaces cannot be made (not root, no `ip`), a
    /// panic in CI.
    fn new() -> Option<Self> {
        require_tool_at(
            "ip",
            &["/usr/sbin/ip", "/sbin/ip"],
            "apt-get install iproute2",
        )?;
        let id = std::process::id() % 60_000;
        let ns = Self {
            name: format!("tl-part-{id}"),
            host_if: format!("tlh{id}"),
            host_ip: format!("10.213.{}.1", id % 250),
        };
        let box_if = format!("tlb{id}");
        let box_ip = format!("10.213.{}.2/30", id % 250);
        let made = ip(&["netns", "add", &ns.name]).and_then(|()| {
            let exec = |args: &[&str]| {
                let mut a = vec!["netns", "exec", &ns.name, "ip"];
                a.extend_from_slice(args);
                ip(&a)
            };
            ip(&[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &box_if,
            ])?;
            ip(&["link", "set", &box_if, "netns", &ns.name])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &ns.host_if,
            ])?;
            ip(&["link", "set", &ns.host_if, "up"])?;
            exec(&["addr", "add", &box_ip, "dev", &box_if])?;
            exec(&["link", "set", &box_if, "up"])?;
            exec(&["link", "set", "lo", "up"])
        });
        match made {
            Ok(()) => Some(ns),
            Err(e) if touchline_testkit::tools::in_ci() => {
                panic!("the partition test makes a network namespace in CI: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: no network namespace here (needs root and iproute2): {e}");
                let _ = ip(&["netns", "del", &ns.name]);
                None
            }
        }
    }

    /// The link cut (`false`) or restored (`true`), from the host's end.
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }

    /// `touchline-agent args` inside the namespace.
    fn agent(&self, args: &[&str], cfg: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(bin("touchline-agent"))
            .args(args)
            .arg("--config")
            .arg(cfg);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_cut_link_keeps_the_files_and_replays_queued_reports_in_order_once() {
    let Some(ns) = Netns::new() else {
        return;
    };
    let w = World::new();
    let port = touchline_testkit::free_port();
    let c = w.start(&format!("{}:{port}", ns.host_ip));
    let cfg = w.agent_config(
        "box",
        "nantes-handball",
        Some(&c.url),
        "heartbeat_interval = \"1s\"\nmetrics_interval = \"1s\"\npoll_interval = \"5s\"\n\
         connect_timeout = \"2s\"\nread_timeout = \"2s\"",
    );
    let out = ns.agent(&["once"], &cfg).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let videos = w.path("box/videos");
    let before = tree(&videos);
    assert!(!before.is_empty());
    let _daemon = Killed(
        ns.agent(&["run"], &cfg)
            .env("TOUCHLINE_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));

    // The link goes down with a long-poll in flight.
    ns.link(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let queued = loop {
        let st = agent_status(&cfg);
        let q = st["queued_reports"].as_u64().unwrap_or(0);
        // A request on the cut link fails after connect_timeout +
        // read_timeout (4 s): the heartbeats go on and queue.
        if st["offline_since"].is_string() && q >= 4 {
            break q;
        }
        assert!(
            Instant::now() < deadline,
            "the box did not notice the cut link and queue its reports: {st}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(tree(&videos), before, "the box keeps its files");

    // Restored: the queue drains (the hung long-poll times out, the next
    // connect succeeds), in order, nothing twice.
    ns.link(true);
    let restored = Instant::now();
    wait_until_drained(&cfg, Duration::from_secs(40));
    eprintln!(
        "partition: {queued} reports queued, drained {:.1} s after the link came back",
        restored.elapsed().as_secs_f64()
    );
    assert_eq!(tree(&videos), before, "the box still has its files");
    assert_history_in_order(&c, &w.files.local_admin_token(), "nantes-handball", queued);
}
