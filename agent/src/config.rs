//! The agent's configuration: a TOML file (`--config`), every key
//! overridable by an environment variable `TOUCHLINE_<KEY>` (upper case).
//! Unknown keys are refused; an error names the key and where it came from.
//! See `agent/dist/agent.toml` for a commented example.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use touchline_schemas::{HumanDuration, SiteId, TrustedKeys};

/// The kind of a key, to turn an environment variable into a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    List,
}

/// Every key, with its kind (the environment override table).
const KEYS: &[(&str, Kind)] = &[
    ("controller_url", Kind::Str),
    ("site_id", Kind::Str),
    ("token", Kind::Str),
    ("token_file", Kind::Str),
    ("trusted_keys", Kind::Str),
    ("state_dir", Kind::Str),
    ("videos_dir", Kind::Str),
    ("config_path", Kind::Str),
    ("software_root", Kind::Str),
    ("poll_interval", Kind::Str),
    ("heartbeat_interval", Kind::Str),
    ("metrics_interval", Kind::Str),
    ("max_download_bytes", Kind::Int),
    ("max_download_rate", Kind::Int),
    ("min_download_rate", Kind::Int),
    ("download_watchdog", Kind::Str),
    ("space_reserve_bytes", Kind::Int),
    ("reload_command", Kind::List),
    ("services", Kind::List),
    ("report_queue_max", Kind::Int),
    ("connect_timeout", Kind::Str),
    ("read_timeout", Kind::Str),
    ("stop_command", Kind::List),
    ("start_command", Kind::List),
    ("update_lock", Kind::Str),
    ("keep_releases", Kind::Int),
    ("max_unpacked_bytes", Kind::Int),
    ("max_package_entries", Kind::Int),
    ("ca_file", Kind::Str),
    ("reboot_command", Kind::List),
    ("restart_command", Kind::List),
    ("journal_command", Kind::List),
    ("boot_id_path", Kind::Str),
    ("lock_max_wait", Kind::Str),
    ("agent_trial", Kind::Str),
];

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    controller_url: Option<String>,
    site_id: SiteId,
    token: Option<String>,
    token_file: Option<PathBuf>,
    trusted_keys: PathBuf,
    state_dir: PathBuf,
    videos_dir: PathBuf,
    config_path: PathBuf,
    software_root: Option<PathBuf>,
    poll_interval: Option<HumanDuration>,
    heartbeat_interval: Option<HumanDuration>,
    metrics_interval: Option<HumanDuration>,
    max_download_bytes: Option<u64>,
    max_download_rate: Option<u64>,
    min_download_rate: Option<u64>,
    download_watchdog: Option<HumanDuration>,
    space_reserve_bytes: Option<u64>,
    reload_command: Option<Vec<String>>,
    services: Option<Vec<String>>,
    report_queue_max: Option<u64>,
    connect_timeout: Option<HumanDuration>,
    read_timeout: Option<HumanDuration>,
    stop_command: Option<Vec<String>>,
    start_command: Option<Vec<String>>,
    update_lock: Option<PathBuf>,
    keep_releases: Option<u64>,
    max_unpacked_bytes: Option<u64>,
    max_package_entries: Option<u64>,
    ca_file: Option<PathBuf>,
    reboot_command: Option<Vec<String>>,
    restart_command: Option<Vec<String>>,
    journal_command: Option<Vec<String>>,
    boot_id_path: Option<PathBuf>,
    lock_max_wait: Option<HumanDuration>,
    agent_trial: Option<HumanDuration>,
}

