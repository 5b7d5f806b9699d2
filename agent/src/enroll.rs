//! `touchline-agent enroll`: trades a one-time code for this box's
//! identity (protocol: `touchline_schemas::enroll`) and writes the agent
//! config, the token file (0600) and the trusted keys beside it.
//!
//! Everything that can be checked is checked before the code is spent (the
//! code's form, files already there, the `--from-neopro` file, that the
//! directory takes files, and that this box's own settings make a config
//! the agent reads). The answer is opened with the key derived from the code: an
//! answer from any controller but the one that minted the code is refused.
//! The files are written under temp names, the config is parsed as the
//! agent will read it, and only then are they renamed into place, the
//! config last: a failure leaves nothing behind. The code is never
//! printed or logged.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use touchline_schemas::enroll::{
    ENROLL_PATH, EnrollAnswer, EnrollCode, EnrollRequest, IDENTITY_KEYS, MAX_ANSWER_BYTES, Sealed,
};
use touchline_schemas::neopro::{Field, SiteConf};

use crate::config::Config;
use crate::fsx;
use crate::transport::error_text;

/// The app's services on a NEOPRO box (its sync agent's documentation).
const NEOPRO_SERVICES: [&str; 2] = ["neopro-app", "neopro-admin"];
/// Where a NEOPRO box keeps its videos and the app's configuration (its
/// sync agent's defaults): used when nothing else says.
const NEOPRO_PATHS: [(&str, &str); 2] = [
    ("videos_dir", "/home/pi/neopro/videos"),
    ("config_path", "/home/pi/neopro/webapp/configuration.json"),
];
/// Where a box keeps its state unless told otherwise.
const DEFAULT_STATE_DIR: &str = "/var/lib/touchline";

/// What `enroll` was asked (its command-line arguments).
#[derive(clap::Args)]
pub struct Options {
    /// The controller's address (https://…).
    #[arg(long)]
    pub controller: String,
    /// The code (K7QF-2MXD-9RTA-PL4C; case and dashes do not matter).
    /// Better from the environment than the command line, where other
    /// users of the box can read it while the command runs.
    #[arg(env = "TOUCHLINE_ENROLL_CODE", hide_env_values = true)]
    pub code: String,
    /// Where to write the config; the token and trusted keys go beside it.
    #[arg(long, default_value = "/etc/touchline/agent.toml")]
    pub config: PathBuf,
    /// Carry this NEOPRO site.conf's paths (VIDEOS_PATH, CONFIG_PATH,
    /// NEOPRO_ROOT) and MAX_DOWNLOAD_SIZE over; the file is left as is.
    #[arg(long)]
    pub from_neopro: Option<PathBuf>,
    /// A setting for this box, key=value (repeatable; overrides the
    /// controller's and the site.conf's).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Replace an existing config and token.
    #[arg(long)]
    pub force: bool,
    /// Trust this CA (PEM) for the controller's HTTPS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code is a secret.
        f.debug_struct("Options")
            .field("controller", &self.controller)
            .field("code", &"…")
            .field("config", &self.config)
            .field("from_neopro", &self.from_neopro)
            .field("set", &self.set)
            .field("force", &self.force)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Why enrolling failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Wrong arguments or local files (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The controller refused or could not be reached (exit 1).
    #[error("{0}")]
    Remote(String),
}

impl EnrollError {
    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Remote(_) => 1,
        }
    }
}

fn usage(s: impl Into<String>) -> EnrollError {
    EnrollError::Usage(s.into())
}

/// What was written.
#[derive(Debug)]
pub struct Enrolled {
    /// The site.
    pub site: String,
    /// The config file.
    pub config: PathBuf,
    /// Notes for the operator (defaults used, a site.conf naming another
    /// site).
    pub notes: Vec<String>,
}

