//! `touchline demo`: the whole system on this machine with the example fleet.
//!
//! Creates a workspace in a temporary directory: a real git repository made
//! from `fleet-manifests/`, the example content in the content store, a
//! signing key, a token per site and an admin operator token; then runs the
//! controller on a free loopback port and one real `touchline-agent run`
//! process per site, each with its own fake root under `boxes/<site>/`
//! (videos, configuration.json, state), until Ctrl-C.
//!
//! The agent binary is looked up next to this one; when it is missing and
//! the sources are at hand (a `cargo run` from the repository), the demo
//! builds it first with the same profile.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use touchline_schemas::HumanDuration;

use crate::content::ContentStore;
use crate::redb_store::RedbStore;
use crate::serve::{ServeOptions, serve};
use crate::store::Store;
use crate::tokens::Token;

/// `touchline demo` options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The example manifests to start from.
    pub manifests: PathBuf,
    /// Where to build the workspace (default: a new temporary directory).
    pub workspace: Option<PathBuf>,
    /// Listen address.
    pub listen: String,
}

/// Finds the example fleet: `./fleet-manifests`, else the one next to the
/// sources this binary was built from.
pub fn default_manifests() -> PathBuf {
    let local = PathBuf::from("fleet-manifests");
    if local.join("fleet.yaml").is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet-manifests")
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Touchline demo",
            "-c",
            "user.email=demo@touchline.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("failed to run git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("failed to read `{}`", from.display()))?
    {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// What the demo prepared.
#[derive(Debug)]
pub struct Prepared {
    /// The workspace.
    pub root: PathBuf,
    /// Options for `serve`.
    pub serve: ServeOptions,
    /// The admin operator token.
    pub operator_token: String,
    /// Site ids with a token file under `tokens/`.
    pub sites: Vec<String>,
}

/// Builds the workspace.
pub fn prepare(opts: &DemoOptions) -> anyhow::Result<Prepared> {
    if !opts.manifests.join("fleet.yaml").is_file() {
        bail!(
            "`{}` holds no fleet.yaml; run the demo from the repository root or pass --manifests <dir>",
            opts.manifests.display()
        );
    }
    let root = match &opts.workspace {
        Some(p) => {
            std::fs::create_dir_all(p)?;
            p.clone()
        }
        None => tempfile::Builder::new()
            .prefix("touchline-demo-")
            .tempdir()?
            .keep(),
    };
    let repo = root.join("manifests");
    if repo.exists() {
        bail!(
            "`{}` already exists; pass another --workspace",
            repo.display()
        );
    }
    copy_tree(&opts.manifests, &repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "Example fleet"])?;

    let set = crate::source::read_dir(&repo)?;
    let checked = crate::validate::check(&set);
    if checked.diags.has_errors() {
        bail!(
            "the example manifests are invalid; run `touchline validate {}`",
            repo.display()
        );
    }

    let key = root.join("controller.key");
    crate::keys::keygen(&key, "touchline-demo", false)?;

    // Example content into the content store.
    let data = root.join("data");
    let content = ContentStore::open(&data)?;
    let m = &checked.manifests;
    let mut items: Vec<(String, u64)> = Vec::new();
    if let Some(c) = &m.catalog {
        items.extend(c.value.videos.iter().map(|v| (v.id.to_string(), v.size)));
    }
    items.extend(
        m.releases
            .iter()
            .map(|(v, r)| (format!("release-{v}"), r.value.package.size)),
    );
    for (id, size) in &items {
        let mut buf = Vec::with_capacity(usize::try_from(*size).unwrap_or(0));
        crate::example::write_example(id, *size, &mut buf)?;
        content.add_reader(std::io::Cursor::new(buf), Path::new(id))?;
    }

    // Tokens.
    let store = RedbStore::open(&data)?;
    let tokens_dir = root.join("tokens");
    std::fs::create_dir_all(&tokens_dir)?;
    let mut sites = Vec::new();
    for site in m.sites.keys() {
        let t = Token::generate()?;
        store.set_site_token(site, &t.hash())?;
        std::fs::write(tokens_dir.join(format!("{site}.token")), t.reveal())?;
        sites.push(site.to_string());
    }
    drop(store);
    let operator = Token::generate()?;
    let config = root.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "# Demo controller config (see docs/operators.md).\nsync_interval = \"2s\"\n\n[[operators]]\nname = \"demo\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
            operator.hash().to_hex()
        ),
    )?;
    Ok(Prepared {
        serve: ServeOptions {
            repo: repo.display().to_string(),
            branch: "main".into(),
            data,
            key,
            listen: opts.listen.clone(),
            sync_interval: Some(HumanDuration::from_secs(2)),
            config: Some(config),
        },
        root,
        operator_token: operator.reveal().to_owned(),
        sites,
    })
}

