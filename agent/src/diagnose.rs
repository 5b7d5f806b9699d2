//! `touchline-agent diagnose`: one line per check, `OK` or `FAIL` with
//! what to do. Exit 0 when everything passed, 1 otherwise, 2 when the
//! configuration does not load.

use std::path::Path;
use std::process::ExitCode;

use reqwest::StatusCode;

use crate::agent::http_client;
use crate::clock::{Clock, SKEW_TOLERANCE, SystemClock, build_time};
use crate::config::Config;
use crate::fsx;
use crate::pull::clock_offset;

struct Report {
    failed: bool,
    /// `self-test`: what concerns the box rather than the binary (its
    /// clock, its free space) is a warning — the running agent copes with
    /// it, and a box without a clock battery must still take a fix.
    self_test: bool,
}

impl Report {
    fn line(&mut self, ok: bool, what: &str, detail: &str) {
        self.failed |= !ok;
        println!("{} {what}: {detail}", if ok { "OK  " } else { "FAIL" });
    }

    /// A check of the box: FAIL for `diagnose`, WARN for `self-test`.
    fn box_line(&mut self, ok: bool, what: &str, detail: &str) {
        if !ok && self.self_test {
            println!("WARN {what}: {detail}");
        } else {
            self.line(ok, what, detail);
        }
    }
}

/// Runs every check.
pub async fn run(path: &Path) -> ExitCode {
    checks(path, false).await
}

/// `touchline-agent self-test`: what a new agent binary proves before it
/// replaces the running one — the config parses, the state opens (read
/// only: nothing is written), the accepted bundle verifies with the trusted
/// keys, and the controller answers with a bundle those keys signed —
/// then the checks of `diagnose`, where the box's clock and free space
/// warn instead of failing.
pub async fn self_test(path: &Path) -> ExitCode {
    checks(path, true).await
}

/// The state files, read only: `state.json` decodes, and the accepted
/// bundle (when there is one) verifies with the trusted keys.
fn state_checks(cfg: &Config, r: &mut Report) {
    let paths = crate::state::Paths {
        root: cfg.state_dir.clone(),
    };
    match paths.load_state() {
        Ok(st) => r.line(
            true,
            "state",
            &format!(
                "{} (applied serial {})",
                paths.state().display(),
                st.applied_serial
                    .map_or_else(|| "none".to_owned(), |s| s.to_string())
            ),
        ),
        Err(e) => r.line(false, "state", &e.to_string()),
    }
    match paths.load_accepted() {
        None => r.line(true, "accepted bundle", "none yet"),
        Some((body, sig)) => match cfg.trusted_keys.verify(&body, &sig) {
            Ok(_) => r.line(true, "accepted bundle", "verifies with the trusted keys"),
            Err(e) => r.line(
                false,
                "accepted bundle",
                &format!("does not verify with the trusted keys: {e}"),
            ),
        },
    }
}