/// Enrolls this box.
pub async fn enroll(opts: &Options) -> Result<Enrolled, EnrollError> {
    let code = EnrollCode::parse(&opts.code).map_err(|e| usage(e.to_string()))?;
    let controller = opts.controller.trim_end_matches('/').to_owned();
    if !(controller.starts_with("http://") || controller.starts_with("https://")) {
        return Err(usage(format!(
            "--controller `{controller}` must start with http:// or https://"
        )));
    }
    let dir = opts
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let token_path = dir.join("token");
    let keys_path = dir.join("trusted_keys");
    if !opts.force {
        for p in [&opts.config, &token_path] {
            // The package's commented skeleton is not an enrollment.
            if p.symlink_metadata().is_ok() && !(p == &opts.config && is_skeleton(p)) {
                return Err(usage(format!(
                    "`{}` exists: this box looks enrolled already; pass --force to replace it (the site's old token stops working)",
                    p.display()
                )));
            }
        }
    }
    let mut local = toml::Table::new();
    let mut notes = Vec::new();
    let neopro = match &opts.from_neopro {
        Some(p) => Some(read_neopro(p, &mut local)?),
        None => None,
    };
    for s in &opts.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| usage(format!("--set `{s}`: write key=value")))?;
        let (k, v) = (k.trim(), v.trim());
        if IDENTITY_KEYS.contains(&k) {
            return Err(usage(format!(
                "--set {k}: the box's identity comes from the enrollment"
            )));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.to_owned()));
        local.insert(k.to_owned(), value);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| usage(format!("cannot create `{}`: {e}", dir.display())))?;
    precheck(&dir, &opts.config, &controller, &local)?;
    let client = client(opts)?;
    let answer = exchange(&client, &controller, &code).await?;

    // Settings: the controller's for every box, then this box's own.
    let mut table = toml::Table::new();
    for (k, v) in &answer.agent {
        if IDENTITY_KEYS.contains(&k.as_str()) {
            continue;
        }
        if let Some(v) = json_to_toml(v) {
            table.insert(k.clone(), v);
        }
    }
    if neopro.is_some() && !table.contains_key("services") {
        table.insert(
            "services".into(),
            toml::Value::Array(
                NEOPRO_SERVICES
                    .iter()
                    .map(|s| toml::Value::String((*s).to_owned()))
                    .collect(),
            ),
        );
    }
    table.extend(local);
    for (key, default) in fill_defaults(&mut table) {
        notes.push(format!(
            "neither the controller ([enrollment.agent]) nor this command (--from-neopro, --set {key}=…) gave `{key}`: using NEOPRO's {default}"
        ));
    }
    if let Some(conf) = &neopro
        && let Ok(id) = conf.site_id()
        && id != answer.site_id
    {
        notes.push(format!(
            "the site.conf names site `{id}`, the code enrolled this box as `{}`",
            answer.site_id
        ));
    }
    let url = answer.controller_url.clone().unwrap_or(controller);
    let site = answer.site_id.to_string();
    let identity = |token: &Path, keys: &Path| with_identity(&table, &url, &site, token, keys);
    let final_text = render(&identity(&token_path, &keys_path), &answer);

    // Stage, check as the agent reads it, then rename into place.
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| -> Result<(), EnrollError> {
        let token_tmp = stage(&token_path, format!("{}\n", answer.token).as_bytes(), 0o600)?;
        staged.push((token_tmp.clone(), token_path.clone()));
        let keys_tmp = stage(&keys_path, answer.trusted_keys.as_bytes(), 0o644)?;
        staged.push((keys_tmp.clone(), keys_path.clone()));
        let check_text = render(&identity(&token_tmp, &keys_tmp), &answer);
        Config::parse(&check_text, &opts.config, |_| None).map_err(|e| {
            EnrollError::Remote(format!(
                "the code is spent but nothing was written: the settings do not make a valid agent config ({}); fix them and mint a new code",
                e.message
            ))
        })?;
        let config_tmp = stage(&opts.config, final_text.as_bytes(), 0o644)?;
        staged.push((config_tmp, opts.config.clone()));
        for (tmp, path) in &staged {
            std::fs::rename(tmp, path)
                .map_err(|e| usage(format!("cannot write `{}`: {e}", path.display())))?;
        }
        fsx::sync_dir(&dir).map_err(|e| usage(format!("cannot sync `{}`: {e}", dir.display())))
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result?;
    Ok(Enrolled {
        site: answer.site_id.to_string(),
        config: opts.config.clone(),
        notes,
    })
}

