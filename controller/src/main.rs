//! `touchline`: the operator CLI and the controller daemon. Parses the
//! arguments, sets up logging, calls the command's body in the library
//! (`touchline_controller::cli`) and turns its error into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use touchline_controller::cli::{
    Failure, Format, Ident, cmd_backup, cmd_content_add, cmd_demo, cmd_explain,
    cmd_generate_example, cmd_import_neopro, cmd_keygen, cmd_operator_token, cmd_render,
    cmd_restore, cmd_serve, cmd_site_enroll, cmd_site_token, cmd_validate, cmd_verify,
};
use touchline_controller::config::Role;
use touchline_controller::demo::{DemoOptions, default_manifests};
use touchline_controller::serve::ServeOptions;

/// Touchline: run a fleet of offline-prone boxes from git.
#[derive(Debug, Parser)]
#[command(name = "touchline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a manifests directory: schema, references, paths, conflicts.
    ///
    /// Prints every problem as `path:line:col: error|warning: message` and a
    /// summary. Exit status: 0 valid (warnings allowed), 1 invalid, 2 could
    /// not run.
    Validate {
        /// The manifests directory (holds fleet.yaml).
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Render bundles: one site to stdout, or every site into a directory.
    ///
    /// The bundle is canonical JSON, byte-identical across runs for the same
    /// files. Serial, commit and issue time come from git HEAD when DIR is
    /// the root of a git checkout (see --serial, --commit, --issued-at).
    Render {
        /// The manifests directory.
        dir: PathBuf,
        /// Render this site and print its bundle body on stdout.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        site: Option<String>,
        /// Render every site into --out as <site>.json.
        #[arg(long, requires = "out")]
        all: bool,
        /// Output directory for --all (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Sign with this OpenSSH Ed25519 private key: writes <site>.json.sig.
        #[arg(long, requires = "all")]
        key: Option<PathBuf>,
        #[command(flatten)]
        ident: Ident,
    },
    /// What a change of the manifests does to each box, between two
    /// revisions of the repository.
    ///
    /// Per affected site: release and agent release changes (downgrades
    /// flagged), videos added and removed with the bytes to download,
    /// configuration.json leaves and agent settings changed, each with the
    /// manifest file:line behind it; then totals and warnings. Exit status:
    /// 0 nothing changes, 1 changes, 2 could not run (a bad revision,
    /// invalid manifests: their diagnostics as `validate` prints them).
    Plan {
        /// The manifests directory (a git checkout or a folder in one).
        dir: PathBuf,
        /// The revision the change starts from (e.g. `origin/main`).
        #[arg(long)]
        base: String,
        /// The revision with the change.
        #[arg(long, default_value = "HEAD")]
        head: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = touchline_controller::plan::PlanFormat::Markdown)]
        format: touchline_controller::plan::PlanFormat,
        /// Download rate assumed for the time estimates, bytes per second,
        /// for the sites whose manifests set no `agent.max_download_rate`.
        #[arg(long, default_value_t = 1_000_000)]
        rate: u64,
    },
    /// Show every desired value of a site with the file:line that set it.
    Explain {
        /// The manifests directory.
        dir: PathBuf,
        /// The site.
        #[arg(long)]
        site: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Generate an Ed25519 signing key (OpenSSH format, mode 0600) and
    /// <out>.pub; prints the public key.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
        /// Comment in the public key line.
        #[arg(long, default_value = "touchline")]
        comment: String,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Verify a bundle and its detached SSHSIG signature offline.
    Verify {
        /// Trusted keys: a .pub file, authorized_keys or allowed_signers.
        #[arg(long)]
        key: PathBuf,
        /// The bundle (bundle.json).
        bundle: PathBuf,
        /// The signature (bundle.json.sig).
        signature: PathBuf,
        /// Also require the bundle to be for this site.
        #[arg(long)]
        site: Option<String>,
    },
    /// Content store: add files, generate the example content.
    #[command(subcommand)]
    Content(ContentCommand),
    /// Sites: mint tokens and one-time enrollment codes.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Operators: mint a token for the controller config file.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Turn NEOPRO site.conf files (KEY=VALUE or INI) into sites/<id>.yaml
    /// manifests, and report what did not map. Nothing is written when a
    /// file is wrong.
    ImportNeopro {
        /// site.conf files, or directories of them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The manifests directory (sites/ is created in it).
        #[arg(long)]
        out: PathBuf,
        /// Replace site files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Back up a controller (store snapshot, content, signing key, config)
    /// into one file, while it runs; checked before it is kept.
    Backup {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// The backup file to write (0600: it holds the signing key).
        #[arg(long)]
        out: PathBuf,
        /// The signing key, when no controller runs on --data.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The config file, when no controller runs on --data.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Restore a backup into a data directory (the controller stopped).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Data directory to restore into.
        #[arg(long)]
        data: PathBuf,
        /// Where to write the signing key (`.pub` beside it).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Replace a store, key or config that exists.
        #[arg(long)]
        force: bool,
    },
    /// Request a remote action on a box through a running controller (the
    /// one on --data, or --controller with TOUCHLINE_TOKEN), then follow it
    /// until the box is done and print its output. Exit 0 done, 1 failed,
    /// refused or expired, 2 not queued.
    Action(touchline_controller::remote::ActionArgs),
    /// Operator accounts (name, role, argon2id password, optional TOTP),
    /// whether or not `touchline serve` runs on the data directory.
    #[command(subcommand)]
    User(touchline_controller::user_cli::UserCommand),
    /// Run the whole system on this machine with the example fleet: a git
    /// repository, content, keys, tokens and the controller on a free
    /// loopback port. Ctrl-C stops it.
    Demo {
        /// The example manifests (default: ./fleet-manifests).
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Build the workspace here instead of a new temporary directory.
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Run the controller: follow the manifests repository, sign and serve
    /// bundles and content, ingest reports, serve the operator API.
    Serve {
        /// Manifests repository: a local path or a URL (file://, https://).
        #[arg(long)]
        repo: String,
        /// Branch to follow.
        #[arg(long, default_value = "main")]
        branch: String,
        /// Data directory (store, content, git mirror).
        #[arg(long)]
        data: PathBuf,
        /// Signing key (OpenSSH Ed25519, from `touchline keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Listen address; port 0 picks a free port (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// How often to fetch the repository (e.g. 30s); overrides the config.
        #[arg(long)]
        sync_interval: Option<touchline_schemas::HumanDuration>,
        /// Controller config file (TOML): operators, webhook secret, commit
        /// signature policy, retention.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Print a new operator token and the config entry that grants it.
    Token {
        /// Operator name (for the audit log).
        #[arg(long)]
        name: String,
        /// Role.
        #[arg(long, value_enum, default_value_t = Role::Viewer)]
        role: Role,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Mint a token for a site and print it (once; only its hash is kept).
    ///
    /// Works whether or not `touchline serve` runs on the same data
    /// directory: when it does, the token is minted through it.
    Token {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// The site.
        site: String,
        /// Replace an existing token (the box must be given the new one).
        #[arg(long)]
        rotate: bool,
    },
    /// Mint a one-time enrollment code for a new box of a site (printed
    /// once on stdout; how to use it on stderr). Redeeming it gives the
    /// site a new token.
    ///
    /// Works whether or not `touchline serve` runs on the same data
    /// directory.
    Enroll {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// The site.
        site: String,
        /// How long the code works (default: the running controller's
        /// enrollment.ttl; 24h when none runs).
        #[arg(long)]
        ttl: Option<touchline_schemas::HumanDuration>,
        /// The address boxes reach the controller at, for the printed
        /// commands (default: the running controller's
        /// enrollment.public_url).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ContentCommand {
    /// Store files in the content store (streaming, hashed while copying);
    /// prints `<sha256> <size>` per file.
    Add {
        /// Data directory of the controller.
        #[arg(long)]
        data: PathBuf,
        /// Also print a ready-to-paste videos/catalog.yaml entry per file.
        #[arg(long)]
        catalog_entry: bool,
        /// Files to add.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the example fleet's deterministic video and package content and
    /// check it against the catalog's sha256 and sizes.
    GenerateExample {
        /// The manifests directory (e.g. fleet-manifests).
        dir: PathBuf,
        /// Where to write the files (videos as <category>/<subcategory>/<file>,
        /// packages as releases/<version>.tar.gz).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    touchline_log::init("info");
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Validate { dir, format } => cmd_validate(&dir, format),
        Command::Render {
            dir,
            site,
            all: _,
            out,
            key,
            ident,
        } => cmd_render(&dir, site.as_deref(), out.as_deref(), key.as_deref(), ident),
        Command::Explain { dir, site, format } => cmd_explain(&dir, &site, format),
        Command::Plan {
            dir,
            base,
            head,
            format,
            rate,
        } => touchline_controller::plan::cmd_plan(&dir, &base, &head, format, rate),
        Command::Keygen {
            out,
            comment,
            force,
        } => cmd_keygen(&out, &comment, force),
        Command::Verify {
            key,
            bundle,
            signature,
            site,
        } => cmd_verify(&key, &bundle, &signature, site.as_deref()),
        Command::Content(ContentCommand::GenerateExample { dir, out }) => {
            cmd_generate_example(&dir, &out)
        }
        Command::Content(ContentCommand::Add {
            data,
            catalog_entry,
            files,
        }) => cmd_content_add(&data, catalog_entry, &files),
        Command::Operator(OperatorCommand::Token { name, role }) => cmd_operator_token(&name, role),
        Command::ImportNeopro { inputs, out, force } => cmd_import_neopro(&inputs, &out, force),
        Command::Action(a) => touchline_controller::remote::cmd_action(&a),
        Command::User(u) => touchline_controller::user_cli::cmd_user(u),
        Command::Backup {
            data,
            out,
            key,
            config,
        } => cmd_backup(&data, &out, key.as_deref(), config.as_deref()),
        Command::Restore {
            file,
            data,
            key,
            config,
            force,
        } => cmd_restore(&file, &data, &key, config.as_deref(), force),
        Command::Demo {
            manifests,
            workspace,
            listen,
        } => cmd_demo(DemoOptions {
            manifests: manifests.unwrap_or_else(default_manifests),
            workspace,
            listen,
        }),
        Command::Site(SiteCommand::Token { data, site, rotate }) => {
            cmd_site_token(&data, &site, rotate)
        }
        Command::Site(SiteCommand::Enroll {
            data,
            site,
            ttl,
            url,
        }) => cmd_site_enroll(&data, &site, ttl, url.as_deref()),
        Command::Serve {
            repo,
            branch,
            data,
            key,
            listen,
            sync_interval,
            config,
        } => cmd_serve(ServeOptions {
            repo,
            branch,
            data,
            key,
            listen,
            sync_interval,
            config,
        }),
    }
}
