//! A fake box: a root holding `agent.toml`, `state/`, `videos/` and
//! `app/configuration.json`, run through the real `touchline-agent`; and
//! signed bundle directories (a USB stick) to feed a box without a
//! controller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use touchline_schemas::bundle::{AgentSettings, BUNDLE_FORMAT, BundleFile};
use touchline_schemas::{Bundle, Sha256, SigningKey, SiteId, TargetPath};

use crate::process::{bin, stderr};

/// A box under `root`.
#[derive(Debug, Clone)]
pub struct AgentBox {
    /// The box's root.
    pub root: PathBuf,
    /// Its `agent.toml`.
    pub config: PathBuf,
}

impl AgentBox {
    /// A box for `site` trusting the keys in `trusted_keys`, fed by
    /// `controller` (`(url, token)`) when given, with `extra` lines of
    /// config (which may open tables: they come last).
    pub fn new(
        root: &Path,
        site: &str,
        trusted_keys: &Path,
        controller: Option<(&str, &str)>,
        extra: &str,
    ) -> Self {
        std::fs::create_dir_all(root).unwrap();
        let mut cfg = format!(
            "site_id = \"{site}\"\ntrusted_keys = \"{}\"\nstate_dir = \"{}\"\nvideos_dir = \"{}\"\nconfig_path = \"{}\"\n",
            trusted_keys.display(),
            root.join("state").display(),
            root.join("videos").display(),
            root.join("app/configuration.json").display(),
        );
        if let Some((url, token)) = controller {
            cfg.push_str(&format!(
                "controller_url = \"{url}\"\ntoken = \"{token}\"\n"
            ));
        }
        cfg.push_str(extra);
        cfg.push('\n');
        let config = root.join("agent.toml");
        std::fs::write(&config, cfg).unwrap();
        Self {
            root: root.to_path_buf(),
            config,
        }
    }

    /// A box for `cesson-handball` with no controller and no space reserve,
    /// trusting a fresh key (`root/trusted`), and the [`Signer`] of that key.
    pub fn offline(root: &Path, extra: &str) -> (Self, Signer) {
        let key = SigningKey::generate();
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(root.join("trusted"), key.public_key_openssh()).unwrap();
        let b = Self::new(
            root,
            "cesson-handball",
            &root.join("trusted"),
            None,
            &format!("space_reserve_bytes = 0\n{extra}"),
        );
        (b, Signer { key })
    }

    /// `touchline-agent <args> --config agent.toml` (logs at `warn`).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The same command, not started (to add to its environment).
    pub fn command(&self, args: &[&str]) -> Command {
        command(args, &self.config)
    }

    /// `touchline-agent once`.
    pub fn once(&self) -> Output {
        self.run(&["once"])
    }

    /// `touchline-agent status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A path under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The files the app reads and the accepted bundle, hashed: to prove
    /// that a refusal changed nothing.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.root)
    }
}

/// `touchline-agent <args> --config <config>` (logs at `warn`).
pub fn agent(args: &[&str], config: &Path) -> Output {
    command(args, config).output().unwrap()
}

/// `touchline-agent <args> --config <config>`, not started.
pub fn command(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(bin("touchline-agent"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("TOUCHLINE_LOG", "warn");
    cmd
}

/// The box's videos, `app/configuration.json` and `state/accepted.json`
/// under `root`, hashed.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut t = crate::tree(&root.join("videos"));
    for f in ["app/configuration.json", "state/accepted.json"] {
        if let Ok(b) = std::fs::read(root.join(f)) {
            t.insert(f.to_owned(), Sha256::digest(&b).to_hex());
        }
    }
    t
}

/// Signs bundles into directories, as a USB stick would carry them.
#[derive(Debug)]
pub struct Signer {
    /// The key.
    pub key: SigningKey,
}

impl Signer {
    /// Writes `dir/bundle.json` and its signature.
    pub fn write(&self, dir: &Path, b: &Bundle) {
        self.write_raw(dir, &b.to_canonical_json());
    }

    /// Writes `body` as `dir/bundle.json` and signs it as it is.
    pub fn write_raw(&self, dir: &Path, body: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("bundle.json"), body).unwrap();
        std::fs::write(dir.join("bundle.json.sig"), self.key.sign(body).unwrap()).unwrap();
    }
}

/// A bundle for `site` at `serial` placing `files` (path, bytes), each
/// fetched from `<url>/<sha256>` for every url; valid for a week from now.
pub fn sample_bundle(site: &str, serial: u64, files: &[(&str, &[u8])], urls: &[String]) -> Bundle {
    let now = jiff::Timestamp::now();
    Bundle {
        agent_release: None,
        agent: AgentSettings::default(),
        commit: None,
        config: serde_json::json!({"volume": serial, "club": {"name": "Test"}})
            .as_object()
            .unwrap()
            .clone(),
        expires_at: now + jiff::SignedDuration::from_hours(24 * 7),
        files: files
            .iter()
            .map(|(p, bytes)| BundleFile {
                path: TargetPath::new(p).unwrap(),
                sha256: Sha256::digest(bytes),
                size: bytes.len() as u64,
                urls: urls
                    .iter()
                    .map(|u| format!("{u}/{}", Sha256::digest(bytes).to_hex()))
                    .collect(),
            })
            .collect(),
        format: BUNDLE_FORMAT,
        step: 0,
        issued_at: now,
        serial,
        site: SiteId::new(site).unwrap(),
        software: None,
    }
}

/// Writes each of `files`' bytes as `dir/content/<sha256>`.
pub fn with_content(dir: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir.join("content")).unwrap();
    for (_, bytes) in files {
        std::fs::write(
            dir.join("content").join(Sha256::digest(bytes).to_hex()),
            bytes,
        )
        .unwrap();
    }
}