/// Sets the keys nothing gave: `state_dir`, and NEOPRO's paths (returned,
/// for the operator's notes).
fn fill_defaults(t: &mut toml::Table) -> Vec<(&'static str, &'static str)> {
    t.entry("state_dir")
        .or_insert_with(|| DEFAULT_STATE_DIR.into());
    let mut used = Vec::new();
    for (key, default) in NEOPRO_PATHS {
        if !t.contains_key(key) {
            t.insert(key.into(), default.into());
            used.push((key, default));
        }
    }
    used
}

/// `settings` with a box's identity: controller, site, token file and
/// trusted keys.
fn with_identity(
    settings: &toml::Table,
    controller: &str,
    site: &str,
    token: &Path,
    keys: &Path,
) -> toml::Table {
    let mut t = settings.clone();
    t.insert("controller_url".into(), controller.into());
    t.insert("site_id".into(), site.into());
    t.insert("token_file".into(), token.display().to_string().into());
    t.insert("trusted_keys".into(), keys.display().to_string().into());
    t
}

/// Before the code is spent: the directory takes files, and this box's
/// own settings (site.conf, `--set`, the defaults) make a config the agent
/// reads (with stand-ins for the identity the answer will bring).
fn precheck(
    dir: &Path,
    config: &Path,
    controller: &str,
    local: &toml::Table,
) -> Result<(), EnrollError> {
    let not_spent = "nothing was sent: the code is not spent";
    let key = touchline_schemas::SigningKey::generate().public_key_openssh();
    let token = stage(&dir.join("token"), b"stand-in\n", 0o600)
        .map_err(|e| usage(format!("{e}; {not_spent}")))?;
    let keys = stage(&dir.join("trusted_keys"), key.as_bytes(), 0o600);
    let result =
        keys.map_err(|e| usage(format!("{e}; {not_spent}")))
            .and_then(|keys| {
                let mut t = local.clone();
                fill_defaults(&mut t);
                let t = with_identity(&t, controller, "enroll-check", &token, &keys);
                let text = toml::to_string(&t).unwrap_or_default();
                let checked = Config::parse(&text, config, |_| None).map(drop).map_err(|e| {
                usage(format!(
                    "this box's settings do not make a valid agent config ({}); {not_spent}",
                    e.message
                ))
            });
                let _ = std::fs::remove_file(&keys);
                checked
            });
    let _ = std::fs::remove_file(&token);
    result
}

/// Whether `path` is a config with no key set (the package's commented
/// skeleton): regular, small, every line a comment.
fn is_skeleton(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() < 64 * 1024)
        && std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .is_some_and(|t| t.is_empty())
}

/// Reads a NEOPRO site.conf into agent settings; refuses a file that does
/// not read, naming its line.
fn read_neopro(path: &Path, into: &mut toml::Table) -> Result<SiteConf, EnrollError> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read `{}`: {e}", path.display())))?;
    let conf = SiteConf::parse(&bytes).map_err(|e| usage(format!("{}:{e}", path.display())))?;
    for (field, key) in [
        (Field::VideosPath, "videos_dir"),
        (Field::ConfigPath, "config_path"),
        (Field::NeoproRoot, "software_root"),
    ] {
        if let Some(v) = conf.get(field) {
            into.insert(key.into(), v.into());
        }
    }
    if let Some(v) = conf.get(Field::MaxDownloadSize) {
        let n: i64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            usage(format!(
                "{}:{}: MAX_DOWNLOAD_SIZE `{v}` is not a number of bytes",
                path.display(),
                conf.line(Field::MaxDownloadSize).unwrap_or(1)
            ))
        })?;
        into.insert("max_download_bytes".into(), n.into());
    }
    Ok(conf)
}

