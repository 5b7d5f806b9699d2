//! Where content bytes come from, behind a small trait (tough's
//! `Transport`): [`Transport::open`] a [`Source`] from a byte offset and
//! read its body chunk by chunk. [`ContentTransport`] is the real one:
//! HTTP(S) with `Range` + `If-Range` through reqwest, and files of a bundle
//! directory (a USB stick). Sizes, hashes, checkpoints, the rate cap and
//! the watchdog are the content store's business (`fetch.rs`), the same
//! for every transport; tests use an in-memory fake (`touchline-testkit`).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;

use crate::host::BoxFuture;

/// Where a file can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `GET <url>` with an optional bearer token.
    Http {
        /// The URL.
        url: String,
        /// Bearer token (the controller's content endpoint).
        token: Option<String>,
    },
    /// A local file (a bundle directory on a USB stick).
    File(PathBuf),
}

impl Source {
    /// How errors name it: the URL or the path.
    pub fn name(&self) -> String {
        match self {
            Self::Http { url, .. } => url.clone(),
            Self::File(p) => p.display().to_string(),
        }
    }
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The server answered with another status than 200 (or 206 for a
    /// resume).
    #[error("HTTP {0}")]
    Status(String),
    /// The request or the body failed (connect, TLS, timeout, reset…), with
    /// its causes on one line.
    #[error("{0}")]
    Request(String),
    /// A local file cannot be read.
    #[error("{0}")]
    File(#[from] std::io::Error),
}

/// A body being read.
pub trait Body: Send {
    /// The next chunk; `None` at the end.
    fn chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, TransportError>>;
}

/// An opened source.
pub struct Opened {
    /// The byte the body starts at: the offset asked for when the source
    /// resumed, else 0.
    pub start: u64,
    /// The body's length, when the source announced it.
    pub length: Option<u64>,
    /// A strong validator (`ETag`, `Last-Modified`) to resume with later.
    pub validator: Option<String>,
    /// A network source: the rate cap and the throughput watchdog apply.
    pub remote: bool,
    /// The bytes.
    pub body: Box<dyn Body>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("start", &self.start)
            .field("length", &self.length)
            .field("validator", &self.validator)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Opens sources.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Opens `source` at byte `from` when `validator` says the bytes before
    /// it are still the same ones (`If-Range`); else from the start.
    fn open<'a>(
        &'a self,
        source: &'a Source,
        from: u64,
        validator: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Opened, TransportError>>;
}

/// HTTP(S) through reqwest, and local files.
#[derive(Debug, Clone)]
pub struct ContentTransport {
    client: reqwest::Client,
}

impl ContentTransport {
    /// Over `client` (its timeouts apply).
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

impl Transport for ContentTransport {
    fn open<'a>(
        &'a self,
        source: &'a Source,
        from: u64,
        validator: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Opened, TransportError>> {
        Box::pin(async move {
            match source {
                Source::Http { url, token } => {
                    open_http(&self.client, url, token.as_deref(), from, validator).await
                }
                Source::File(path) => open_file(path),
            }
        })
    }
}

async fn open_http(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    from: u64,
    validator: Option<&str>,
) -> Result<Opened, TransportError> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if from > 0
        && let Some(v) = validator
    {
        req = req
            .header(reqwest::header::RANGE, format!("bytes={from}-"))
            .header(reqwest::header::IF_RANGE, v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| TransportError::Request(error_text(&e)))?;
    let status = resp.status();
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT
        && from > 0
        && resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&format!("bytes {from}-")));
    if !resumed && status != reqwest::StatusCode::OK {
        return Err(TransportError::Status(status.to_string()));
    }
    let validator = resp
        .headers()
        .get(reqwest::header::ETAG)
        .or_else(|| resp.headers().get(reqwest::header::LAST_MODIFIED))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.starts_with("W/"))
        .map(str::to_owned);
    Ok(Opened {
        start: if resumed { from } else { 0 },
        length: resp.content_length(),
        validator,
        remote: true,
        body: Box::new(HttpBody(resp)),
    })
}

struct HttpBody(reqwest::Response);

impl Body for HttpBody {
    fn chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, TransportError>> {
        Box::pin(async move {
            self.0
                .chunk()
                .await
                .map_err(|e| TransportError::Request(error_text(&e)))
        })
    }
}

/// A file is read from its start (a USB stick is fast; nothing to resume).
fn open_file(path: &std::path::Path) -> Result<Opened, TransportError> {
    let file = File::open(path)?;
    Ok(Opened {
        start: 0,
        length: None,
        validator: None,
        remote: false,
        body: Box::new(FileBody(file)),
    })
}

struct FileBody(File);

/// Bytes read from a file per chunk.
const FILE_CHUNK: usize = 1024 * 1024;

impl Body for FileBody {
    fn chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, TransportError>> {
        let mut buf = vec![0u8; FILE_CHUNK];
        let r = self.0.read(&mut buf).map_err(TransportError::from);
        Box::pin(async move {
            let n = r?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some(Bytes::from(buf)))
        })
    }
}

/// The error and its causes on one line (reqwest hides the cause).
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
