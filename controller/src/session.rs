//! The status page's sessions, in memory: who logged in, their role, the
//! CSRF token of their forms, when the session ends.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

use crate::config::Role;

/// A logged-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    pub expires: Timestamp,
}

/// Sessions in memory.
#[derive(Debug, Default)]
pub struct Sessions(pub Mutex<HashMap<String, Session>>);

/// Failed status-page logins per source address, over the last minute:
/// past the limit a source is refused (429) until its oldest failure is a
/// minute old, so a token cannot be guessed at network speed.
#[derive(Debug, Default)]
pub struct LoginFailures(Mutex<HashMap<std::net::IpAddr, Vec<std::time::Instant>>>);

/// Sources remembered at most (a flood of sources forgets the oldest
/// minute first, never grows without bound).
const MAX_SOURCES: usize = 65_536;

impl LoginFailures {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    /// Whether `ip` may try again (fewer than `limit` failures in the
    /// last minute); `Err(seconds)` to wait otherwise.
    pub fn check(&self, ip: std::net::IpAddr, limit: u32) -> Result<(), u64> {
        let Ok(mut map) = self.0.lock() else {
            return Ok(());
        };
        let Some(times) = map.get_mut(&ip) else {
            return Ok(());
        };
        times.retain(|t| t.elapsed() < Self::WINDOW);
        if times.len() < limit as usize {
            return Ok(());
        }
        let oldest = times.iter().min().map_or(0, |t| {
            Self::WINDOW.saturating_sub(t.elapsed()).as_secs() + 1
        });
        Err(oldest)
    }

    /// Records a failure of `ip`.
    pub fn failed(&self, ip: std::net::IpAddr) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= MAX_SOURCES {
            map.retain(|_, v| v.iter().any(|t| t.elapsed() < Self::WINDOW));
            if map.len() >= MAX_SOURCES {
                map.clear();
            }
        }
        map.entry(ip).or_default().push(std::time::Instant::now());
    }
}

/// 32 random bytes in hex (a session id, a CSRF token). Fails only
/// without an OS random source; then no session can start.
pub fn random_hex() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}
