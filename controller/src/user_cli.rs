//! `touchline user add|passwd|remove|list`: operator accounts, whether or
//! not a controller runs on the data directory (when one does, through its
//! admin API with the local admin token, like `site token`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::cli::{Failure, call_running_controller, cannot_run, require_store};
use crate::config::Role;
use crate::redb_store::RedbStore;
use crate::store::StoreError;
use crate::users;

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add an account. Without --password-stdin a random password is
    /// printed once.
    Add {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// The account's name (the audit log's "who").
        name: String,
        /// Its role.
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Require a TOTP code at login: prints the secret and its
        /// otpauth:// URI for an authenticator app.
        #[arg(long)]
        totp: bool,
    },
    /// Set an account's password (and unlock it).
    Passwd {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// The account.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account.
    Remove {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// The account.
        name: String,
    },
    /// List the accounts.
    List {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
    },
}

/// The password: stdin's first line, or a random one that is printed.
fn password(from_stdin: bool) -> Result<(String, bool), Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(cannot_run)?;
        let p = line.trim_end_matches(['\n', '\r']).to_owned();
        if p.is_empty() {
            return Err(cannot_run(anyhow!(
                "--password-stdin: stdin held no password"
            )));
        }
        Ok((p, false))
    } else {
        Ok((users::random_password().map_err(cannot_run)?, true))
    }
}

/// The store, or `None` when a running controller holds it.
fn open(data: &Path) -> Result<Option<RedbStore>, Failure> {
    require_store(data)?;
    match RedbStore::open(data) {
        Ok(s) => Ok(Some(s)),
        Err(StoreError::Locked(_)) => Ok(None),
        Err(e) => Err(cannot_run(e)),
    }
}

fn refused(e: users::UserError) -> Failure {
    match e {
        users::UserError::Store(_) | users::UserError::Hash(_) | users::UserError::Random(_) => {
            cannot_run(e)
        }
        other => Failure::from(other),
    }
}

fn print_totp(secret: &str, uri: &str) {
    println!("totp secret: {secret}");
    println!("totp uri: {uri}");
}

/// Runs one subcommand.
pub fn cmd_user(cmd: UserCommand) -> Result<ExitCode, Failure> {
    match cmd {
        UserCommand::Add {
            data,
            name,
            role,
            password_stdin,
            totp,
        } => {
            let (pw, generated) = password(password_stdin)?;
            match open(&data)? {
                Some(store) => {
                    let secret =
                        users::add(&store, &name, role, &pw, totp, "cli", Timestamp::now())
                            .map_err(refused)?;
                    if let Some((s, uri)) = secret {
                        print_totp(&s, &uri);
                    }
                }
                None => {
                    let role = format!("{role:?}").to_lowercase();
                    let r = call_running_controller(
                        &data,
                        reqwest::Method::POST,
                        "/api/users",
                        Some(json!({"name": name, "role": role, "password": pw, "totp": totp})),
                    )?;
                    if let (Some(s), Some(uri)) =
                        (r["totp_secret"].as_str(), r["totp_uri"].as_str())
                    {
                        print_totp(s, uri);
                    }
                }
            }
            if generated {
                println!("password: {pw}");
            }
            eprintln!("account `{name}` added");
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Passwd {
            data,
            name,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            match open(&data)? {
                Some(store) => {
                    users::passwd(&store, &name, &pw, "cli", Timestamp::now()).map_err(refused)?
                }
                None => {
                    call_running_controller(
                        &data,
                        reqwest::Method::POST,
                        &format!("/api/users/{name}/password"),
                        Some(json!({"password": pw})),
                    )?;
                }
            }
            if generated {
                println!("password: {pw}");
            }
            eprintln!("password of `{name}` changed");
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Remove { data, name } => {
            match open(&data)? {
                Some(store) => users::remove(&store, &name, "cli").map_err(refused)?,
                None => {
                    call_running_controller(
                        &data,
                        reqwest::Method::DELETE,
                        &format!("/api/users/{name}"),
                        None,
                    )?;
                }
            }
            eprintln!("account `{name}` removed");
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::List { data } => {
            let rows: Vec<Value> =
                match open(&data)? {
                    Some(store) => users::list(&store)
                        .map_err(cannot_run)?
                        .iter()
                        .map(users::summary)
                        .collect(),
                    None => call_running_controller(
                        &data,
                        reqwest::Method::GET,
                        "/api/users",
                        None,
                    )?["users"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                };
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}",
                    r["name"].as_str().unwrap_or_default(),
                    r["role"].as_str().unwrap_or_default(),
                    if r["totp"].as_bool() == Some(true) {
                        "totp"
                    } else {
                        "-"
                    },
                    r["locked_until"]
                        .as_str()
                        .map_or_else(|| "-".to_owned(), |t| format!("locked until {t}"))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
