//! The bodies of the `touchline` commands: `main.rs` parses the arguments
//! and calls these; each returns the exit status or a [`Failure`] that
//! carries one (1: the check failed, 2: could not run).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use touchline_schemas::{Bundle, SiteId, TrustedKeys};

use crate::content::ContentStore;
use crate::redb_store::RedbStore;
use crate::render::{self, BundleMeta, CatalogIndex, Rendered};
use crate::store::{AuditEntry, Store, StoreError};
use crate::tokens::Token;
use crate::validate::{self, Checked};
use crate::{example, explain, keys, revision, serve, source};

/// Output format of `validate` and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For programs.
    Json,
}

/// How bundles rendered by hand are identified.
#[derive(Debug, clap::Args)]
pub struct Ident {
    /// Serial of the bundles (default: first-parent commit count of HEAD, else 0).
    #[arg(long)]
    pub serial: Option<u64>,
    /// Source commit recorded in the bundles (default: HEAD).
    #[arg(long)]
    pub commit: Option<String>,
    /// Issue time, RFC 3339 (default: SOURCE_DATE_EPOCH, HEAD's commit time,
    /// or the newest manifest file's mtime).
    #[arg(long)]
    pub issued_at: Option<Timestamp>,
}

/// An error with the exit status it deserves.
#[derive(Debug)]
pub struct Failure {
    /// The exit status: 1 failed, 2 could not run.
    pub code: u8,
    /// What happened.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

pub fn cannot_run(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: e.into(),
    }
}

