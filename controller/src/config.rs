//! The controller's configuration file (`touchline serve --config <file>`,
//! TOML). Everything is optional; unknown keys are refused.
//!
//! ```toml
//! sync_interval = "30s"         # fetch the manifests repository this often
//! resign_after = "1d"           # re-sign unchanged bundles this long after signing
//! offline_after = "5m"          # a site silent this long is offline
//! history_retention = "365d"    # metrics older than this are dropped
//! # Metrics younger than the first tier keep every report's point; older
//! # ones are merged into one point per bucket of the tier they fall in.
//! history_tiers = [{ after = "48h", bucket = "5m" }, { after = "30d", bucket = "1h" }]
//! webhook_secret = "…"          # HMAC-SHA256 secret for POST /api/sync (X-Hub-Signature-256)
//! require_signed_commits = true
//! allowed_commit_signers = ["ssh-ed25519 AAAA… alice@example.org"]
//!
//! webhooks = ["https://hooks.slack.com/services/…"]  # alert notifications
//! alerts_interval = "30s"
//! digest_at = "08:00"           # a daily digest at this time of day (fleet's time zone)
//!
//! [email]                       # alert notifications by email
//! smtp_host = "smtp.example.org"
//! smtp_port = 587               # default: 587 for starttls, 465 for tls, 25 for none
//! tls = "starttls"              # starttls | tls | none (none: loopback relays only)
//! username = "alerts@example.org"
//! password_file = "/etc/touchline/smtp.password"
//! from = "Touchline <alerts@example.org>"
//! to = ["ops@example.org"]
//!
//! [commit_status]              # one status per commit on the git host
//! kind = "github"               # github | gitea (also Forgejo) | gitlab
//! api_url = "https://api.github.com"   # gitea: https://host/api/v1, gitlab: https://host/api/v4
//! repository = "neopro/fleet"   # owner/name (gitlab: the project path or id)
//! token_file = "/etc/touchline/git-status.token"
//! context = "touchline"         # the status's name (default touchline)
//! target_url = "https://touchline.example.org/"  # where the status links to
//!
//! [[operators]]
//! name = "alice"
//! role = "admin"                # viewer | operator | admin
//! token_sha256 = "…"            # `touchline operator token` prints a token and its hash
//! ```

use std::path::Path;

use serde::Deserialize;
use touchline_schemas::{HumanDuration, TrustedKeys};

use crate::tokens::TokenHash;

/// What an operator may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also trigger syncs and remote actions.
    Operator,
    /// Also mint site tokens.
    Admin,
}

impl Role {
    /// As written in the config (`viewer`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// An operator entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Name, for the audit log.
    pub name: String,
    /// Role.
    pub role: Role,
    /// sha256 of the operator's token, hex.
    pub token_sha256: String,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same machine.
    None,
}

/// The git host that receives commit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitHost {
    /// GitHub (`POST /repos/{owner}/{repo}/statuses/{sha}`).
    Github,
    /// Gitea and Forgejo (the same statuses API under `/api/v1`).
    Gitea,
    /// GitLab (`POST /projects/{id}/statuses/{sha}`).
    Gitlab,
}

/// `[commit_status]`: where each commit's status goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitStatus {
    /// The host's kind.
    pub kind: GitHost,
    /// Its API base URL.
    pub api_url: String,
    /// `owner/name`, or GitLab's project path or id.
    pub repository: String,
    /// A file holding the API token (read at each send).
    pub token_file: std::path::PathBuf,
    /// The status's name (default `touchline`).
    #[serde(default)]
    pub context: Option<String>,
    /// Where the status links to (the status page).
    #[serde(default)]
    pub target_url: Option<String>,
}

impl CommitStatus {
    /// The status's name.
    pub fn context(&self) -> &str {
        self.context.as_deref().unwrap_or("touchline")
    }
}

/// Alert email settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// SMTP server.
    pub smtp_host: String,
    /// Port (default by `tls`).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// Connection security.
    #[serde(default)]
    pub tls: EmailTls,
    /// SMTP user.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the SMTP password (read at each send).
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

impl Email {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        })
    }
}