/// The agent's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from (for messages).
    pub file: PathBuf,
    /// Base URL of the controller (`https://touchline.example.org`); `None`
    /// for a box fed only by `apply-dir`.
    pub controller_url: Option<String>,
    /// This box.
    pub site_id: SiteId,
    /// The site token (from `token` or `token_file`).
    pub token: Option<String>,
    /// Public keys whose bundle signatures are accepted.
    pub trusted_keys: TrustedKeys,
    /// The agent's own state (content store, accepted bundle, queue).
    pub state_dir: PathBuf,
    /// The video tree the local app plays from.
    pub videos_dir: PathBuf,
    /// The local app's `configuration.json`.
    pub config_path: PathBuf,
    /// Where software releases live: `releases/<version>/` and the
    /// `current` symlink. `None`: releases in bundles are not installed.
    pub software_root: Option<PathBuf>,
    /// Stops the local services before a switch (argv; default
    /// `systemctl stop <services>`, nothing without services).
    pub stop_command: Vec<String>,
    /// Starts them after a switch (default `systemctl start <services>`).
    pub start_command: Vec<String>,
    /// The lock the local app holds (`flock`) while a match is played.
    pub update_lock: PathBuf,
    /// Release directories kept (the current and previous always are).
    pub keep_releases: usize,
    /// Cap on what a release package unpacks to, bytes.
    pub max_unpacked_bytes: u64,
    /// Cap on the number of entries in a release package.
    pub max_package_entries: u64,
    /// Long-poll duration (until the bundle's settings say otherwise).
    pub poll_interval: HumanDuration,
    /// Status report interval.
    pub heartbeat_interval: HumanDuration,
    /// Full metrics interval.
    pub metrics_interval: HumanDuration,
    /// Largest single download accepted, bytes.
    pub max_download_bytes: u64,
    /// Download rate cap, bytes/s (0 = none).
    pub max_download_rate: u64,
    /// Below this average rate over `download_watchdog` a download is
    /// abandoned (and resumed later), bytes/s.
    pub min_download_rate: u64,
    /// Window of the minimum-throughput watchdog.
    pub download_watchdog: HumanDuration,
    /// Free space kept on the videos filesystem beyond what is downloaded.
    pub space_reserve_bytes: u64,
    /// Run after a change so the local app reloads (argv).
    pub reload_command: Vec<String>,
    /// systemd services reported in metrics.
    pub services: Vec<String>,
    /// Reports kept on disk while the controller is unreachable.
    pub report_queue_max: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: HumanDuration,
    /// Timeout between two reads of a response.
    pub read_timeout: HumanDuration,
    /// Remote `reboot`: this argv (default `systemctl reboot`).
    pub reboot_command: Vec<String>,
    /// Remote `restart-service <name>`: this argv, then the name (default
    /// `systemctl restart`).
    pub restart_command: Vec<String>,
    /// Remote `logs`: this program with journalctl's arguments (default
    /// `journalctl`).
    pub journal_command: Vec<String>,
    /// Where the kernel's boot id is read (a reboot is confirmed by its
    /// change).
    pub boot_id_path: PathBuf,
    /// How long changes that wait for the update lock (files, config,
    /// reload, reboot, restart) wait before the status says so.
    pub lock_max_wait: HumanDuration,
    /// How long a new agent release has, from its start, to complete a
    /// pass and deliver a report before it is rolled back (default 10 min).
    pub agent_trial: HumanDuration,
    /// Extra certificate authorities trusted for HTTPS (from `ca_file`, PEM),
    /// on top of the system's: a controller behind a private CA.
    pub extra_roots: Vec<reqwest::Certificate>,
}

/// A configuration problem: the process exits 2.
#[derive(Debug, thiserror::Error)]
#[error("config `{file}`: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the key.
    pub message: String,
}

