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

/// 32 random bytes in hex (a session id, a CSRF token). Fails only
/// without an OS random source; then no session can start.
pub fn random_hex() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}