/// The configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fetch interval.
    #[serde(default = "Config::default_sync")]
    pub sync_interval: HumanDuration,
    /// Re-sign bundles this long after they were signed.
    #[serde(default = "Config::default_resign")]
    pub resign_after: HumanDuration,
    /// Silence after which a site is offline.
    #[serde(default = "Config::default_offline")]
    pub offline_after: HumanDuration,
    /// Metrics retention.
    #[serde(default = "Config::default_retention")]
    pub history_retention: HumanDuration,
    /// Downsampling tiers, finest first: metrics older than a tier's
    /// `after` are merged into one point per its `bucket`.
    #[serde(default = "Config::default_tiers")]
    pub history_tiers: Vec<HistoryTier>,
    /// Replaced by `history_tiers` (refused with a message saying so).
    #[serde(default)]
    history_full_resolution: Option<toml::Value>,
    /// Replaced by `history_tiers` (refused with a message saying so).
    #[serde(default)]
    history_bucket: Option<toml::Value>,
    /// Webhook HMAC secret.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// A file holding `user:password` (or `user:token`) for the manifests
    /// repository over HTTP(S), readable by its owner only; relative to
    /// the config file's directory.
    #[serde(default)]
    pub repo_credentials_file: Option<std::path::PathBuf>,
    /// Refuse commits whose SSH signature does not verify.
    #[serde(default)]
    pub require_signed_commits: bool,
    /// Public keys allowed to sign commits.
    #[serde(default)]
    pub allowed_commit_signers: Vec<String>,
    /// Operators.
    #[serde(default)]
    pub operators: Vec<Operator>,
    /// Alert notifications: webhook URLs (Slack-compatible JSON). Kept out
    /// of the manifests: a Slack webhook URL is a secret.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// How often every site's alerts are evaluated (offline needs a
    /// timer; reports also trigger an evaluation).
    #[serde(default = "Config::default_alerts_interval")]
    pub alerts_interval: HumanDuration,
    /// Alert notifications by email.
    #[serde(default)]
    pub email: Option<Email>,
    /// Commit statuses on the git host.
    #[serde(default)]
    pub commit_status: Option<CommitStatus>,
    /// Send a daily digest (fleet counts, firing alerts, the last day's
    /// alerts) at this local time of day, `HH:MM` in the fleet's time zone.
    #[serde(default)]
    pub digest_at: Option<String>,
    /// Limits of the HTTP server against slow and numerous clients.
    #[serde(default)]
    pub http: HttpLimits,
    /// One-time enrollment of new boxes.
    #[serde(default)]
    pub enrollment: Enrollment,
}

/// Why an `[enrollment]` section is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    /// Not a URL boxes can use, or one unsafe in a shell script.
    #[error(
        "enrollment.public_url: `{0}` is not an http:// or https:// URL of letters, digits and :/.-_~%[]@+"
    )]
    PublicUrl(String),
    /// Out of range.
    #[error("enrollment.ttl must be between 1s and 30d")]
    Ttl,
    /// An identity key among the settings.
    #[error(
        "enrollment.agent.{0}: a box's identity comes from its enrollment, not from the config"
    )]
    Identity(String),
    /// A setting that is not a string, number or list of strings.
    #[error("enrollment.agent.{0}: write a string, a whole number or a list of strings")]
    NotPlain(String),
}

/// `[enrollment]`: what `touchline site enroll` codes give a new box.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The address boxes reach the controller at (`https://touchline.example.org`):
    /// printed in the install command and written into each box's agent.toml.
    #[serde(default)]
    pub public_url: Option<String>,
    /// How long a code works by default (`--ttl` overrides it).
    #[serde(default = "Enrollment::default_ttl")]
    pub ttl: HumanDuration,
    /// agent.toml settings every new box gets (strings, whole numbers,
    /// lists of strings), e.g. `videos_dir`, `config_path`, `services`.
    /// The box's identity (`site_id`, `token*`, `trusted_keys`,
    /// `controller_url`) comes from the enrollment itself.
    #[serde(default)]
    pub agent: toml::Table,
    /// touchline-agent packages (`touchline-agent_<version>_<arch>.deb`,
    /// one per architecture) served to new boxes by `/install.sh`.
    #[serde(default)]
    pub agent_packages: Vec<std::path::PathBuf>,
}

impl Default for Enrollment {
    fn default() -> Self {
        Self {
            public_url: None,
            ttl: Self::default_ttl(),
            agent: toml::Table::new(),
            agent_packages: Vec::new(),
        }
    }
}