impl Config {
    /// Reads the file and applies the environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, path, |k| std::env::var(k).ok())
    }

    /// Parses config text with environment lookups from `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let err = |message: String| ConfigError {
            file: file.clone(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| err(e.to_string().trim().replace('\n', " ").replace("  ", " ")))?;
        for (key, kind) in KEYS {
            let var = format!("TOUCHLINE_{}", key.to_ascii_uppercase());
            let Some(v) = env(&var) else { continue };
            let value = match kind {
                Kind::Str => toml::Value::String(v),
                Kind::Int => toml::Value::Integer(v.trim().parse().map_err(|_| {
                    err(format!(
                        "key `{key}` (from ${var}): `{v}` is not a whole number"
                    ))
                })?),
                Kind::List => toml::Value::Array(
                    v.split_whitespace()
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                ),
            };
            table.insert((*key).to_owned(), value);
        }
        let raw: Raw = Raw::deserialize(toml::Value::Table(table))
            .map_err(|e| err(e.to_string().trim().replace('\n', " ").replace("  ", " ")))?;
        let token = match (&raw.token, &raw.token_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "keys `token` and `token_file` are both set: keep one".into()
                ));
            }
            (Some(t), None) => Some(t.trim().to_owned()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        err(format!(
                            "key `token_file`: cannot read `{}`: {e}",
                            f.display()
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            return Err(err("key `token`: the token is empty".into()));
        }
        if raw.controller_url.is_some() && token.is_none() {
            return Err(err(
                "key `token`: a controller_url needs `token` or `token_file` (touchline site token prints one)".into(),
            ));
        }
        if let Some(url) = &raw.controller_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(err(format!(
                "key `controller_url`: `{url}` must start with http:// or https://"
            )));
        }
        let keys_text = std::fs::read_to_string(&raw.trusted_keys).map_err(|e| {
            err(format!(
                "key `trusted_keys`: cannot read `{}`: {e}",
                raw.trusted_keys.display()
            ))
        })?;
        let trusted_keys =
            TrustedKeys::parse(&keys_text).map_err(|e| err(format!("key `trusted_keys`: {e}")))?;
        let positive = |key: &str, d: Option<HumanDuration>, default: u64| {
            let d = d.unwrap_or(HumanDuration::from_secs(default));
            if d.as_secs() == 0 {
                Err(err(format!("key `{key}`: must be at least 1s")))
            } else {
                Ok(d)
            }
        };
        for (key, p) in [
            ("state_dir", &raw.state_dir),
            ("videos_dir", &raw.videos_dir),
            ("config_path", &raw.config_path),
        ] {
            if !p.is_absolute() {
                return Err(err(format!(
                    "key `{key}`: `{}` must be an absolute path",
                    p.display()
                )));
            }
        }
        if raw.videos_dir.starts_with(&raw.state_dir) || raw.state_dir.starts_with(&raw.videos_dir)
        {
            return Err(err(
                "keys `videos_dir` and `state_dir` must not contain each other".into(),
            ));
        }
        for (key, cmd) in [
            ("stop_command", &raw.stop_command),
            ("start_command", &raw.start_command),
            ("reboot_command", &raw.reboot_command),
            ("restart_command", &raw.restart_command),
            ("journal_command", &raw.journal_command),
        ] {
            if cmd.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(err(format!(
                    "key `{key}`: an empty list; leave the key out for its default"
                )));
            }
        }
        if let Some(root) = &raw.software_root
            && !root.is_absolute()
        {
            return Err(err(format!(
                "key `software_root`: `{}` must be an absolute path",
                root.display()
            )));
        }
        if raw.keep_releases.is_some_and(|k| k < 2) {
            return Err(err(
                "key `keep_releases`: at least 2 (the current release and the one to roll back to)"
                    .into(),
            ));
        }
        let services = raw.services.clone().unwrap_or_default();
        let systemctl = |verb: &str| -> Vec<String> {
            if services.is_empty() {
                Vec::new()
            } else {
                ["systemctl", verb]
                    .into_iter()
                    .map(str::to_owned)
                    .chain(services.iter().cloned())
                    .collect()
            }
        };
        if raw.reload_command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(err(
                "key `reload_command`: an empty list; leave the key out to run nothing".into(),
            ));
        }
        let extra_roots = match &raw.ca_file {
            None => Vec::new(),
            Some(f) => {
                let pem = std::fs::read(f).map_err(|e| {
                    err(format!("key `ca_file`: cannot read `{}`: {e}", f.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    err(format!(
                        "key `ca_file`: `{}` is not PEM certificates: {e}",
                        f.display()
                    ))
                })?;
                if certs.is_empty() {
                    return Err(err(format!(
                        "key `ca_file`: `{}` holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                        f.display()
                    )));
                }
                certs
            }
        };
        Ok(Self {
            extra_roots,
            file: path.to_owned(),
            controller_url: raw
                .controller_url
                .map(|u| u.trim_end_matches('/').to_owned()),
            site_id: raw.site_id,
            token,
            trusted_keys,
            state_dir: raw.state_dir,
            videos_dir: raw.videos_dir,
            config_path: raw.config_path,
            software_root: raw.software_root,
            poll_interval: positive("poll_interval", raw.poll_interval, 60)?,
            heartbeat_interval: positive("heartbeat_interval", raw.heartbeat_interval, 30)?,
            metrics_interval: positive("metrics_interval", raw.metrics_interval, 300)?,
            max_download_bytes: raw.max_download_bytes.unwrap_or(16 * 1024 * 1024 * 1024),
            max_download_rate: raw.max_download_rate.unwrap_or(0),
            min_download_rate: raw.min_download_rate.unwrap_or(1024),
            download_watchdog: positive("download_watchdog", raw.download_watchdog, 30)?,
            space_reserve_bytes: raw.space_reserve_bytes.unwrap_or(256 * 1024 * 1024),
            reload_command: raw.reload_command.unwrap_or_default(),
            services: raw.services.unwrap_or_default(),
            report_queue_max: usize::try_from(raw.report_queue_max.unwrap_or(20_000))
                .unwrap_or(20_000)
                .max(16),
            connect_timeout: positive("connect_timeout", raw.connect_timeout, 10)?,
            read_timeout: positive("read_timeout", raw.read_timeout, 30)?,
            stop_command: raw.stop_command.unwrap_or_else(|| systemctl("stop")),
            start_command: raw.start_command.unwrap_or_else(|| systemctl("start")),
            update_lock: raw
                .update_lock
                .unwrap_or_else(|| PathBuf::from("/run/touchline/update.lock")),
            keep_releases: usize::try_from(raw.keep_releases.unwrap_or(5)).unwrap_or(5),
            max_unpacked_bytes: raw.max_unpacked_bytes.unwrap_or(4 * 1024 * 1024 * 1024),
            max_package_entries: raw.max_package_entries.unwrap_or(100_000),
            reboot_command: raw
                .reboot_command
                .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]),
            restart_command: raw
                .restart_command
                .unwrap_or_else(|| vec!["systemctl".into(), "restart".into()]),
            journal_command: raw
                .journal_command
                .unwrap_or_else(|| vec!["journalctl".into()]),
            boot_id_path: raw
                .boot_id_path
                .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id")),
            lock_max_wait: positive("lock_max_wait", raw.lock_max_wait, 4 * 3600)?,
            agent_trial: positive("agent_trial", raw.agent_trial, 600)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path) -> String {
        let keys = dir.join("trusted_keys");
        let key = touchline_schemas::SigningKey::generate().public_key_openssh();
        std::fs::write(&keys, key).unwrap();
        format!(
            "controller_url = \"http://127.0.0.1:1/\"\nsite_id = \"cesson-handball\"\ntoken = \"t0k\"\ntrusted_keys = \"{}\"\nstate_dir = \"/var/lib/touchline\"\nvideos_dir = \"/srv/videos\"\nconfig_path = \"/srv/configuration.json\"\n",
            keys.display()
        )
    }

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse(text, Path::new("/etc/touchline/agent.toml"), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn ca_file_must_hold_pem_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let text = base(tmp.path());
        let missing = tmp.path().join("missing.pem");
        let err = parse(&format!("{text}ca_file = \"{}\"\n", missing.display()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `ca_file`: cannot read"), "{err}");
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "just words\n").unwrap();
        let err = parse(&format!("{text}ca_file = \"{}\"\n", empty.display()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        let garbled = tmp.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = parse(&format!("{text}ca_file = \"{}\"\n", garbled.display()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `ca_file`"), "{err}");
        assert!(parse(&text, &[]).unwrap().extra_roots.is_empty());
    }

    #[test]
    fn defaults_env_overrides_and_errors_that_name_the_key_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let text = base(tmp.path());
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.controller_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(c.poll_interval.as_secs(), 60);
        assert_eq!(c.heartbeat_interval.as_secs(), 30);
        assert_eq!(c.metrics_interval.as_secs(), 300);
        let c = parse(
            &text,
            &[
                ("TOUCHLINE_POLL_INTERVAL", "5m"),
                ("TOUCHLINE_MAX_DOWNLOAD_RATE", "250000"),
                ("TOUCHLINE_SERVICES", "neopro-app nginx"),
            ],
        )
        .unwrap();
        assert_eq!(c.poll_interval.as_secs(), 300);
        assert_eq!(c.max_download_rate, 250_000);
        assert_eq!(c.services, vec!["neopro-app", "nginx"]);

        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("poll_interval = \"5 minutes\"\n", &[], "poll_interval"),
            (
                "pol_interval = \"5m\"\n",
                &[],
                "unknown field `pol_interval`",
            ),
            (
                "",
                &[("TOUCHLINE_MAX_DOWNLOAD_BYTES", "lots")],
                "key `max_download_bytes` (from $TOUCHLINE_MAX_DOWNLOAD_BYTES): `lots` is not a whole number",
            ),
            (
                "heartbeat_interval = \"0s\"\n",
                &[],
                "key `heartbeat_interval`: must be at least 1s",
            ),
            (
                "token_file = \"/nonexistent\"\n",
                &[],
                "keys `token` and `token_file` are both set",
            ),
            (
                "",
                &[("TOUCHLINE_CONTROLLER_URL", "ftp://x")],
                "key `controller_url`: `ftp://x` must start with http:// or https://",
            ),
            ("", &[("TOUCHLINE_SITE_ID", "../etc")], "site_id"),
            (
                "",
                &[("TOUCHLINE_TRUSTED_KEYS", "/nonexistent/keys")],
                "key `trusted_keys`: cannot read `/nonexistent/keys`",
            ),
            (
                "",
                &[("TOUCHLINE_VIDEOS_DIR", "videos")],
                "key `videos_dir`: `videos` must be an absolute path",
            ),
            (
                "",
                &[("TOUCHLINE_VIDEOS_DIR", "/var/lib/touchline/v")],
                "must not contain each other",
            ),
        ];
        for (extra, env, want) in cases {
            let err = parse(&format!("{text}{extra}"), env)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("config `/etc/touchline/agent.toml`: ") && err.contains(want),
                "{extra:?} {env:?}: {err}"
            );
        }
        let err = parse("site_id = 3\n", &[]).unwrap_err().to_string();
        assert!(err.contains("site_id"), "{err}");
    }
}
