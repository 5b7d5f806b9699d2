//! Content mirrors that misbehave, on a raw socket on purpose (a real HTTP
//! server would not misbehave this way): each listens on `127.0.0.1:0`,
//! serves from a thread and returns its base URL.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use touchline_schemas::Sha256;

/// Reads a request's head (up to the blank line), byte by byte; what came
/// before the connection ended when it ends first.
pub(crate) fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        req.push(b[0]);
    }
    req
}

/// A hostile mirror: `/wrong/<h>` right length, wrong bytes;
/// `/endless/<h>` no length, never ends; `/liar/<h>` a false
/// Content-Length; `/tarpit/<h>` one byte a second.
pub fn hostile_mirror(good: Vec<u8>) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut s) = conn else { continue };
            let good = good.clone();
            std::thread::spawn(move || {
                let req = read_head(&mut s);
                let line = String::from_utf8_lossy(&req).to_string();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let n = good.len();
                if path.starts_with("/wrong/") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(&vec![b'x'; n]);
                } else if path.starts_with("/endless/") {
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                    while s.write_all(&[b'y'; 4096]).is_ok() {}
                } else if path.starts_with("/liar/") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        n * 10
                    );
                    let _ = s.write_all(&good);
                } else if path.starts_with("/tarpit/") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    for byte in &good {
                        if s.write_all(&[*byte]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(700));
                    }
                }
            });
        }
    });
    (url, stop)
}

/// A mirror with ETag and Range support whose first answer breaks off
/// after `cut` bytes. Records the `Range` / `If-Range` of each request.
pub fn cutting_mirror(good: Vec<u8>, cut: usize) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            let req = read_head(&mut s);
            let text = String::from_utf8_lossy(&req).to_lowercase();
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let range = header("range:");
            let if_range = header("if-range:");
            seen2
                .lock()
                .unwrap()
                .push(format!("{range:?} {if_range:?}"));
            let len = good.len();
            match (range, if_range.as_deref()) {
                (Some(r), Some("\"v1\"")) => {
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    let _ = write!(
                        s,
                        "HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        len - 1,
                        len - from
                    );
                    let _ = s.write_all(&good[from..]);
                }
                _ => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let end = if n == 0 { cut } else { len };
                    let _ = s.write_all(&good[..end]);
                }
            }
        }
    });
    (url, seen)
}

/// A mirror that sends the first `first` bytes of its first answer, then
/// waits for `go` before sending the rest; later answers are whole.
pub fn gated_mirror(good: Vec<u8>, first: usize) -> (String, Arc<AtomicBool>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (reached, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (reached2, go2) = (reached.clone(), go.clone());
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            read_head(&mut s);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                good.len()
            );
            if n == 0 {
                let _ = s.write_all(&good[..first]);
                let _ = s.flush();
                reached2.store(true, Ordering::SeqCst);
                while !go2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = s.write_all(&good[first..]);
            } else {
                let _ = s.write_all(&good);
            }
        }
    });
    (url, reached, go)
}

/// A mirror of `files` (served at `/<sha256>`, with an ETag and `Range`
/// support) that sends 64 KB every `pause`: downloads take a while.
pub fn slow_mirror(files: Vec<Vec<u8>>, pause: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let files: Arc<BTreeMap<String, Vec<u8>>> = Arc::new(
        files
            .into_iter()
            .map(|b| (Sha256::digest(&b).to_hex(), b))
            .collect(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let req = read_head(&mut s);
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/");
                let Some(body) = files.get(path.trim_start_matches('/')) else {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let from = text
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("range: bytes=")
                            .map(str::to_owned)
                    })
                    .and_then(|r| r.trim_end_matches('-').trim().parse::<usize>().ok())
                    .filter(|_| text.to_lowercase().contains("if-range: \"x\""))
                    .unwrap_or(0);
                let len = body.len();
                let head = if from > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\n",
                        len - 1
                    )
                } else {
                    "HTTP/1.1 200 OK\r\n".to_owned()
                };
                let _ = write!(
                    s,
                    "{head}ETag: \"x\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    len - from
                );
                for piece in body[from..].chunks(64 * 1024) {
                    if s.write_all(piece).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
            });
        }
    });
    url
}

/// Waits for `flag` (a gated mirror has sent its first part), up to 30 s,
/// then lets the agent write what it received.
pub fn wait_for(flag: &AtomicBool) {
    let t0 = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the agent never asked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// `len` bytes that do not compress, different for each `seed`.
pub fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    (0..u32::try_from(len).expect("a test file under 4 GiB"))
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}