impl Enrollment {
    /// Longest life of a code.
    pub const MAX_TTL_SECS: u64 = 30 * 86_400;

    fn default_ttl() -> HumanDuration {
        HumanDuration::from_secs(86_400)
    }

    /// The agent settings as JSON values, for the sealed answer.
    pub fn agent_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        self.agent
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
            .collect()
    }

    fn check(&self) -> Result<(), EnrollmentError> {
        if let Some(u) = &self.public_url
            && (reqwest::Url::parse(u)
                .ok()
                .is_none_or(|url| !matches!(url.scheme(), "http" | "https"))
                // It is written into a shell script and printed commands.
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":/.-_~%[]@+".contains(&b)))
        {
            return Err(EnrollmentError::PublicUrl(u.clone()));
        }
        if self.ttl.as_secs() == 0 || self.ttl.as_secs() > Self::MAX_TTL_SECS {
            return Err(EnrollmentError::Ttl);
        }
        for (k, v) in &self.agent {
            if touchline_schemas::enroll::IDENTITY_KEYS.contains(&k.as_str()) {
                return Err(EnrollmentError::Identity(k.clone()));
            }
            let plain = match v {
                toml::Value::String(_) | toml::Value::Integer(_) => true,
                toml::Value::Array(a) => a.iter().all(toml::Value::is_str),
                _ => false,
            };
            if !plain {
                return Err(EnrollmentError::NotPlain(k.clone()));
            }
        }
        Ok(())
    }
}

/// `[http]`: what one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its last answer, when kept alive) is closed.
    #[serde(default = "HttpLimits::default_header_read")]
    pub header_read_timeout: HumanDuration,
    /// A request body that has not arrived whole this long after its head
    /// is refused (408).
    #[serde(default = "HttpLimits::default_body")]
    pub body_timeout: HumanDuration,
    /// Connections served at once; more wait in the listen backlog (a log
    /// line says so). 10,000 long-polling boxes need 10,000.
    #[serde(default = "HttpLimits::default_max_connections")]
    pub max_connections: usize,
    /// Failed logins allowed per source address and minute.
    #[serde(default = "HttpLimits::default_login_failures")]
    pub login_failures_per_minute: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::default_header_read(),
            body_timeout: Self::default_body(),
            max_connections: Self::default_max_connections(),
            login_failures_per_minute: Self::default_login_failures(),
        }
    }
}

impl HttpLimits {
    fn default_header_read() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    fn default_body() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    fn default_max_connections() -> usize {
        16_384
    }
    fn default_login_failures() -> u32 {
        5
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sync_interval: Self::default_sync(),
            resign_after: Self::default_resign(),
            offline_after: Self::default_offline(),
            history_retention: Self::default_retention(),
            history_tiers: Self::default_tiers(),
            history_full_resolution: None,
            history_bucket: None,
            webhook_secret: None,
            repo_credentials_file: None,
            require_signed_commits: false,
            allowed_commit_signers: Vec::new(),
            operators: Vec::new(),
            webhooks: Vec::new(),
            alerts_interval: Self::default_alerts_interval(),
            email: None,
            commit_status: None,
            digest_at: None,
            http: HttpLimits::default(),
            enrollment: Enrollment::default(),
        }
    }
}

/// A downsampling tier of the metrics history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryTier {
    /// Points older than this fall in the tier.
    pub after: HumanDuration,
    /// One point per bucket of this length.
    pub bucket: HumanDuration,
}

/// Why `history_tiers` do not nest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    /// A bucket under a minute.
    #[error("history_tiers[{i}].bucket is {bucket}: it must be at least 1m")]
    BucketTooSmall {
        /// The tier.
        i: usize,
        /// Its bucket.
        bucket: HumanDuration,
    },
    /// A tier that starts after the retention.
    #[error(
        "history_tiers[{i}].after is {after}, not shorter than history_retention ({retention}): those points would be dropped before they are merged"
    )]
    AfterRetention {
        /// The tier.
        i: usize,
        /// Its start.
        after: HumanDuration,
        /// The retention.
        retention: HumanDuration,
    },
    /// Tiers out of order.
    #[error(
        "history_tiers[{i}] ({} / {}) must come after and be coarser than history_tiers[{}] ({} / {}): list the tiers finest first",
        tier.after, tier.bucket, i - 1, prev.after, prev.bucket
    )]
    OutOfOrder {
        /// The tier.
        i: usize,
        /// It.
        tier: HistoryTier,
        /// The one before.
        prev: HistoryTier,
    },
    /// A bucket that is not a multiple of the one before.
    #[error(
        "history_tiers[{i}].bucket ({}) must be a whole multiple of history_tiers[{}].bucket ({})",
        tier.bucket, i - 1, prev.bucket
    )]
    NotAMultiple {
        /// The tier.
        i: usize,
        /// It.
        tier: HistoryTier,
        /// The one before.
        prev: HistoryTier,
    },
}

