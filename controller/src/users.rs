//! Named operator accounts: a name, a role, an argon2id password hash (a
//! PHC string; the password itself is never stored), optionally a TOTP
//! secret (RFC 6238: 6 digits, 30 s, SHA-1, one step of skew, each step
//! accepted once). Kept in the controller's store as `user/<name>`.
//!
//! A login that fails five times in a row locks the account for 15
//! minutes, and says so; the per-address limit of the login page holds
//! as well. API tokens from the config stay for scripts.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Secret};

use crate::config::Role;
use crate::store::{AuditEntry, Store, StoreError};

const PREFIX: &str = "user/";
/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account stays locked.
pub const LOCK_MINUTES: i64 = 15;
/// Shortest password.
pub const MIN_PASSWORD: usize = 12;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its name (the audit log's `actor`).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// argon2id, PHC string.
    pub password: String,
    /// The TOTP secret (base32), when the account has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// The last TOTP step accepted (a code works once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<u64>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When its password last changed.
    pub password_changed_at: Timestamp,
    /// Failed logins since the last good one.
    #[serde(default)]
    pub failures: u32,
    /// Locked until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<Timestamp>,
}

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A bad name.
    #[error(
        "account name `{0}`: 1 to 32 lower-case letters, digits, `.`, `_` or `-`, starting with a letter (`local-admin` is taken)"
    )]
    Name(String),
    /// Exists.
    #[error("account `{0}` exists (passwd changes its password)")]
    Exists(String),
    /// Does not exist.
    #[error("no account `{0}`")]
    Unknown(String),
    /// Too short.
    #[error("a password has at least {MIN_PASSWORD} characters")]
    Weak,
    /// Hashing.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The random source.
    #[error("cannot read random bytes: {0}")]
    Random(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a login was refused. The message never says whether the name
/// exists, except that a locked account says it is locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong name, password or code.
    #[error("wrong name, password or code")]
    Wrong,
    /// Locked after too many failures.
    #[error("account locked after {MAX_FAILURES} failed logins, until {0}")]
    Locked(Timestamp),
    /// The store.
    #[error("cannot read the accounts: {0}")]
    Store(String),
}

/// An account name: `[a-z][a-z0-9._-]{0,31}`, not `local-admin`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && name != "local-admin"
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn read(store: &dyn Store, name: &str) -> Result<Option<User>, StoreError> {
    store
        .meta(&key(name))?
        .map(|v| serde_json::from_str(&v).map_err(|e| crate::store::corrupt(&key(name), &e)))
        .transpose()
}

fn write(store: &dyn Store, u: &User) -> Result<(), StoreError> {
    store.set_meta(&key(&u.name), &serde_json::to_string(u).unwrap_or_default())
}

/// The argon2id hash of a password (OWASP's parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(UserError::Weak);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A TOTP checker for a base32 secret (6 digits, 30 s, SHA-1, skew 1).
fn totp(secret_b32: &str) -> Option<totp_rs::Totp> {
    let secret = Secret::try_from_base32(secret_b32).ok()?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_secret(secret)
        .build()
        .ok()
}

/// The code of a base32 secret at `at` (Unix seconds): what the operator's
/// authenticator app shows.
pub fn totp_code(secret_b32: &str, at: u64) -> Option<String> {
    totp(secret_b32).map(|t| t.generate(at).to_string())
}

/// A new TOTP secret: 160 random bits, base32 (what authenticator apps
/// take), and its `otpauth://` URI.
pub fn new_totp_secret(name: &str) -> Result<(String, String), UserError> {
    let mut raw = [0u8; 20];
    getrandom::fill(&mut raw).map_err(|e| UserError::Random(e.to_string()))?;
    let b32 = Secret::from(raw.to_vec()).to_base32();
    let uri = format!(
        "otpauth://totp/Touchline:{name}?secret={b32}&issuer=Touchline&algorithm=SHA1&digits=6&period=30"
    );
    Ok((b32, uri))
}

