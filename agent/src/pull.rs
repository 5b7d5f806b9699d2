//! Talking to the controller: the bundle (conditional, long-poll), its
//! signature, and report batches. Every response body is read with a cap.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use touchline_schemas::SiteId;
use touchline_schemas::action::{ActionUpdate, Inbox, MAX_INBOX, MAX_INBOX_BYTES, PENDING_HEADER};
use touchline_schemas::bundle::MAX_BUNDLE_BYTES;
use touchline_schemas::report::{REPORT_FORMAT, Report, ReportBatch};
use touchline_schemas::sign::MAX_SIGNATURE_BYTES;

use crate::fetch::error_text;

/// The controller endpoint of one site.
#[derive(Debug, Clone)]
pub struct Controller {
    /// HTTP client (timeouts set).
    pub client: reqwest::Client,
    /// Base URL, no trailing slash.
    pub base: String,
    /// This site.
    pub site: SiteId,
    /// Site token.
    pub token: String,
    /// The report epoch ([`crate::state::State::report_epoch`]).
    pub epoch: Option<String>,
    /// Total time an API request may take (beyond a long-poll's wait):
    /// the configured `connect_timeout + read_timeout`. On a cut link a
    /// request gets no answer at all; this is how long a report waits
    /// before it is queued.
    pub timeout: Duration,
}

/// The answer to a bundle poll.
#[derive(Debug)]
pub enum Pulled {
    /// Same ETag.
    NotModified,
    /// A new bundle and its signature (not verified yet).
    New {
        /// Bundle bytes.
        body: Vec<u8>,
        /// Armored signature.
        signature: Vec<u8>,
    },
}

/// A poll's answer.
#[derive(Debug)]
pub struct Answer {
    /// The bundle, or not modified.
    pub pulled: Pulled,
    /// `controller clock - box clock`.
    pub offset: Option<SignedDuration>,
    /// Remote actions waiting for the box (the pending header).
    pub actions: usize,
}

fn pending_actions(headers: &HeaderMap) -> usize {
    headers
        .get(PENDING_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_INBOX)
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Unreachable, timeout, 5xx: retry with backoff.
    #[error("controller unreachable: {message}")]
    Unreachable {
        /// What happened.
        message: String,
        /// `Retry-After`, when the controller sent one.
        retry_after: Option<Duration>,
    },
    /// A 4xx: retrying will not help until someone acts.
    #[error("controller refused the request: {0}")]
    Refused(String),
    /// A body over its cap.
    #[error("{what} is over {limit} bytes")]
    TooLarge {
        /// Which body.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
}

/// `controller clock - box clock` from a `Date` header.
pub fn clock_offset(headers: &HeaderMap, box_now: Timestamp) -> Option<SignedDuration> {
    let date = headers.get(header::DATE)?.to_str().ok()?;
    let t = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(date)
        .ok()?;
    Some(t.duration_since(box_now))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

fn classify(status: StatusCode, headers: &HeaderMap, what: &str) -> PullError {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        PullError::Unreachable {
            message: format!("{what}: HTTP {status}"),
            retry_after: retry_after(headers),
        }
    } else {
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                " (the site token was not accepted: mint one with `touchline site token`)"
            }
            StatusCode::FORBIDDEN => " (the token belongs to another site: check site_id)",
            StatusCode::NOT_FOUND => " (the controller does not know this site_id)",
            _ => "",
        };
        PullError::Refused(format!("{what}: HTTP {status}{hint}"))
    }
}

fn unreachable(e: &reqwest::Error) -> PullError {
    PullError::Unreachable {
        message: error_text(e),
        retry_after: None,
    }
}