fn client(opts: &Options) -> Result<reqwest::Client, EnrollError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("touchline-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(f) = &opts.ca_file {
        let pem =
            std::fs::read(f).map_err(|e| usage(format!("cannot read `{}`: {e}", f.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| usage(format!("`{}` is not PEM certificates: {e}", f.display())))?;
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| usage(format!("cannot set up HTTPS: {}", error_text(&e))))
}

/// Posts the lookup id and opens the answer.
async fn exchange(
    client: &reqwest::Client,
    controller: &str,
    code: &EnrollCode,
) -> Result<EnrollAnswer, EnrollError> {
    let lookup = code.lookup();
    let req = EnrollRequest {
        lookup: lookup.clone(),
        hostname: hostname(),
    };
    let remote = |s: String| EnrollError::Remote(s);
    let resp = client
        .post(format!("{controller}{ENROLL_PATH}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&req).unwrap_or_default())
        .send()
        .await
        .map_err(|e| {
            remote(format!(
                "cannot reach the controller at {controller}: {}",
                error_text(&e)
            ))
        })?;
    let status = resp.status();
    let body = read_bounded(resp).await.map_err(remote)?;
    if !status.is_success() {
        let said = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(remote(format!("the controller refused the code: {said}")));
    }
    let sealed: Sealed = serde_json::from_slice(&body).map_err(|_| {
        remote(format!(
            "{controller} did not answer like a Touchline controller (HTTP {status}, not a sealed answer)"
        ))
    })?;
    let plain = code
        .seal_key()
        .open(&lookup, &sealed)
        .map_err(|e| remote(format!("refused the answer of {controller}: {e}")))?;
    serde_json::from_slice(&plain).map_err(|e| {
        remote(format!(
            "the sealed answer is not an enrollment answer: {e}"
        ))
    })
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("the answer broke off: {}", error_text(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is over {MAX_ANSWER_BYTES} bytes: not an enrollment answer"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// A JSON setting as TOML: strings, whole numbers, lists of strings.
fn json_to_toml(v: &serde_json::Value) -> Option<toml::Value> {
    match v {
        serde_json::Value::String(s) => Some(s.clone().into()),
        serde_json::Value::Number(n) => n.as_i64().map(Into::into),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(|s| toml::Value::String(s.to_owned())))
            .collect::<Option<Vec<_>>>()
            .map(toml::Value::Array),
        _ => None,
    }
}

fn render(t: &toml::Table, answer: &EnrollAnswer) -> String {
    format!(
        "# Written by `touchline-agent enroll` for site {} (see /usr/share/doc/touchline-agent/agent.toml\n# for every key). Edit freely: enroll does not run again unless asked (--force).\n{}",
        answer.site_id,
        toml::to_string(t).unwrap_or_default()
    )
}

/// Writes `bytes` under a fresh temp name next to `path` with `mode`,
/// durably; returns the temp path.
fn stage(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, EnrollError> {
    let tmp = fsx::temp_path(path).map_err(|e| usage(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        usage(format!("cannot write `{}`: {e}", path.display()))
    })?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_convert_to_toml_or_are_dropped() {
        assert_eq!(
            json_to_toml(&serde_json::json!("x")),
            Some(toml::Value::String("x".into()))
        );
        assert_eq!(
            json_to_toml(&serde_json::json!(5)),
            Some(toml::Value::Integer(5))
        );
        assert!(json_to_toml(&serde_json::json!(["a", 1])).is_none());
        assert!(json_to_toml(&serde_json::json!({"a": 1})).is_none());
    }
}
