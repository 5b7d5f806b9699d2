//! A recording reverse proxy in front of a real controller, on
//! `127.0.0.1:0`: it forwards every request (one per connection, answered
//! with `Connection: close`) and records what went through, so a test can
//! assert what a box sent and in which requests. Switched [`down`], it
//! drops each connection unanswered: the controller is out of reach for
//! the box, and nothing else.
//!
//! [`down`]: RecordingProxy::set_down

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One request forwarded, with the controller's answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Vec<u8>,
}

/// A running proxy; stops taking connections when dropped.
#[derive(Debug)]
pub struct RecordingProxy {
    /// The base URL boxes are pointed at.
    pub url: String,
    seen: Arc<Mutex<Vec<Exchange>>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl RecordingProxy {
    /// Forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, down2, stop2) = (seen.clone(), down.clone(), stop.clone());
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("building the proxy's client");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(s) = conn else { continue };
                if down2.load(Ordering::SeqCst) {
                    drop(s);
                    continue;
                }
                let (seen, client, upstream) = (seen2.clone(), client.clone(), upstream.clone());
                std::thread::spawn(move || forward(s, &client, &upstream, &seen));
            }
        });
        Self {
            url,
            seen,
            down,
            stop,
        }
    }

    /// Out of reach (`true`) or reachable again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every exchange so far, in the order the answers came back.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.seen.lock().expect("proxy lock").clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Reads one request, forwards it, writes the answer back and records it.
fn forward(
    mut s: TcpStream,
    client: &reqwest::blocking::Client,
    upstream: &str,
    seen: &Mutex<Vec<Exchange>>,
) {
    let head = crate::mirrors::read_head(&mut s);
    if !head.ends_with(b"\r\n\r\n") {
        return;
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (
        request.next().unwrap_or("GET").to_owned(),
        request.next().unwrap_or("/").to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if s.read_exact(&mut body).is_err() {
        return;
    }
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut req = client
        .request(m, format!("{upstream}{path}"))
        .body(body.clone());
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            req = req.header(k, v);
        }
    }
    // The controller down: the box sees its connection dropped.
    let Ok(resp) = req.send() else { return };
    let status = resp.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in resp.headers() {
        if !matches!(
            k.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
        }
    }
    let Ok(answer) = resp.bytes() else { return };
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    ));
    seen.lock().expect("proxy lock").push(Exchange {
        method,
        path,
        status: status.as_u16(),
        body,
    });
    let _ = s.write_all(out.as_bytes());
    let _ = s.write_all(&answer);
}