/// Tiers must nest: each older and coarser than the one before, its bucket
/// a whole number of the previous bucket (so merged points merge again
/// cleanly), and all of them inside the retention.
fn check_tiers(tiers: &[HistoryTier], retention: HumanDuration) -> Result<(), TierError> {
    let mut prev: Option<HistoryTier> = None;
    for (i, t) in tiers.iter().enumerate() {
        if t.bucket.as_secs() < 60 {
            return Err(TierError::BucketTooSmall {
                i,
                bucket: t.bucket,
            });
        }
        if t.after.as_secs() >= retention.as_secs() {
            return Err(TierError::AfterRetention {
                i,
                after: t.after,
                retention,
            });
        }
        if let Some(p) = prev {
            if t.after.as_secs() <= p.after.as_secs() || t.bucket.as_secs() <= p.bucket.as_secs() {
                return Err(TierError::OutOfOrder {
                    i,
                    tier: *t,
                    prev: p,
                });
            }
            if t.bucket.as_secs() % p.bucket.as_secs() != 0 {
                return Err(TierError::NotAMultiple {
                    i,
                    tier: *t,
                    prev: p,
                });
            }
        }
        prev = Some(*t);
    }
    Ok(())
}

/// A configuration problem; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("failed to read config file `{0}`")]
    Read(String, #[source] std::io::Error),
    /// Not valid.
    #[error("invalid config file `{file}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong (TOML parser message with line, or a rule).
        message: String,
    },
}