async fn checks(path: &Path, with_state: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => {
            println!("OK   config: {}", path.display());
            c
        }
        Err(e) => {
            println!("FAIL config: {e}");
            return ExitCode::from(2);
        }
    };
    let mut r = Report {
        failed: false,
        self_test: with_state,
    };
    if with_state {
        state_checks(&cfg, &mut r);
    }
    let clock = SystemClock::from_env().now();
    r.box_line(
        clock >= build_time(),
        "clock",
        &if clock >= build_time() {
            format!("{clock}")
        } else {
            format!("{clock} is before this agent was built ({}): enable NTP (timedatectl set-ntp true)", build_time())
        },
    );
    for (what, dir) in [
        ("state_dir", &cfg.state_dir),
        ("videos_dir", &cfg.videos_dir),
    ] {
        // A fresh box: the first apply creates the directory, on the
        // filesystem of its nearest existing ancestor.
        let probe = fsx::existing_ancestor(dir);
        match fsx::available_space(probe) {
            Ok(n) => r.box_line(
                n > cfg.space_reserve_bytes,
                &format!("free space ({what})"),
                &format!(
                    "{} available, reserve {}",
                    fsx::human_bytes(n),
                    fsx::human_bytes(cfg.space_reserve_bytes)
                ),
            ),
            Err(e) => r.line(
                false,
                &format!("free space ({what})"),
                &format!("cannot stat `{}`: {e}", probe.display()),
            ),
        }
    }
    let Some(base) = cfg.controller_url.clone() else {
        r.line(
            true,
            "controller",
            "no controller_url: this box is fed by apply-dir only",
        );
        return if r.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    };
    let client = match http_client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            r.line(false, "http client", &e.to_string());
            return ExitCode::from(1);
        }
    };
    let host = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let with_port = if host.contains(':') {
        host.clone()
    } else if base.starts_with("https") {
        format!("{host}:443")
    } else {
        format!("{host}:80")
    };
    match tokio::net::lookup_host(&with_port).await {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => {
                r.line(true, "dns", &format!("{host} → {}", a.ip()));
                match tokio::time::timeout(
                    cfg.connect_timeout.to_std(),
                    tokio::net::TcpStream::connect(a),
                )
                .await
                {
                    Ok(Ok(_)) => r.line(true, "tcp", &format!("connected to {a}")),
                    Ok(Err(e)) => r.line(
                        false,
                        "tcp",
                        &format!("{a}: {e}: check the network / firewall"),
                    ),
                    Err(_) => r.line(
                        false,
                        "tcp",
                        &format!("{a}: no answer within {}", cfg.connect_timeout),
                    ),
                }
            }
            None => r.line(false, "dns", &format!("{host}: no address")),
        },
        Err(e) => r.line(
            false,
            "dns",
            &format!("{host}: {e}: check /etc/resolv.conf"),
        ),
    }
    let token = cfg.token.clone().unwrap_or_default();
    let url = format!("{base}/v1/sites/{}/bundle", cfg.site_id);
    match client.get(&url).bearer_auth(&token).send().await {
        Err(e) => {
            let text = crate::fetch::error_text(&e);
            let hint = if text.contains("certificate") {
                if cfg.extra_roots.is_empty() {
                    ": the controller's certificate is not trusted: if it comes from a private CA, set ca_file to that CA's PEM"
                } else {
                    ": the controller's certificate is not trusted: check that ca_file holds the CA that issued it, and the name in controller_url is one the certificate names"
                }
            } else {
                ""
            };
            r.line(
                false,
                if base.starts_with("https") {
                    "tls + http"
                } else {
                    "http"
                },
                &format!("{url}: {text}{hint}"),
            );
        }
        Ok(resp) => {
            r.line(
                true,
                if base.starts_with("https") {
                    "tls + http"
                } else {
                    "http"
                },
                &format!("{url} answered {}", resp.status()),
            );
            if let Some(off) = clock_offset(resp.headers(), clock) {
                r.box_line(
                    off.abs() <= SKEW_TOLERANCE,
                    "clock vs controller",
                    &format!("{}s apart", off.as_secs()),
                );
            }
            match resp.status() {
                StatusCode::OK => {
                    r.line(true, "token", "accepted");
                    let body = resp.bytes().await.unwrap_or_default();
                    let sig = match client
                        .get(format!("{url}.sig"))
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        Ok(s) => s.bytes().await.unwrap_or_default(),
                        Err(_) => Default::default(),
                    };
                    match cfg.trusted_keys.verify(&body, &sig) {
                        Ok(k) => r.line(
                            true,
                            "trusted key",
                            &format!(
                                "the served bundle is signed by {}",
                                k.fingerprint(Default::default())
                            ),
                        ),
                        Err(e) => r.line(
                            false,
                            "trusted key",
                            &format!("{e}: the controller signs with a key not in trusted_keys"),
                        ),
                    }
                }
                StatusCode::UNAUTHORIZED => r.line(
                    false,
                    "token",
                    "refused: mint one with `touchline site token --data <dir> <site>`",
                ),
                StatusCode::FORBIDDEN => {
                    r.line(false, "token", "belongs to another site: check site_id")
                }
                StatusCode::NOT_FOUND => {
                    r.line(false, "site", "the controller does not know this site_id")
                }
                s => r.line(false, "controller", &format!("HTTP {s}")),
            }
        }
    }
    if r.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