/// What to print once the controller listens.
pub fn banner(p: &Prepared, url: &str) -> String {
    let site = p.sites.first().cloned().unwrap_or_default();
    let repo = &p.serve.repo;
    let mut s = String::new();
    let _ = writeln!(s, "Touchline demo");
    let _ = writeln!(s, "  workspace:      {}", p.root.display());
    let _ = writeln!(s, "  controller:     {url}");
    let _ = writeln!(s, "  operator token: {}", p.operator_token);
    let _ = writeln!(
        s,
        "  site tokens:    {}/tokens/<site>.token ({} sites)",
        p.root.display(),
        p.sites.len()
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Try:");
    let _ = writeln!(
        s,
        "  open {url}/ in a browser and log in with the operator token (the status page)"
    );
    let _ = writeln!(
        s,
        "  curl -s -H 'Authorization: Bearer {}' {url}/api/sites | head -c 600",
        p.operator_token
    );
    let _ = writeln!(
        s,
        "  curl -s -H 'Authorization: Bearer {}' {url}/api/stats",
        p.operator_token
    );
    let _ = writeln!(
        s,
        "  curl -s -H \"Authorization: Bearer $(cat {}/tokens/{site}.token)\" {url}/v1/sites/{site}/bundle | head -c 300",
        p.root.display()
    );
    let _ = writeln!(
        s,
        "  # change the fleet: the controller picks the commit up within 2 s"
    );
    let _ = writeln!(
        s,
        "  cd {repo} && sed -i 's/volume: 80/volume: 70/' fleet.yaml && git commit -qam 'quieter' && cd -"
    );
    let _ = writeln!(
        s,
        "  curl -s -H 'Authorization: Bearer {}' {url}/api/commits | head -c 600",
        p.operator_token
    );
    let _ = writeln!(
        s,
        "  # a new software release for everyone: staged now, switched in the 03:00-05:00 window"
    );
    let _ = writeln!(
        s,
        "  cd {repo} && sed -i 's/version: 2.1.2/version: 2.1.3/' fleet.yaml && git commit -qam '2.1.3 for all' && cd -"
    );
    let _ = writeln!(
        s,
        "  curl -s -H 'Authorization: Bearer {}' {url}/api/releases | head -c 600",
        p.operator_token
    );
    let _ = writeln!(
        s,
        "  # ask a box for its hardware and OS: the request rides its long-poll, signed"
    );
    let _ = writeln!(
        s,
        "  curl -s -X POST -H 'Authorization: Bearer {}' -H 'content-type: application/json' -d '{{\"action\": \"system-info\"}}' {url}/api/sites/{site}/actions",
        p.operator_token
    );
    let _ = writeln!(
        s,
        "  curl -s -H 'Authorization: Bearer {}' {url}/api/sites/{site}/actions | head -c 600",
        p.operator_token
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Ctrl-C stops the demo and its boxes (the workspace stays for inspection)."
    );
    s
}

/// The `touchline-agent` binary next to this one, built when missing.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let bin = exe.with_file_name("touchline-agent");
    if bin.is_file() {
        return Ok(bin);
    }
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !sources.join("agent/Cargo.toml").is_file() {
        bail!(
            "`{}` is missing; install touchline-agent next to touchline",
            bin.display()
        );
    }
    let release = exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    eprintln!("building touchline-agent for the demo boxes (once)…");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q", "-p", "touchline-agent"])
        .current_dir(&sources);
    if release {
        cmd.arg("--release");
    }
    let st = cmd
        .status()
        .context("failed to run cargo to build touchline-agent")?;
    if !st.success() || !bin.is_file() {
        bail!("building touchline-agent failed; run `cargo build -p touchline-agent`");
    }
    Ok(bin)
}

