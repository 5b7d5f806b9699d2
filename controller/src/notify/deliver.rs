//! Delivery of the outbox: each item due goes out through a [`Sender`]
//! ([`NetSender`]: webhooks over HTTP, email over SMTP with lettre); a
//! failure keeps the item with its next attempt pushed back (1 s, 2 s, 4 s…
//! up to an hour). An item leaves the outbox only once its receiver took it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::config::{CommitStatus, Email, EmailTls};
use crate::fleet::{Fleet, error_chain};
use crate::outbox::{OutboxId, Outgoing, Target};
use crate::store::{Bookkeeping, StoreError};

/// Longest wait between two attempts of one notification.
const MAX_BACKOFF: SignedDuration = SignedDuration::from_secs(3600);

/// A boxed future (the trait is used as `dyn Sender`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a notification was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The receiver answered with an error status.
    #[error("HTTP {0}")]
    Status(u16),
    /// The request or the SMTP session failed.
    #[error("{0}")]
    Transport(String),
    /// The email could not be built (an address, the password file).
    #[error("{0}")]
    Message(String),
    /// Email is not configured (any more).
    #[error("email is not configured")]
    NoEmail,
    /// Commit statuses are not configured (any more).
    #[error("commit statuses are not configured")]
    NoCommitStatus,
}

/// Sends one notification.
pub trait Sender: Send + Sync {
    /// Delivers `target`; `Ok` once the receiver took it.
    fn send<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SendError>>;
    /// Where `target` goes, for logs (`https://…`, `smtp://host:port`).
    fn describe(&self, target: &Target) -> String;
}

/// Webhooks with reqwest, email with lettre.
#[derive(Debug, Clone)]
pub struct NetSender {
    client: reqwest::Client,
    email: Option<Email>,
    commit_status: Option<CommitStatus>,
}

impl NetSender {
    /// With `client` for webhooks and the configured SMTP server.
    pub fn new(client: reqwest::Client, email: Option<Email>) -> Self {
        Self {
            client,
            email,
            commit_status: None,
        }
    }

    /// Also sends commit statuses to `cfg`'s git host.
    pub fn with_commit_status(mut self, cfg: Option<CommitStatus>) -> Self {
        self.commit_status = cfg;
        self
    }
}

/// POSTs one commit status; the token is read from its file at each send.
async fn send_status(
    client: &reqwest::Client,
    cfg: &CommitStatus,
    commit: &str,
    state: crate::outbox::StatusState,
    description: &str,
) -> Result<(), SendError> {
    let token = std::fs::read_to_string(&cfg.token_file).map_err(|e| {
        SendError::Message(format!("cannot read `{}`: {e}", cfg.token_file.display()))
    })?;
    let (url, headers, body) =
        crate::commit_status::request(cfg, token.trim(), commit, state, description);
    let mut req = client
        .post(&url)
        .json(&body)
        .timeout(std::time::Duration::from_secs(10));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(SendError::Status(r.status().as_u16())),
        Err(e) => Err(SendError::Transport(error_chain(&e))),
    }
}

impl Sender for NetSender {
    fn send<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            match target {
                Target::Webhook { url, body } => {
                    let sent = self
                        .client
                        .post(url)
                        .json(body)
                        .timeout(std::time::Duration::from_secs(10))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(SendError::Status(r.status().as_u16())),
                        Err(e) => Err(SendError::Transport(error_chain(&e))),
                    }
                }
                Target::Email {
                    subject,
                    text,
                    html,
                } => match &self.email {
                    Some(cfg) => send_email(cfg, subject, text, html).await,
                    None => Err(SendError::NoEmail),
                },
                Target::CommitStatus {
                    commit,
                    state,
                    description,
                } => match &self.commit_status {
                    Some(cfg) => send_status(&self.client, cfg, commit, *state, description).await,
                    None => Err(SendError::NoCommitStatus),
                },
            }
        })
    }

    fn describe(&self, target: &Target) -> String {
        match (target, &self.email) {
            (Target::Webhook { url, .. }, _) => url.clone(),
            (Target::Email { .. }, Some(cfg)) => format!("smtp://{}:{}", cfg.smtp_host, cfg.port()),
            (Target::Email { .. }, None) => "email".into(),
            (Target::CommitStatus { commit, .. }, _) => match &self.commit_status {
                Some(cfg) => format!("{} status of {commit}", cfg.api_url),
                None => format!("status of {commit}"),
            },
        }
    }
}

