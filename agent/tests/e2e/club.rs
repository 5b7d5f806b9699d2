//! A hostile club member: the agent runs as root (as on a box) while
//! `nobody`, through `setpriv`, plants symlinks, fifos and directories in
//! the trees the club may write (`videos_dir`, the configuration's
//! directory). After each move a canary tree outside the roots is
//! unchanged and the condition names the path.

use super::*;
use touchline_testkit::club::{Canary, Club, SECRET};

/// A box whose `videos/` and `app/` belong to the club, a canary beside
/// it, and the club.
struct Scene {
    tmp: tempfile::TempDir,
    cfg: PathBuf,
    signer: Signer,
    canary: Canary,
    club: Club,
    serial: u64,
}

impl Scene {
    fn new() -> Option<Self> {
        let club = Club::new_or_skip()?;
        let tmp = tempfile::tempdir().unwrap();
        let (b, signer) = AgentBox::offline(&tmp.path().join("box"), "");
        club.owns(&b.path("videos"));
        club.owns(&b.path("app"));
        let canary = Canary::new(&tmp.path().join("canary"));
        Some(Self {
            cfg: b.config,
            tmp,
            signer,
            canary,
            club,
            serial: 0,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join("box").join(rel)
    }

    fn canary(&self, rel: &str) -> String {
        self.canary.dir.join(rel).display().to_string()
    }

    /// `apply-dir` of the next serial placing `files`, ended within 60 s
    /// (a fifo must never block a pass).
    fn apply(&mut self, files: &[(&str, &[u8])]) -> std::process::Output {
        self.serial += 1;
        let dir = self.tmp.path().join(format!("usb-{}", self.serial));
        self.signer.write(
            &dir,
            &sample_bundle("cesson-handball", self.serial, files, &[]),
        );
        with_content(&dir, files);
        let mut child =
            touchline_testkit::agent_box::command(&["apply-dir", dir.to_str().unwrap()], &self.cfg)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("apply-dir hung (a fifo opened for reading?)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    fn conditions(&self) -> String {
        let out = agent(&["status", "--json"], &self.cfg);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["conditions"].to_string()
    }
}

#[test]
fn a_category_directory_made_a_symlink_is_never_written_or_deleted_through() {
    let Some(mut s) = Scene::new() else { return };
    let out = s.apply(&[("Sponsors/a.mp4", b"aaaa"), ("Sponsors/b.mp4", b"bbbb")]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The club moves the category away and puts a link to the canary in
    // its place (the canary holds a `b.mp4` of its own).
    s.club.run(&format!(
        "cd {} && mv Sponsors Moved && ln -s {} Sponsors",
        s.path("videos").display(),
        s.canary.dir.display()
    ));
    // The next commit drops b.mp4 and adds c.mp4.
    let out = s.apply(&[("Sponsors/a.mp4", b"aaaa"), ("Sponsors/c.mp4", b"cccc")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    s.canary.assert_unchanged("a symlinked category");
    let sponsors = s.path("videos/Sponsors").display().to_string();
    let conditions = s.conditions();
    for f in ["a.mp4", "c.mp4"] {
        assert!(
            conditions.contains(&format!(
                "`Sponsors/{f}` not placed: `{sponsors}` is a symlink, not a directory: not followed, left alone"
            )),
            "{conditions}"
        );
    }
    // The club's link and the moved directory are left as they are.
    assert_eq!(
        std::fs::read_link(s.path("videos/Sponsors")).unwrap(),
        s.canary.dir
    );
    assert_eq!(
        std::fs::read(s.path("videos/Moved/b.mp4")).unwrap(),
        b"bbbb"
    );
}

#[test]
fn configuration_json_made_a_symlink_is_not_read_or_written_through() {
    let Some(mut s) = Scene::new() else { return };
    let out = s.apply(&[("Sponsors/a.mp4", b"aaaa")]);
    assert!(out.status.success(), "{}", stderr(&out));
    // (b) the configuration becomes a link to a root-only JSON file;
    // (c) a link waits at the temp name the agent once used.
    s.club.run(&format!(
        "cd {} && rm configuration.json && ln -s {} configuration.json && ln -s {} .configuration.json.touchline-tmp",
        s.path("app").display(),
        s.canary("secret.json"),
        s.canary("sub/keep"),
    ));
    let out = s.apply(&[("Sponsors/a.mp4", b"aaaa")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    s.canary.assert_unchanged("a symlinked configuration.json");
    assert!(
        std::fs::symlink_metadata(s.path("app/configuration.json"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the club's link stays"
    );
    let conditions = s.conditions();
    assert!(
        conditions.contains(&format!(
            "`{}` is a symlink: not read or written through it, left alone",
            s.path("app/configuration.json").display()
        )),
        "{conditions}"
    );
    // The secret reached no file of the box.
    for (rel, _) in tree(&s.path("")) {
        let p = s.path(&rel);
        if std::fs::symlink_metadata(&p).unwrap().is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            assert!(!text.contains(SECRET), "{rel} holds the canary's secret");
        }
    }
}

#[test]
fn fifos_directories_and_links_at_managed_paths_are_conflicts_that_never_block() {
    let Some(mut s) = Scene::new() else { return };
    // The club made the category itself (it uploads there too).
    s.club
        .run(&format!("mkdir {}", s.path("videos/Sponsors").display()));
    let out = s.apply(&[("Sponsors/a.mp4", b"aaaa")]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A fifo where the next video goes, a directory where another goes,
    // a fifo as the configuration, and the agent's own video replaced by
    // a link to the canary.
    s.club.run(&format!(
        "cd {} && mkfifo Sponsors/f.mp4 && mkdir -p Sponsors/d.mp4/x && rm Sponsors/a.mp4 && ln -s {} Sponsors/a.mp4 && cd {} && rm configuration.json && mkfifo configuration.json",
        s.path("videos").display(),
        s.canary("b.mp4"),
        s.path("app").display(),
    ));
    let out = s.apply(&[
        ("Sponsors/a.mp4", b"aaaa"),
        ("Sponsors/f.mp4", b"ffff"),
        ("Sponsors/d.mp4", b"dddd"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    s.canary
        .assert_unchanged("fifos and links at managed paths");
    let conditions = s.conditions();
    for f in ["f.mp4", "d.mp4"] {
        assert!(
            conditions.contains(&format!(
                "`Sponsors/{f}` is not a regular file and was not placed by the agent: left alone"
            )),
            "{conditions}"
        );
    }
    assert!(
        conditions.contains(&format!(
            "`{}` is a fifo, socket or device: not read or written through it",
            s.path("app/configuration.json").display()
        )),
        "{conditions}"
    );
    // Its own file is put back: the link is replaced, never followed.
    let a = s.path("videos/Sponsors/a.mp4");
    assert!(std::fs::symlink_metadata(&a).unwrap().is_file());
    assert_eq!(std::fs::read(&a).unwrap(), b"aaaa");
}

#[test]
fn a_symlinked_videos_dir_itself_stays_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("usb-disk/videos");
    std::fs::create_dir_all(&disk).unwrap();
    let (b, signer) = AgentBox::offline(&tmp.path().join("box"), "");
    std::os::unix::fs::symlink(&disk, b.path("videos")).unwrap();
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"aaaa")];
    let usb = tmp.path().join("usb");
    signer.write(&usb, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&usb, files);
    let out = agent(&["apply-dir", usb.to_str().unwrap()], &b.config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(disk.join("Sponsors/a.mp4")).unwrap(), b"aaaa");
}
