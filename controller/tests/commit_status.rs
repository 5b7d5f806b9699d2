//! One status per commit on the git host: a real `touchline serve`
//! configured with `[commit_status]` for GitHub, Gitea and GitLab, posting
//! to `support/status_recorder.py` (Python's `http.server`, standing in for
//! the hosts, which cannot run here): each request's method, path, auth
//! header and body are asserted. A real `touchline-agent` reports, and the
//! aggregated status follows; a refused commit is reported with its first
//! diagnostic while the commit before it keeps its progress; a commit
//! replaced before it was final gets a final status that says so; a host
//! answering 500 gets the status again from the outbox.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::recorder::Recorder;
use touchline_testkit::ControllerFiles;
use touchline_testkit::agent_box::AgentBox;

fn fleet_yaml(volume: u32) -> String {
    format!(
        "name: Statuses\ntimezone: Europe/Paris\ndefaults:\n  config:\n    version: \"1.0\"\n    volume: {volume}\n"
    )
}

fn site_yaml(s: &str) -> String {
    format!(
        "id: {s}\nname: Site {s}\nclub: Club\nlocation:\n  city: Rennes\n  region: Bretagne\n  latitude: 48.1\n  longitude: -1.6\n"
    )
}

fn fleet(dir: &Path) {
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    std::fs::write(dir.join("fleet.yaml"), fleet_yaml(10)).unwrap();
    for s in ["one", "two"] {
        std::fs::write(dir.join(format!("sites/{s}.yaml")), site_yaml(s)).unwrap();
    }
}

#[test]
fn each_git_host_gets_one_aggregated_status_per_commit() {
    for (kind, prefix, fail_first) in [
        ("github", "", 1),
        ("gitea", "/api/v1", 0),
        ("gitlab", "/api/v4", 0),
    ] {
        let files = ControllerFiles::with_repo(fleet);
        let Some(rec) = Recorder::start(files.dir(), fail_first) else {
            return;
        };
        let token_file = files.path("status.token");
        std::fs::write(&token_file, format!("tok-{kind}\n")).unwrap();
        files.config(&format!(
            "offline_after = \"1h\"\n\n[commit_status]\nkind = \"{kind}\"\napi_url = \"{}{prefix}\"\nrepository = \"neopro/fleet\"\ntoken_file = \"{}\"\ntarget_url = \"https://tl.example.org/\"\n",
            rec.url,
            token_file.display()
        ));
        let c = files.start();
        let admin = files.local_admin_token();
        c.sync(&admin);
        let first = files.repo().head();
        let r = rec.wait_for("0/2 applied");
        assert_eq!(r["method"], "POST");
        let (path, auth, pending) = match kind {
            "github" => (
                format!("/repos/neopro/fleet/statuses/{first}"),
                ("authorization", "Bearer tok-github".to_owned()),
                "pending",
            ),
            "gitea" => (
                format!("/api/v1/repos/neopro/fleet/statuses/{first}"),
                ("authorization", "token tok-gitea".to_owned()),
                "pending",
            ),
            _ => (
                format!("/api/v4/projects/neopro%2Ffleet/statuses/{first}"),
                ("private-token", "tok-gitlab".to_owned()),
                "running",
            ),
        };
        assert_eq!(r["path"], path, "{kind}");
        assert_eq!(r["headers"][auth.0], auth.1, "{kind}");
        assert_eq!(r["body"]["state"], pending, "{kind}");
        assert_eq!(r["body"]["target_url"], "https://tl.example.org/");
        let name = if kind == "gitlab" { "name" } else { "context" };
        assert_eq!(r["body"][name], "touchline", "{kind}");
        assert_eq!(
            r["body"]["description"], "0/2 applied · 2 offline",
            "boxes never heard from are offline: {kind}"
        );
        if fail_first > 0 {
            assert_eq!(
                rec.requests()[0]["answered"],
                500,
                "the first attempt failed and the outbox sent it again"
            );
        }
        // One box reports: the same status moves on.
        let token = files.site_token("one", false);
        let agent = AgentBox::new(
            &files.path("box"),
            "one",
            &files.path("key.pub"),
            Some((&c.url, &token)),
            "space_reserve_bytes = 0\nreload_command = [\"true\"]\n",
        );
        let out = agent.once();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = rec.wait_for("1/2 applied · 1 offline");
        assert_eq!(r["path"], path);
        assert_eq!(
            r["body"]["state"], "success",
            "every reachable box runs it: {kind}"
        );
        // Every status of the commit has one name: one status, updated.
        let names: std::collections::BTreeSet<String> = rec
            .requests()
            .iter()
            .map(|r| r["body"][name].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names.len(), 1);
        // Commits `text` to `path`, syncs; the commit's id.
        let commit = |path: &str, text: &str, message: &str| {
            files.repo().file(path, text).commit(message);
            let id = files.repo().head();
            c.sync(&admin);
            id
        };
        // A second commit: its boxes are on their way.
        let second = commit("fleet.yaml", &fleet_yaml(20), "louder");
        let r = rec.wait_for_commit(&second);
        assert_eq!(r["body"]["state"], pending, "{kind}: {r}");
        let second_said = r["body"]["description"].as_str().unwrap().to_owned();
        assert!(second_said.starts_with("0/2 applied"), "{r}");
        // A refused commit says why.
        let bad = commit("sites/two.yaml", "id: two\nname: [unclosed\n", "break two");
        let r = rec.wait_for("refused: ");
        assert!(r["path"].as_str().unwrap().ends_with(&bad), "{r}");
        let failure = if kind == "gitlab" {
            "failed"
        } else {
            "failure"
        };
        assert_eq!(r["body"]["state"], failure);
        assert!(
            r["body"]["description"]
                .as_str()
                .unwrap()
                .starts_with("refused: sites/two.yaml:"),
            "{r}"
        );
        let sent = rec.requests().len();
        std::thread::sleep(Duration::from_secs(6));
        assert_eq!(
            rec.requests().len(),
            sent,
            "an unchanged status is not sent again (the refusal, nor the second commit's progress)"
        );
        // A third commit takes the second's place before it was final:
        // the second gets a final status that says so.
        let third = commit("sites/two.yaml", &site_yaml("two"), "fix two");
        let r = rec.wait_for("superseded by ");
        assert!(r["path"].as_str().unwrap().ends_with(&second), "{r}");
        let final_state = match kind {
            "github" => "error",
            "gitea" => "warning",
            _ => "canceled",
        };
        assert_eq!(r["body"]["state"], final_state, "{kind}");
        assert_eq!(
            r["body"]["description"],
            format!("superseded by {} · {second_said}", &third[..10]),
            "{kind}"
        );
        let r = rec.wait_for_commit(&third);
        assert_eq!(r["body"]["state"], pending, "{kind}: {r}");
    }
}