/// Sends one email with the configured SMTP server.
async fn send_email(cfg: &Email, subject: &str, text: &str, html: &str) -> Result<(), SendError> {
    use lettre::message::{Mailbox, MultiPart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let parse = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| SendError::Message(format!("`{a}`: {e}")))
    };
    let mut b = Message::builder().from(parse(&cfg.from)?).subject(subject);
    for t in &cfg.to {
        b = b.to(parse(t)?);
    }
    let msg = b
        .multipart(MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))
        .map_err(|e| SendError::Message(e.to_string()))?;
    let host = cfg.smtp_host.as_str();
    let relay_err = |e: lettre::transport::smtp::Error| SendError::Transport(error_chain(&e));
    let builder = match cfg.tls {
        EmailTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(relay_err)?
        }
        EmailTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(relay_err)?,
        EmailTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
    };
    let mut builder = builder
        .port(cfg.port())
        .timeout(Some(std::time::Duration::from_secs(20)));
    if let (Some(user), Some(pf)) = (&cfg.username, &cfg.password_file) {
        let password = std::fs::read_to_string(pf)
            .map_err(|e| SendError::Message(format!("cannot read `{}`: {e}", pf.display())))?;
        builder = builder.credentials(Credentials::new(user.clone(), password.trim().to_owned()));
    }
    builder
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(relay_err)
}

/// Sends the outbox items due at `now`, one by one; returns how many were
/// delivered. A failure is kept with the next attempt pushed back.
pub async fn deliver(fleet: &Arc<Fleet>, sender: &dyn Sender, now: Timestamp) -> usize {
    let f = fleet.clone();
    let items = match tokio::task::spawn_blocking(move || f.store.outbox()).await {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return 0;
        }
        Err(_) => return 0,
    };
    let mut delivered = 0;
    for (id, item) in items {
        let mut item = match item {
            Ok(item) => item,
            // Logged by the store; kept for an operator to look at.
            Err(_) => continue,
        };
        if item.next_at > now {
            continue;
        }
        if (matches!(item.target, Target::Email { .. }) && fleet.config.email.is_none())
            || (matches!(item.target, Target::CommitStatus { .. })
                && fleet.config.commit_status.is_none())
        {
            // Email or statuses were switched off since: drop it.
            let _ = write(fleet, id, None).await;
            continue;
        }
        match sender.send(&item.target).await {
            Ok(()) => {
                delivered += 1;
                let _ = write(fleet, id, None).await;
            }
            Err(e) => {
                item.attempts += 1;
                let wait =
                    SignedDuration::from_secs(1i64 << item.attempts.min(12)).min(MAX_BACKOFF);
                item.next_at = now.saturating_add(wait).unwrap_or(now);
                tracing::warn!(
                    to = %sender.describe(&item.target),
                    attempts = item.attempts,
                    error = %e,
                    "notification failed; retrying later"
                );
                item.last_error = Some(e.to_string());
                let _ = write(fleet, id, Some(item)).await;
            }
        }
    }
    delivered
}

/// Replaces (`Some`) or removes (`None`) one outbox item.
async fn write(fleet: &Arc<Fleet>, id: OutboxId, item: Option<Outgoing>) -> Result<(), StoreError> {
    let f = fleet.clone();
    let r = tokio::task::spawn_blocking(move || {
        f.store.write_bookkeeping(Bookkeeping {
            outbox: vec![(id, item)],
            ..Bookkeeping::default()
        })
    })
    .await;
    match r {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "outbox write stopped");
            Ok(())
        }
    }
}