impl Config {
    fn default_sync() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    fn default_resign() -> HumanDuration {
        HumanDuration::from_secs(86_400)
    }
    fn default_offline() -> HumanDuration {
        HumanDuration::from_secs(300)
    }
    fn default_retention() -> HumanDuration {
        HumanDuration::from_secs(365 * 86_400)
    }
    /// Raw for 48 h, 5-minute means for 30 days, hourly after that.
    fn default_tiers() -> Vec<HistoryTier> {
        vec![
            HistoryTier {
                after: HumanDuration::from_secs(48 * 3_600),
                bucket: HumanDuration::from_secs(300),
            },
            HistoryTier {
                after: HumanDuration::from_secs(30 * 86_400),
                bucket: HumanDuration::from_secs(3_600),
            },
        ]
    }
    fn default_alerts_interval() -> HumanDuration {
        HumanDuration::from_secs(30)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(file.clone(), e))?;
        Self::parse(&text, &file)
    }

    /// Parses and checks config text.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        };
        let c: Config =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_owned()))?;
        for (i, op) in c.operators.iter().enumerate() {
            if TokenHash::from_hex(&op.token_sha256).is_none() {
                return Err(invalid(format!(
                    "operators[{i}] ({}): token_sha256 must be 64 hex digits (the sha256 of the token)",
                    op.name
                )));
            }
        }
        if c.require_signed_commits && c.allowed_commit_signers.is_empty() {
            return Err(invalid(
                "require_signed_commits is true but allowed_commit_signers is empty: list the SSH public keys allowed to sign".into(),
            ));
        }
        if !c.allowed_commit_signers.is_empty() {
            TrustedKeys::parse(&c.allowed_commit_signers.join("\n"))
                .map_err(|e| invalid(format!("allowed_commit_signers: {e}")))?;
        }
        if c.sync_interval.as_secs() == 0 {
            return Err(invalid("sync_interval must be at least 1s".into()));
        }
        for (i, u) in c.webhooks.iter().enumerate() {
            if reqwest::Url::parse(u)
                .ok()
                .is_none_or(|url| !matches!(url.scheme(), "http" | "https"))
            {
                return Err(invalid(format!(
                    "webhooks[{i}]: `{u}` is not an http:// or https:// URL"
                )));
            }
        }
        if let Some(e) = &c.email {
            for (k, a) in std::iter::once(("from", &e.from)).chain(e.to.iter().map(|t| ("to", t))) {
                if a.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(invalid(format!(
                        "email.{k}: `{a}` is not an email address (write `name@example.org` or `Name <name@example.org>`)"
                    )));
                }
            }
            if e.to.is_empty() {
                return Err(invalid(
                    "email.to is empty: list at least one recipient".into(),
                ));
            }
            if e.username.is_some() != e.password_file.is_some() {
                return Err(invalid(
                    "email: give both username and password_file, or neither".into(),
                ));
            }
            if let Some(p) = &e.password_file
                && !p.is_file()
            {
                return Err(invalid(format!(
                    "email.password_file: `{}` is not a readable file",
                    p.display()
                )));
            }
        }
        if let Some(cs) = &c.commit_status {
            let bad_url = |u: &str| {
                reqwest::Url::parse(u)
                    .ok()
                    .is_none_or(|url| !matches!(url.scheme(), "http" | "https"))
            };
            if bad_url(&cs.api_url) {
                return Err(invalid(format!(
                    "commit_status.api_url: `{}` is not an http:// or https:// URL",
                    cs.api_url
                )));
            }
            if let Some(t) = &cs.target_url
                && bad_url(t)
            {
                return Err(invalid(format!(
                    "commit_status.target_url: `{t}` is not an http:// or https:// URL"
                )));
            }
            let parts: Vec<&str> = cs.repository.split('/').collect();
            let ok = match cs.kind {
                GitHost::Github | GitHost::Gitea => {
                    parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
                }
                GitHost::Gitlab => parts.iter().all(|p| !p.is_empty()),
            };
            if !ok {
                return Err(invalid(format!(
                    "commit_status.repository: `{}` is not owner/name",
                    cs.repository
                )));
            }
            if !cs.token_file.is_file() {
                return Err(invalid(format!(
                    "commit_status.token_file: `{}` is not a readable file",
                    cs.token_file.display()
                )));
            }
        }
        if let Some(at) = &c.digest_at {
            if c.digest_time().is_none() {
                return Err(invalid(format!(
                    "digest_at: `{at}` is not a time of day: write HH:MM, e.g. \"08:00\""
                )));
            }
            if c.webhooks.is_empty() && c.email.is_none() {
                return Err(invalid(
                    "digest_at is set but there is nowhere to send the digest: add webhooks or an [email] section".into(),
                ));
            }
        }
        if c.alerts_interval.as_secs() == 0 {
            return Err(invalid("alerts_interval must be at least 1s".into()));
        }
        if c.history_full_resolution.is_some() || c.history_bucket.is_some() {
            return Err(invalid(
                "history_full_resolution and history_bucket were replaced by history_tiers: write e.g. history_tiers = [{ after = \"48h\", bucket = \"5m\" }, { after = \"30d\", bucket = \"1h\" }]".into(),
            ));
        }
        check_tiers(&c.history_tiers, c.history_retention).map_err(|e| invalid(e.to_string()))?;
        c.enrollment.check().map_err(|e| invalid(e.to_string()))?;
        Ok(c)
    }

    /// The digest's time of day.
    pub fn digest_time(&self) -> Option<jiff::civil::Time> {
        let at = self.digest_at.as_deref()?;
        let (h, m) = at.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        jiff::civil::Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
    }

    /// The commit signers as trusted keys.
    pub fn commit_signers(&self) -> Option<TrustedKeys> {
        if self.allowed_commit_signers.is_empty() {
            return None;
        }
        TrustedKeys::parse(&self.allowed_commit_signers.join("\n")).ok()
    }

    /// The operator whose token hashes to `hash`.
    pub fn operator(&self, hash: &TokenHash) -> Option<&Operator> {
        self.operators
            .iter()
            .find(|o| TokenHash::from_hex(&o.token_sha256).is_some_and(|h| h.matches(hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_settings_are_checked() {
        let ok = Config::parse(
            "[enrollment]\npublic_url = \"https://touchline.example.org\"\nttl = \"2h\"\n[enrollment.agent]\nvideos_dir = \"/srv/v\"\nservices = [\"a\"]\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(ok.enrollment.ttl.as_secs(), 7200);
        assert_eq!(
            ok.enrollment.agent_settings()["services"],
            serde_json::json!(["a"])
        );
        for (text, want) in [
            // Written into install.sh: nothing a shell would read.
            (
                "public_url = \"https://x.org/$(reboot)\"",
                "is not an http:// or https:// URL",
            ),
            (
                "public_url = \"https://x.org/\\n;reboot\"",
                "is not an http:// or https:// URL",
            ),
            (
                "public_url = \"ftp://x.org\"",
                "is not an http:// or https:// URL",
            ),
            ("ttl = \"60d\"", "between 1s and 30d"),
            (
                "[enrollment.agent]\ntoken = \"t\"",
                "a box's identity comes from its enrollment",
            ),
            (
                "[enrollment.agent]\nlimits = { a = 1 }",
                "a string, a whole number or a list of strings",
            ),
        ] {
            let e = Config::parse(&format!("[enrollment]\n{text}\n"), "c.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse("", "c.toml").unwrap();
        assert_eq!(c.sync_interval.as_secs(), 30);
        let err = Config::parse("sync_intervall = \"5s\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid config file `c.toml`:") && err.contains("sync_intervall"),
            "{err}"
        );
        let err = Config::parse("sync_interval = \"5 minutes\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
        let err = Config::parse(
            "[[operators]]\nname = \"a\"\nrole = \"admin\"\ntoken_sha256 = \"xyz\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("operators[0] (a): token_sha256 must be 64 hex digits"),
            "{err}"
        );
        let err = Config::parse("require_signed_commits = true\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_commit_signers is empty"), "{err}");
        let err = Config::parse(
            "[[operators]]\nname = \"a\"\nrole = \"root\"\ntoken_sha256 = \"00\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `root`"), "{err}");
        assert_eq!(c.history_retention.as_secs(), 365 * 86_400);
        assert_eq!(
            c.history_tiers
                .iter()
                .map(|t| (t.after.as_secs(), t.bucket.as_secs()))
                .collect::<Vec<_>>(),
            [(48 * 3600, 300), (30 * 86_400, 3600)]
        );
        for (text, want) in [
            (
                "history_bucket = \"1h\"\n",
                "history_full_resolution and history_bucket were replaced by history_tiers",
            ),
            (
                "history_tiers = [{ after = \"1h\", bucket = \"10s\" }]\n",
                "history_tiers[0].bucket is 10s: it must be at least 1m",
            ),
            (
                "history_tiers = [{ after = \"1d\", bucket = \"5m\" }, { after = \"2d\", bucket = \"7m\" }]\n",
                "history_tiers[1].bucket (7m) must be a whole multiple of history_tiers[0].bucket (5m)",
            ),
            (
                "history_tiers = [{ after = \"30d\", bucket = \"1h\" }, { after = \"2d\", bucket = \"5m\" }]\n",
                "history_tiers[1] (2d / 5m) must come after and be coarser than history_tiers[0] (30d / 1h)",
            ),
            (
                "history_retention = \"7d\"\nhistory_tiers = [{ after = \"30d\", bucket = \"1h\" }]\n",
                "history_tiers[0].after is 30d, not shorter than history_retention (7d)",
            ),
            (
                "history_tiers = [{ after = \"1d\", every = \"5m\" }]\n",
                "unknown field `every`",
            ),
        ] {
            let err = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        for (text, want) in [
            (
                "webhooks = [\"http://127.0.0.1:9/h\"]\ndigest_at = \"8h\"\n",
                "digest_at: `8h` is not a time of day: write HH:MM",
            ),
            (
                "webhooks = [\"http://127.0.0.1:9/h\"]\ndigest_at = \"24:00\"\n",
                "digest_at: `24:00` is not a time of day",
            ),
            (
                "digest_at = \"08:00\"\n",
                "digest_at is set but there is nowhere to send the digest",
            ),
        ] {
            let err = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let c = Config::parse(
            "webhooks = [\"http://127.0.0.1:9/h\"]\ndigest_at = \"07:30\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.digest_time(), Some(jiff::civil::time(7, 30, 0, 0)));
        let c = Config::parse("history_tiers = []\n", "c.toml").unwrap();
        assert!(c.history_tiers.is_empty(), "no tiers: every point kept");
    }
}