async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, PullError> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(PullError::TooLarge { what, limit });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(&e))? {
        if out.len() + chunk.len() > limit {
            return Err(PullError::TooLarge { what, limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Controller {
    fn url(&self, tail: &str) -> String {
        format!("{}/v1/sites/{}/{tail}", self.base, self.site)
    }

    /// `GET url` with the site token, bounded by the API timeout.
    async fn get(&self, url: &str) -> Result<reqwest::Response, PullError> {
        self.client
            .get(url)
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unreachable(&e))
    }

    /// The content URL of a hash.
    pub fn content_url(&self, hex: &str) -> String {
        format!("{}/v1/content/{hex}", self.base)
    }

    /// Polls the bundle. `etag` is the one of the accepted bundle; `wait`
    /// long-polls. Returns the answer and the controller's clock offset.
    pub async fn pull(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
        box_now: Timestamp,
    ) -> Result<Answer, PullError> {
        // `actions=1`: this agent takes remote actions, so one queued for it
        // ends the long-poll at once.
        let url = match wait {
            Some(w) => format!("{}?wait={}&actions=1", self.url("bundle"), w.as_secs()),
            None => format!("{}?actions=1", self.url("bundle")),
        };
        let mut req = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .timeout(wait.unwrap_or_default() + self.timeout);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        let resp = req.send().await.map_err(|e| unreachable(&e))?;
        let offset = clock_offset(resp.headers(), box_now);
        let actions = pending_actions(resp.headers());
        let answer = |pulled| Answer {
            pulled,
            offset,
            actions,
        };
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(answer(Pulled::NotModified)),
            StatusCode::OK => {}
            s => return Err(classify(s, resp.headers(), "bundle")),
        }
        let body_etag = resp.headers().get(header::ETAG).cloned();
        let body = read_capped(resp, MAX_BUNDLE_BYTES, "bundle").await?;
        let resp = self.get(&self.url("bundle.sig")).await?;
        if resp.status() != StatusCode::OK {
            return Err(classify(resp.status(), resp.headers(), "bundle signature"));
        }
        if body_etag.is_some() && resp.headers().get(header::ETAG) != body_etag.as_ref() {
            // A new bundle was published between the two requests.
            return Err(PullError::Unreachable {
                message: "bundle changed while its signature was fetched".into(),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        let signature = read_capped(resp, MAX_SIGNATURE_BYTES, "signature").await?;
        Ok(answer(Pulled::New { body, signature }))
    }

    /// The remote actions waiting for this box (not verified yet).
    pub async fn inbox(&self) -> Result<Inbox, PullError> {
        let resp = self.get(&self.url("actions")).await?;
        if resp.status() != StatusCode::OK {
            return Err(classify(resp.status(), resp.headers(), "actions"));
        }
        let body = read_capped(resp, MAX_INBOX_BYTES, "actions").await?;
        serde_json::from_slice(&body)
            .map_err(|e| PullError::Refused(format!("the actions answer does not read: {e}")))
    }

    /// Posts an update on an action, gzip-compressed when it carries
    /// output. `Ok(false)`: the controller will never take it (an action it
    /// does not know, or a state it has passed): do not retry.
    pub async fn post_action(&self, id: &str, update: &ActionUpdate) -> Result<bool, PullError> {
        let json = serde_json::to_vec(update).unwrap_or_default();
        let mut req = self
            .client
            .post(self.url(&format!("actions/{id}")))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, "application/json");
        req = if json.len() > 1024 {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let body = gz.write_all(&json).and_then(|()| gz.finish());
            match body {
                Ok(b) => req.header(header::CONTENT_ENCODING, "gzip").body(b),
                Err(_) => req.body(json),
            }
        } else {
            req.body(json)
        };
        let resp = req.send().await.map_err(|e| unreachable(&e))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::CONFLICT => Ok(false),
            s => Err(classify(s, resp.headers(), "action update")),
        }
    }

    /// Sends a batch of reports; `Ok` only on a 2xx (stored durably).
    pub async fn send_reports(&self, reports: &[Report]) -> Result<(), PullError> {
        let batch = ReportBatch {
            format: REPORT_FORMAT,
            site: self.site.clone(),
            epoch: self.epoch.clone(),
            reports: reports.to_vec(),
        };
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        let resp = self
            .client
            .post(self.url("reports"))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(classify(resp.status(), resp.headers(), "reports"))
        }
    }
}

/// Jittered exponential backoff from 1 s to 5 min.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt after one more failure;
    /// `Retry-After` wins when longer.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = 1u64 << self.failures.saturating_sub(1).min(9);
        let cap = base.min(300);
        // Full jitter in [cap/2, cap].
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        let frac = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
        #[allow(clippy::cast_precision_loss)]
        let d = Duration::from_secs_f64(cap as f64 * (0.5 + frac / 2.0));
        d.max(retry_after.unwrap_or_default())
    }

    /// A success resets it.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_five_minutes_and_honours_retry_after() {
        let mut b = Backoff::default();
        let first = b.next(None);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..20 {
            let d = b.next(None);
            assert!(d <= Duration::from_secs(300));
        }
        assert!(b.next(None) >= Duration::from_secs(150));
        assert_eq!(
            b.next(Some(Duration::from_secs(3000))),
            Duration::from_secs(3000)
        );
        b.reset();
        assert!(b.next(None) <= Duration::from_secs(1));
    }

    #[test]
    fn the_date_header_gives_the_controller_clock() {
        let mut h = HeaderMap::new();
        h.insert(
            header::DATE,
            "Sun, 22 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        let box_now: Timestamp = "2031-01-01T00:00:00Z".parse().unwrap();
        let off = clock_offset(&h, box_now).unwrap();
        assert_eq!(
            box_now.checked_add(off).unwrap(),
            "2026-11-22T12:00:00Z".parse::<Timestamp>().unwrap()
        );
    }
}