/// A random password (for `user add` without `--password-stdin`): 20
/// characters of an unambiguous alphabet, about 115 bits.
pub fn random_password() -> Result<String, UserError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::new();
    while out.len() < 20 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| UserError::Random(e.to_string()))?;
        for x in b {
            // Rejection sampling keeps the choice uniform.
            if usize::from(x) < 256 - 256 % ALPHABET.len() && out.len() < 20 {
                out.push(char::from(ALPHABET[usize::from(x) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

fn audit(
    store: &dyn Store,
    actor: &str,
    action: &str,
    target: &str,
    source: Option<String>,
    result: &str,
) {
    let _ = store.audit(&AuditEntry {
        at: Timestamp::now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        source,
        result: Some(result.to_owned()),
    });
}

/// Adds an account; with `with_totp`, its new TOTP secret and URI. Audited
/// as done by `actor`.
pub fn add(
    store: &dyn Store,
    name: &str,
    role: Role,
    password: &str,
    with_totp: bool,
    actor: &str,
    now: Timestamp,
) -> Result<Option<(String, String)>, UserError> {
    if !valid_name(name) {
        return Err(UserError::Name(name.chars().take(40).collect()));
    }
    if read(store, name)?.is_some() {
        return Err(UserError::Exists(name.to_owned()));
    }
    let password = hash_password(password)?;
    let secret = if with_totp {
        Some(new_totp_secret(name)?)
    } else {
        None
    };
    write(
        store,
        &User {
            name: name.to_owned(),
            role,
            password,
            totp: secret.as_ref().map(|s| s.0.clone()),
            totp_step: None,
            created_at: now,
            password_changed_at: now,
            failures: 0,
            locked_until: None,
        },
    )?;
    let what = format!("{role:?}{}", if with_totp { ", TOTP" } else { "" }).to_lowercase();
    audit(store, actor, "user add", name, None, &format!("ok: {what}"));
    Ok(secret)
}

/// Changes a password (and unlocks the account).
pub fn passwd(
    store: &dyn Store,
    name: &str,
    password: &str,
    actor: &str,
    now: Timestamp,
) -> Result<(), UserError> {
    let mut u = read(store, name)?.ok_or_else(|| UserError::Unknown(name.to_owned()))?;
    u.password = hash_password(password)?;
    u.password_changed_at = now;
    u.failures = 0;
    u.locked_until = None;
    write(store, &u)?;
    audit(store, actor, "user passwd", name, None, "ok");
    Ok(())
}

/// Removes an account.
pub fn remove(store: &dyn Store, name: &str, actor: &str) -> Result<(), UserError> {
    if read(store, name)?.is_none() {
        return Err(UserError::Unknown(name.to_owned()));
    }
    store.meta_write(vec![(key(name), None)])?;
    audit(store, actor, "user remove", name, None, "ok");
    Ok(())
}

/// Every account, by name.
pub fn list(store: &dyn Store) -> Result<Vec<User>, StoreError> {
    store
        .meta_scan(PREFIX)?
        .into_iter()
        .map(|(k, v)| serde_json::from_str(&v).map_err(|e| crate::store::corrupt(&k, &e)))
        .collect()
}

/// Checks a login: the password, then the TOTP code when the account has
/// a secret. Counts failures and locks; audited with the source address.
pub fn login(
    store: &dyn Store,
    name: &str,
    password: &str,
    code: Option<&str>,
    source: Option<String>,
    now: Timestamp,
) -> Result<(String, Role), LoginError> {
    let store_err = |e: StoreError| LoginError::Store(e.to_string());
    let refuse = |why: &str| {
        audit(store, name, "login", "status page", source.clone(), why);
    };
    let Some(mut u) = read(store, name).map_err(store_err)? else {
        // The same work as a real check: the answer time does not say
        // whether the name exists.
        let _ = password_matches(DUMMY_HASH, password);
        refuse("refused: wrong name, password or code");
        return Err(LoginError::Wrong);
    };
    if let Some(until) = u.locked_until.filter(|t| *t > now) {
        refuse("refused: locked");
        return Err(LoginError::Locked(until));
    }
    let code_ok = |u: &User| match &u.totp {
        None => Some(None),
        Some(secret) => {
            let t = totp(secret)?;
            let at = u64::try_from(now.as_second()).unwrap_or(0);
            let step = t.check(code.unwrap_or("").trim(), at)?;
            // A code is accepted once.
            (u.totp_step.is_none_or(|last| step > last)).then_some(Some(step))
        }
    };
    let good = password_matches(&u.password, password);
    match (good, code_ok(&u)) {
        (true, Some(step)) => {
            u.failures = 0;
            u.locked_until = None;
            if step.is_some() {
                u.totp_step = step;
            }
            write(store, &u).map_err(store_err)?;
            audit(store, name, "login", "status page", source, "ok");
            Ok((u.name, u.role))
        }
        _ => {
            u.failures = u.failures.saturating_add(1);
            let locked = u.failures >= MAX_FAILURES;
            if locked {
                u.locked_until = now
                    .checked_add(SignedDuration::from_mins(LOCK_MINUTES))
                    .ok();
                u.failures = 0;
            }
            write(store, &u).map_err(store_err)?;
            refuse(if locked {
                "refused: wrong password or code; account locked"
            } else {
                "refused: wrong name, password or code"
            });
            match u.locked_until.filter(|_| locked) {
                Some(until) => Err(LoginError::Locked(until)),
                None => Err(LoginError::Wrong),
            }
        }
    }
}

/// An account as the API and `list` show it (no hash, no secret).
pub fn summary(u: &User) -> serde_json::Value {
    serde_json::json!({
        "name": u.name,
        "role": u.role,
        "totp": u.totp.is_some(),
        "created_at": u.created_at,
        "password_changed_at": u.password_changed_at,
        "locked_until": u.locked_until.filter(|t| *t > Timestamp::now()),
    })
}

/// A valid argon2id hash of a random password, for the time of a check
/// against an account that does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$dG91Y2hsaW5lZHVtbXk$1QVbs5bgV5C5wQpmYk6o3wNa8m0cYB1PXoPxbw9cSx4";

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the test secrets and times, 8 digits, with
    /// SHA-1, SHA-256 and SHA-512.
    #[test]
    fn totp_matches_the_rfc_6238_vectors() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        let t = |alg, secret: &Vec<u8>| {
            Builder::new()
                .with_algorithm(alg)
                .with_digits(8)
                .with_secret(secret.clone())
                .build()
                .unwrap()
        };
        let (a, b, c) = (
            t(Algorithm::SHA1, &sha1),
            t(Algorithm::SHA256, &sha256),
            t(Algorithm::SHA512, &sha512),
        );
        for (time, s1, s256, s512) in vectors {
            assert_eq!(a.generate(time).to_string(), s1, "SHA-1 at {time}");
            assert_eq!(b.generate(time).to_string(), s256, "SHA-256 at {time}");
            assert_eq!(c.generate(time).to_string(), s512, "SHA-512 at {time}");
        }
    }

    #[test]
    fn names_and_passwords() {
        assert!(valid_name("marie") && valid_name("j.dupont-2"));
        for bad in [
            "",
            "Marie",
            "1abc",
            "local-admin",
            "a b",
            "box:x",
            &"a".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(matches!(hash_password("short"), Err(UserError::Weak)));
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(password_matches(&h, "correct horse battery"));
        assert!(!password_matches(&h, "correct horse batterx"));
        // The dummy hash is a real one (a wrong guess costs the same).
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        let p = random_password().unwrap();
        assert_eq!(p.len(), 20);
        assert!(hash_password(&p).is_ok());
    }
}