/// Writes `boxes/<site>/agent.toml` for each site and starts one agent per
/// site against `url`. Logs go to `boxes/<site>/agent.log`.
pub fn start_boxes(p: &Prepared, url: &str, agent: &Path) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    for site in &p.sites {
        let dir = p.root.join("boxes").join(site);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "# Demo box for {site} (see agent/dist/agent.toml for every key).\ncontroller_url = \"{url}\"\nsite_id = \"{site}\"\ntoken_file = \"{}\"\ntrusted_keys = \"{}\"\nstate_dir = \"{}\"\nvideos_dir = \"{}\"\nconfig_path = \"{}\"\nheartbeat_interval = \"10s\"\nmetrics_interval = \"30s\"\nspace_reserve_bytes = 0\n# Releases: unpacked under software/releases/, software/current is the active one.\n# The demo has no real services to stop and start: the commands only log.\nsoftware_root = \"{}\"\nstop_command = [\"sh\", \"-c\", \"echo stopping the app of $TOUCHLINE_RELEASE\"]\nstart_command = [\"sh\", \"-c\", \"echo starting the app of $TOUCHLINE_RELEASE\"]\nupdate_lock = \"{}\"\n",
                p.root
                    .join("tokens")
                    .join(format!("{site}.token"))
                    .display(),
                p.serve.key.with_extension("key.pub").display(),
                dir.join("state").display(),
                dir.join("videos").display(),
                dir.join("app/configuration.json").display(),
                dir.join("software").display(),
                dir.join("update.lock").display(),
            ),
        )?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(agent)
            .args(["run", "--config"])
            .arg(&config)
            .env("TOUCHLINE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start `{}`", agent.display()))?;
        children.push(child);
    }
    Ok(children)
}

/// Prepares and runs the demo until `shutdown`.
pub async fn run(
    opts: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let prepared = tokio::task::spawn_blocking(move || prepare(&opts))
        .await
        .map_err(|e| anyhow!("demo setup failed: {e}"))??;
    let serve_opts = prepared.serve.clone();
    let agent = tokio::task::spawn_blocking(agent_binary)
        .await
        .map_err(|e| anyhow!("demo setup failed: {e}"))?;
    let boxes: Arc<Mutex<Vec<Child>>> = Arc::default();
    let boxes2 = boxes.clone();
    let result = serve(
        serve_opts,
        move |addr| {
            let url = format!("http://{addr}");
            let mut text = String::new();
            match agent.as_deref().map_err(|e| anyhow!("{e:#}")).and_then(|a| start_boxes(&prepared, &url, a)) {
                Ok(children) => {
                    let _ = writeln!(
                        text,
                        "Boxes: one touchline-agent per site, each under {}/boxes/<site>/ (videos/, app/configuration.json, agent.log):",
                        prepared.root.display()
                    );
                    let _ = writeln!(
                        text,
                        "  ls {}/boxes/{}/videos/*/*",
                        prepared.root.display(),
                        prepared.sites.first().cloned().unwrap_or_default()
                    );
                    let _ = writeln!(
                        text,
                        "  {} status --config {}/boxes/{}/agent.toml",
                        agent.as_deref().map(|a| a.display().to_string()).unwrap_or_default(),
                        prepared.root.display(),
                        prepared.sites.first().cloned().unwrap_or_default()
                    );
                    if let Ok(mut b) = boxes2.lock() {
                        *b = children;
                    }
                }
                Err(e) => {
                    let _ = writeln!(text, "Boxes not started: {e}");
                }
            }
            let banner = banner(&prepared, &url)
                .replace("Ctrl-C stops the demo", &format!("{text}\nCtrl-C stops the demo"));
            print!("{banner}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        },
        shutdown,
    )
    .await;
    // Stop the boxes (Ctrl-C in a terminal reached them already).
    if let Ok(mut b) = boxes.lock() {
        for c in b.iter_mut() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in b.iter_mut() {
            let _ = c.wait();
        }
    }
    result
}
