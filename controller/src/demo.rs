//! `touchline demo`: the whole system on this machine with the example fleet.
//!
//! Creates a workspace in a temporary directory: a real git repository made
//! from `fleet-manifests/`, the example content in the content store, a
//! signing key, a token per site and an admin operator token; then runs the
//! controller on a free loopback port until Ctrl-C.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Ctrl-C stops the demo (the workspace stays for inspection)."
    );
    s
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
    serve(
        serve_opts,
        move |addr| {
            print!("{}", banner(&prepared, &format!("http://{addr}")));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        },
        shutdown,
    )
    .await
}
