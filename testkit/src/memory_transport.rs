//! A fake content [`Transport`]: bodies served from memory by source name,
//! with `If-Range` honoured (a matching validator resumes at the offset),
//! an optional cut of the next body after N bytes, and a record of every
//! open. The content store's resume, size and hash logic is tested against
//! it without a socket.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use touchline_agent::host::BoxFuture;
use touchline_agent::transport::{Body, Opened, Source, Transport, TransportError};

/// What one open asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCall {
    /// The source's name (URL or path).
    pub source: String,
    /// The offset asked for.
    pub from: u64,
    /// The validator sent with it.
    pub validator: Option<String>,
}

/// A body and its validator.
#[derive(Debug, Clone)]
struct Served {
    bytes: Vec<u8>,
    validator: Option<String>,
}

/// Serves bytes from memory.
#[derive(Debug, Default)]
pub struct MemoryTransport {
    bodies: Mutex<BTreeMap<String, Served>>,
    cut_next: Mutex<Option<usize>>,
    opens: Mutex<Vec<OpenCall>>,
}

impl MemoryTransport {
    /// Serves `bytes` as `name` with a strong `validator` (`None`: none).
    pub fn serve(&self, name: &str, bytes: Vec<u8>, validator: Option<&str>) -> &Self {
        self.bodies.lock().expect("transport lock").insert(
            name.to_owned(),
            Served {
                bytes,
                validator: validator.map(str::to_owned),
            },
        );
        self
    }

    /// The next body fails after `n` more bytes (a cut connection).
    pub fn cut_next_after(&self, n: usize) -> &Self {
        *self.cut_next.lock().expect("transport lock") = Some(n);
        self
    }

    /// Every open so far.
    pub fn opens(&self) -> Vec<OpenCall> {
        self.opens.lock().expect("transport lock").clone()
    }
}

impl Transport for MemoryTransport {
    fn open<'a>(
        &'a self,
        source: &'a Source,
        from: u64,
        validator: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Opened, TransportError>> {
        let name = source.name();
        self.opens.lock().expect("transport lock").push(OpenCall {
            source: name.clone(),
            from,
            validator: validator.map(str::to_owned),
        });
        let served = self
            .bodies
            .lock()
            .expect("transport lock")
            .get(&name)
            .cloned();
        let cut = self.cut_next.lock().expect("transport lock").take();
        Box::pin(async move {
            let Served {
                bytes,
                validator: served_validator,
            } = served.ok_or_else(|| TransportError::Status("404 Not Found".into()))?;
            let resumed =
                from > 0 && validator.is_some() && validator == served_validator.as_deref();
            let start = if resumed { from } else { 0 };
            let from =
                usize::try_from(start).map_err(|e| TransportError::Request(e.to_string()))?;
            let rest = bytes[from..].to_vec();
            Ok(Opened {
                start,
                length: Some(rest.len() as u64),
                validator: served_validator,
                remote: true,
                body: Box::new(MemoryBody {
                    rest: Bytes::from(rest),
                    cut,
                }),
            })
        })
    }
}

struct MemoryBody {
    rest: Bytes,
    cut: Option<usize>,
}

/// Bytes per chunk.
const CHUNK: usize = 64 * 1024;

impl Body for MemoryBody {
    fn chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, TransportError>> {
        let next = match self.cut {
            Some(0) => Err(TransportError::Request("connection reset by peer".into())),
            _ if self.rest.is_empty() => Ok(None),
            cut => {
                let n = CHUNK.min(self.rest.len()).min(cut.unwrap_or(usize::MAX));
                if let Some(c) = self.cut.as_mut() {
                    *c -= n;
                }
                Ok(Some(self.rest.split_to(n)))
            }
        };
        Box::pin(async move { next })
    }
}