/// `touchline keygen`.
pub fn cmd_keygen(out: &Path, comment: &str, force: bool) -> Result<ExitCode, Failure> {
    let key = keys::keygen(out, comment, force)?;
    println!("{}", key.public_key_openssh());
    eprintln!(
        "wrote {} (secret, 0600) and {}; fingerprint {}",
        out.display(),
        keys::pub_path(out).display(),
        key.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

/// `touchline operator token`: a new token and the config lines to add.
pub fn cmd_operator_token(name: &str, role: crate::config::Role) -> Result<ExitCode, Failure> {
    let role = role.as_str();
    let token = Token::generate()?;
    println!("{}", token.reveal());
    eprintln!(
        "add to the controller config (only the hash is kept; give the token above to {name}):\n\n[[operators]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"",
        token.hash().to_hex()
    );
    Ok(ExitCode::SUCCESS)
}

/// `touchline demo`.
pub fn cmd_demo(opts: crate::demo::DemoOptions) -> Result<ExitCode, Failure> {
    runtime()?.block_on(crate::demo::run(opts, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// `touchline serve`: prints `listening on http://<addr>` once it listens.
pub fn cmd_serve(opts: serve::ServeOptions) -> Result<ExitCode, Failure> {
    runtime()?.block_on(serve::serve(
        opts,
        |addr| {
            println!("listening on http://{addr}");
            let _ = std::io::stdout().flush();
        },
        shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The multi-threaded runtime of the long-running commands.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work (the store, git, rendering) is bounded: a burst of reports
        // queues instead of spawning hundreds of threads (and malloc arenas).
        .max_blocking_threads(16)
        .build()
        .context("failed to start the async runtime")
        .map_err(cannot_run)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

pub fn cmd_content_add(
    data: &Path,
    catalog_entry: bool,
    files: &[PathBuf],
) -> Result<ExitCode, Failure> {
    let store = ContentStore::open(data).map_err(cannot_run)?;
    for f in files {
        let (hash, size) = store.add_file(f)?;
        println!("{hash} {size}");
        if catalog_entry {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = f
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id: String = stem
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .split('-')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            println!(
                "  - id: {id}\n    title: {stem}\n    file: {name}\n    category: CHANGE-ME\n    subcategory: CHANGE-ME\n    sha256: {hash}\n    size: {size}"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_site_token(data: &Path, site: &str, rotate: bool) -> Result<ExitCode, Failure> {
    let site = parse_site(site)?;
    match RedbStore::open(data) {
        Ok(store) => {
            let exists = store.site_tokens()?.iter().any(|(s, _)| s == &site);
            if exists && !rotate {
                return Err(anyhow!(
                    "site `{site}` already has a token; pass --rotate to replace it (the box must then be given the new one)"
                )
                .into());
            }
            let token = Token::generate()?;
            store.set_site_token(&site, &token.hash())?;
            store.audit(&AuditEntry {
                at: Timestamp::now(),
                actor: "cli".into(),
                action: if exists {
                    "rotate site token"
                } else {
                    "mint site token"
                }
                .into(),
                target: site.to_string(),
                ..AuditEntry::default()
            })?;
            println!("{}", token.reveal());
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Locked(_)) => {
            let body = through_running_controller(
                data,
                &format!("/api/sites/{site}/token?rotate={rotate}"),
            )?;
            println!("{}", body["token"].as_str().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(cannot_run(e)),
    }
}

/// The address and local admin token of the controller that holds
/// `data`'s store (locked by it), as it wrote them at start.
fn running_controller(data: &Path) -> Result<(String, String), Failure> {
    let addr = std::fs::read_to_string(serve::addr_file(data))
        .context("the store is locked by a running controller, but its address file is missing")
        .map_err(cannot_run)?;
    let admin = std::fs::read_to_string(serve::admin_token_file(data))
        .context(
            "the store is locked by a running controller, but its local admin token is missing",
        )
        .map_err(cannot_run)?;
    Ok((addr.trim().to_owned(), admin.trim().to_owned()))
}

/// POSTs to the admin API of the controller that holds `data`'s store
/// (locked by it), with its local admin token; the JSON answer.
fn through_running_controller(data: &Path, path: &str) -> Result<serde_json::Value, Failure> {
    call_running_controller(data, reqwest::Method::POST, path, None)
}

/// A request to the admin API of the controller that holds `data`'s store,
/// with its local admin token and an optional JSON body; the JSON answer,
/// or the controller's `error` as the failure.
pub(crate) fn call_running_controller(
    data: &Path,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    let (addr, admin) = running_controller(data)?;
    let url = format!("http://{addr}{path}");
    let body = runtime()?.block_on(async {
        let mut req = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(&admin);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("failed to reach the running controller at {addr}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .context("the controller's answer is not JSON")?;
        if !status.is_success() {
            return Err(anyhow!(
                "{}",
                body["error"].as_str().unwrap_or("the controller refused")
            ));
        }
        Ok(body)
    })?;
    Ok(body)
}

/// Refuses a data directory without a status store: opening would make
/// an empty one (a mistyped `--data` would back up nothing, or mint codes
/// no controller serves).
pub(crate) fn require_store(data: &Path) -> Result<(), Failure> {
    if data.join("status.redb").exists() {
        Ok(())
    } else {
        Err(cannot_run(anyhow!(
            "`{}` holds no controller store (status.redb): check --data (the package's is /var/lib/touchline-controller)",
            data.display()
        )))
    }
}

/// `touchline site enroll`: mints a one-time enrollment code; prints the
/// code on stdout and how to use it on stderr.
pub fn cmd_site_enroll(
    data: &Path,
    site: &str,
    ttl: Option<touchline_schemas::HumanDuration>,
    url: Option<&str>,
) -> Result<ExitCode, Failure> {
    let site = parse_site(site)?;
    require_store(data)?;
    match RedbStore::open(data) {
        Ok(store) => {
            let ttl = ttl.unwrap_or(touchline_schemas::HumanDuration::from_secs(86_400));
            let minted = crate::enroll::mint(&store, &site, ttl.to_std(), "cli", Timestamp::now())?;
            println!("{}", minted.code.reveal());
            let url = url.unwrap_or("https://<controller>");
            eprint!("{}", minted.instructions(url));
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Locked(_)) => {
            let ttl = ttl.map(|t| format!("?ttl={t}")).unwrap_or_default();
            let body = through_running_controller(data, &format!("/api/sites/{site}/enroll{ttl}"))?;
            println!("{}", body["code"].as_str().unwrap_or_default());
            let text = body["instructions"].as_str().unwrap_or_default();
            match url {
                // The operator knows better than the controller's own address.
                Some(u) => {
                    let from = body["controller_url"].as_str().unwrap_or_default();
                    eprint!("{}", text.replace(from, u.trim_end_matches('/')));
                }
                None => eprint!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(cannot_run(e)),
    }
}

/// Reads and validates; prints diagnostics on stderr when invalid.
fn load_valid(dir: &Path) -> Result<(Checked, source::SourceSet), Failure> {
    let set = source::read_dir(dir).map_err(cannot_run)?;
    let checked = validate::check(&set);
    if checked.diags.has_errors() {
        let mut err = std::io::stderr().lock();
        for d in &checked.diags.0 {
            let _ = writeln!(err, "{d}");
        }
        return Err(anyhow!(
            "the manifests in `{}` are invalid ({} errors); fix them (see `touchline validate`) before rendering",
            dir.display(),
            checked.diags.errors()
        )
        .into());
    }
    Ok((checked, set))
}

pub fn cmd_validate(dir: &Path, format: Format) -> Result<ExitCode, Failure> {
    let set = source::read_dir(dir).map_err(cannot_run)?;
    let checked = validate::check(&set);
    let d = &checked.diags;
    let mut out = std::io::stdout().lock();
    print_diagnostics(&mut out, d, checked.manifests.files_read, format).map_err(cannot_run)?;
    Ok(if d.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The diagnostics of `files` manifest files as `validate` prints them:
/// one per line and the summary, or one JSON document.
pub fn print_diagnostics(
    out: &mut impl Write,
    d: &crate::diag::Diagnostics,
    files: usize,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            for diag in &d.0 {
                writeln!(out, "{diag}")?;
            }
            writeln!(out, "{}", d.summary(files))
        }
        Format::Json => {
            let list: Vec<_> = d
                .0
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "file": &*x.file, "line": x.pos.line, "column": x.pos.col,
                        "severity": if x.severity == crate::diag::Severity::Error { "error" } else { "warning" },
                        "message": x.message,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "valid": !d.has_errors(), "errors": d.errors(), "warnings": d.warnings(),
                "files": files, "diagnostics": list,
            });
            writeln!(out, "{doc:#}")
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn meta(
    dir: &Path,
    checked: &Checked,
    set: &source::SourceSet,
    ident: Ident,
) -> Result<BundleMeta, Failure> {
    let expiry = checked
        .manifests
        .fleet
        .as_ref()
        .map(|f| f.value.bundles.expiry.to_std())
        .unwrap_or(std::time::Duration::from_secs(7 * 86_400));
    let o = revision::Overrides {
        serial: ident.serial,
        commit: ident.commit,
        issued_at: ident.issued_at,
    };
    revision::meta_for_dir(dir, set, expiry, &o).map_err(cannot_run)
}

fn parse_site(site: &str) -> Result<SiteId, Failure> {
    SiteId::new(site).map_err(|e| cannot_run(anyhow!(e)))
}

fn render_one(checked: &Checked, site: &SiteId, meta: &BundleMeta) -> Result<Rendered, Failure> {
    let catalog = CatalogIndex::new(&checked.manifests);
    Ok(render::render_site(
        &checked.manifests,
        &checked.members,
        &catalog,
        site,
        meta,
    )?)
}

pub fn cmd_render(
    dir: &Path,
    site: Option<&str>,
    out: Option<&Path>,
    key: Option<&Path>,
    ident: Ident,
) -> Result<ExitCode, Failure> {
    // Load the key first: a bad key should fail before any work.
    let key = key.map(keys::load).transpose().map_err(cannot_run)?;
    let (checked, set) = load_valid(dir)?;
    let meta = meta(dir, &checked, &set, ident)?;
    if let Some(site) = site {
        let site = parse_site(site)?;
        let r = render_one(&checked, &site, &meta)?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&r.bundle.to_canonical_json())
            .map_err(cannot_run)?;
        stdout.flush().map_err(cannot_run)?;
        return Ok(ExitCode::SUCCESS);
    }
    let out = out.ok_or_else(|| cannot_run(anyhow!("--all needs --out <dir>")))?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("failed to create `{}`", out.display()))
        .map_err(cannot_run)?;
    let written =
        crate::bundles::write_all(&checked, &meta, out, key.as_ref()).map_err(cannot_run)?;
    eprintln!(
        "rendered {written} site{} into {} (serial {}{})",
        plural(written),
        out.display(),
        meta.serial,
        if key.is_some() { ", signed" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_explain(dir: &Path, site: &str, format: Format) -> Result<ExitCode, Failure> {
    let (checked, set) = load_valid(dir)?;
    let site = parse_site(site)?;
    let meta = meta(
        dir,
        &checked,
        &set,
        Ident {
            serial: None,
            commit: None,
            issued_at: None,
        },
    )?;
    let r = render_one(&checked, &site, &meta)?;
    match format {
        Format::Text => print!("{}", explain::text(&r)),
        Format::Json => println!("{:#}", explain::json(&r)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_verify(
    key: &Path,
    bundle: &Path,
    sig: &Path,
    site: Option<&str>,
) -> Result<ExitCode, Failure> {
    let read = |p: &Path| {
        std::fs::read(p)
            .with_context(|| format!("failed to read `{}`", p.display()))
            .map_err(cannot_run)
    };
    let keys_text = String::from_utf8(read(key)?).map_err(|_| {
        cannot_run(anyhow!(
            "`{}` is not a text file of public keys",
            key.display()
        ))
    })?;
    let trusted = TrustedKeys::parse(&keys_text)
        .with_context(|| format!("failed to read trusted keys from `{}`", key.display()))
        .map_err(cannot_run)?;
    let bytes = read(bundle)?;
    let sig_bytes = read(sig)?;
    let signer = trusted
        .verify(&bytes, &sig_bytes)
        .with_context(|| format!("`{}` is not validly signed", bundle.display()))?
        .fingerprint(ssh_key_hash())
        .to_string();
    let b = Bundle::from_slice(&bytes)
        .with_context(|| format!("`{}` is signed but not a valid bundle", bundle.display()))?;
    if let Some(site) = site
        && b.site.as_str() != site
    {
        return Err(anyhow!("bundle is for site `{}`, not `{site}`", b.site).into());
    }
    println!(
        "OK: bundle for site {} serial {}{} signed by {signer}; issued {}, expires {}",
        b.site,
        b.serial,
        b.commit
            .as_deref()
            .map(|c| format!(" (commit {c})"))
            .unwrap_or_default(),
        b.issued_at,
        b.expires_at
    );
    if b.expires_at <= Timestamp::now() {
        eprintln!("warning: this bundle has expired; agents will not apply it");
    }
    Ok(ExitCode::SUCCESS)
}

fn ssh_key_hash() -> touchline_schemas::sign::HashAlg {
    touchline_schemas::sign::HashAlg::Sha256
}

pub fn cmd_generate_example(dir: &Path, out: &Path) -> Result<ExitCode, Failure> {
    let (checked, _) = load_valid(dir)?;
    let m = &checked.manifests;
    let mut bad = 0usize;
    let mut n = 0usize;
    let mut check = |what: &str,
                     id: &str,
                     size: u64,
                     want: &touchline_schemas::Sha256,
                     path: PathBuf,
                     at: String|
     -> Result<(), Failure> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(cannot_run)?;
        }
        let file = std::fs::File::create(&path)
            .with_context(|| format!("failed to create `{}`", path.display()))
            .map_err(cannot_run)?;
        let got =
            example::write_example(id, size, std::io::BufWriter::new(file)).map_err(cannot_run)?;
        let got = touchline_schemas::Sha256::from_bytes(got);
        n += 1;
        if &got != want {
            bad += 1;
            eprintln!(
                "{at}: error: generated {what} `{id}` ({size} bytes) has sha256 {got}, the manifest says {want}"
            );
        }
        Ok(())
    };
    if let Some(c) = &m.catalog {
        for (i, v) in c.value.videos.iter().enumerate() {
            let path = render::target_path(v).map_err(|e| anyhow!(e))?;
            let line = c.at(&["videos".into(), i.into(), "sha256".into()]).line;
            check(
                "video",
                v.id.as_str(),
                v.size,
                &v.sha256,
                out.join(path.as_str()),
                format!("{}:{line}", c.file),
            )?;
        }
    }
    for (v, r) in &m.releases {
        let line = r.at(&["package".into(), "sha256".into()]).line;
        let id = format!("release-{v}");
        check(
            "package",
            &id,
            r.value.package.size,
            &r.value.package.sha256,
            out.join("releases").join(format!("{v}.tar.gz")),
            format!("{}:{line}", r.file),
        )?;
    }
    if bad > 0 {
        return Err(anyhow!("{bad} of {n} generated files do not match their manifest").into());
    }
    eprintln!(
        "wrote {n} files into {}, all matching their manifests",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `touchline import-neopro`: site.conf files into `sites/<id>.yaml`.
pub fn cmd_import_neopro(inputs: &[PathBuf], out: &Path, force: bool) -> Result<ExitCode, Failure> {
    let files = crate::import::inputs(inputs).map_err(|e| cannot_run(anyhow!(e)))?;
    let refuse = |errors: Vec<String>| -> Failure {
        let mut err = std::io::stderr().lock();
        for e in &errors {
            let _ = writeln!(err, "{e}");
        }
        anyhow!(
            "{} error{}: nothing was written",
            errors.len(),
            plural(errors.len())
        )
        .into()
    };
    let sites = crate::import::read_all(&files).map_err(refuse)?;
    let written = crate::import::write_all(out, &sites, force).map_err(refuse)?;
    let mut stdout = std::io::stdout().lock();
    for (s, path) in sites.iter().zip(&written) {
        writeln!(stdout, "{} -> {}", s.from.display(), path.display()).map_err(cannot_run)?;
        for n in &s.notes {
            writeln!(stdout, "  {n}").map_err(cannot_run)?;
        }
    }
    writeln!(
        stdout,
        "wrote {} site{}; review them (coordinates are 0, 0), run `touchline validate`, and open a pull request",
        written.len(),
        plural(written.len())
    )
    .map_err(cannot_run)?;
    Ok(ExitCode::SUCCESS)
}

/// `touchline backup`: a consistent backup of a controller's data, key and
/// config, through the running controller when there is one; written under
/// a temp name, read back and checked, then renamed to `out` (0600).
pub fn cmd_backup(
    data: &Path,
    out: &Path,
    key: Option<&Path>,
    config: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".touchline-backup-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in `{}`", dir.display()))
        .map_err(cannot_run)?;
    require_store(data)?;
    match RedbStore::open(data) {
        Ok(store) => {
            let key_path = key.ok_or_else(|| {
                cannot_run(anyhow!(
                    "no controller runs on `{}`: pass --key <signing key> (and --config <file>) to back it up",
                    data.display()
                ))
            })?;
            let key = keys::load(key_path).map_err(cannot_run)?;
            let src = crate::backup::Sources {
                store: &store,
                data,
                key: &key,
                config,
            };
            crate::backup::write(&src, std::io::BufWriter::new(tmp.as_file_mut()))?;
        }
        Err(StoreError::Locked(_)) => {
            if key.is_some() || config.is_some() {
                eprintln!(
                    "note: a controller runs on this data directory: its own key and config are backed up"
                );
            }
            let (addr, admin) = running_controller(data)?;
            let file = tmp.as_file_mut();
            runtime()?.block_on(async {
                let mut resp = reqwest::Client::new()
                    .get(format!("http://{addr}/api/backup"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .with_context(|| format!("failed to reach the running controller at {addr}"))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    return Err(anyhow!(
                        "the controller refused ({status}): {}",
                        body["error"].as_str().unwrap_or("no reason given")
                    ));
                }
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .context("the backup broke off (the controller's log says why)")?
                {
                    file.write_all(&chunk).context("cannot write the backup")?;
                }
                Ok(())
            })?;
        }
        Err(e) => return Err(cannot_run(e)),
    }
    tmp.as_file()
        .sync_all()
        .context("cannot write the backup")?;
    let m = crate::backup::verify(tmp.path())
        .context("the backup does not read back whole; nothing was kept")?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write `{}`", out.display()))?;
    println!(
        "wrote {}: {} store rows, {} content files ({}), the signing key{}; taken {}",
        out.display(),
        m.store_rows,
        m.content_files,
        human_bytes(m.content_bytes),
        if m.has_config { " and the config" } else { "" },
        m.created_at
            .round(jiff::Unit::Second)
            .unwrap_or(m.created_at)
    );
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n => format!("{n} bytes"),
    }
}

/// `touchline restore`: a backup into a data directory (the controller
/// stopped), its key and config to the paths given.
pub fn cmd_restore(
    file: &Path,
    data: &Path,
    key: &Path,
    config: Option<&Path>,
    force: bool,
) -> Result<ExitCode, Failure> {
    // Only a store that exists can be locked (opening creates one).
    if data.join("status.redb").exists()
        && let Err(StoreError::Locked(_)) = RedbStore::open(data).map(drop)
    {
        return Err(cannot_run(anyhow!(
            "a controller runs on `{}`: stop it before restoring",
            data.display()
        )));
    }
    let config_target = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data.join(".restored-controller.toml"));
    let m = crate::backup::restore(
        file,
        &crate::backup::Targets {
            data: data.to_path_buf(),
            key: key.to_path_buf(),
            config: config_target.clone(),
            force,
        },
    )?;
    println!(
        "restored the backup of {}: {} store rows, {} content files into {}, the signing key into {}",
        m.created_at
            .round(jiff::Unit::Second)
            .unwrap_or(m.created_at),
        m.store_rows,
        m.content_files,
        data.display(),
        key.display()
    );
    if m.has_config {
        match config {
            Some(c) => println!("the config into {}", c.display()),
            None => println!(
                "the backup's config is in {} (no --config given)",
                config_target.display()
            ),
        }
    }
    println!(
        "reports received after {} are not in it; boxes keep their tokens and send what they queued",
        m.created_at
            .round(jiff::Unit::Second)
            .unwrap_or(m.created_at)
    );
    Ok(ExitCode::SUCCESS)
}
