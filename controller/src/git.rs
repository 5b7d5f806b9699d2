//! Following the manifests repository with git2: a bare mirror under
//! `<data>/git`, fetched from a local path or a URL (file://, https://),
//! manifests read straight from the fetched commit's tree (no work tree),
//! fast-forward checks, and SSH commit signature checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{ObjectType, Oid, Repository};
use touchline_schemas::TrustedKeys;

use crate::source::{self, Kind, MAX_MANIFEST_BYTES, Skipped, SourceFile, SourceSet};

/// A git failure, naming the repository or commit.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Opening or creating the mirror.
    #[error("failed to open the git mirror `{0}`")]
    Open(PathBuf, #[source] git2::Error),
    /// Fetching.
    #[error("failed to fetch branch `{branch}` from `{url}`")]
    Fetch {
        /// Remote.
        url: String,
        /// Branch.
        branch: String,
        /// Why.
        #[source]
        source: git2::Error,
    },
    /// Reading objects.
    #[error("failed to read commit {commit}")]
    Read {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: git2::Error,
    },
}

/// Why a revision's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature at all.
    #[error("commit {0} is not signed")]
    Unsigned(String),
    /// A GPG (or other) signature.
    #[error(
        "commit {0} is not signed with an SSH key (only gpg.format=ssh signatures are accepted)"
    )]
    NotSsh(String),
    /// Not by a trusted key, or not valid.
    #[error("commit {id}: {error}")]
    Invalid {
        /// The commit.
        id: String,
        /// Why.
        error: String,
    },
    /// The source has no signatures (a directory).
    #[error("revision {0} is a directory, which has no signatures")]
    NotSigned(String),
    /// Not a revision of this source.
    #[error("unknown revision {0}")]
    Unknown(String),
}

/// A bare mirror of the manifests repository.
pub struct Follower {
    repo: Repository,
    url: String,
    /// `url` with its credentials replaced: what messages and logs show.
    shown: String,
    branch: String,
    credentials: Option<RepoCredentials>,
}

/// The user name and password (or token) the manifests repository asks
/// for over HTTP(S), read from a file of their own (`repo_credentials_file`)
/// so that no secret sits in a URL, a command line or a process list.
#[derive(Clone)]
pub struct RepoCredentials {
    user: String,
    secret: String,
}

impl std::fmt::Debug for RepoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why a credentials file is refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Unreadable.
    #[error("failed to read the repository credentials file `{0}`")]
    Read(PathBuf, #[source] std::io::Error),
    /// Readable by others than its owner.
    #[error(
        "the repository credentials file `{path}` can be read by others (mode {mode:04o}): `chmod 600` it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not one `user:secret` line.
    #[error(
        "the repository credentials file `{0}` must hold one line `user:password` (or `user:token`)"
    )]
    Format(PathBuf),
    /// Credentials twice.
    #[error(
        "the repository URL carries credentials and repo_credentials_file is set: keep them in the file only"
    )]
    Twice,
}

impl RepoCredentials {
    /// Reads `user:secret` from `path`, which only its owner may read.
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |e| CredentialsError::Read(path.to_path_buf(), e);
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > 64 * 1024 {
            return Err(CredentialsError::Format(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(CredentialsError::Format(path.to_path_buf()));
        };
        match line.trim().split_once(':') {
            Some((user, secret)) if !user.is_empty() && !secret.is_empty() => Ok(Self {
                user: user.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => Err(CredentialsError::Format(path.to_path_buf())),
        }
    }
}

/// `url` with any user name and password replaced by `***` (a token in
/// `https://user:token@host/…` must never reach a log, an error, `/healthz`
/// or a page). Not a URL (a path, `git@host:repo`): as it is.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if carries_credentials(&u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn carries_credentials(u: &url::Url) -> bool {
    !u.username().is_empty() || u.password().is_some()
}

/// Whether `url` carries a user name or a password.
pub fn url_has_credentials(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| carries_credentials(&u))
}

/// `text` with every occurrence of `url`'s credentials (the whole URL, its
/// password, its user name) replaced by the redacted URL or `***`.
fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    if let Ok(u) = url::Url::parse(url) {
        for secret in [u.password().unwrap_or(""), u.username()] {
            if secret.len() >= 3 {
                out = out.replace(secret, "***");
            }
        }
    }
    out
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("url", &self.shown)
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

/// A commit's identity and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Id.
    pub id: Oid,
    /// First-parent commit count.
    pub serial: u64,
    /// First line of the message.
    pub summary: String,
}

/// Removes the `*.lock` files a killed fetch left in the mirror (a ref
/// being updated, `packed-refs`, `config`): with one of them present every
/// later fetch fails with "failed to lock file … for writing". Only this
/// controller writes its mirror (the store's lock keeps a second one out),
/// so at open a lock file is always a leftover.
fn remove_stale_locks(mirror: &Path) {
    let mut dirs = vec![mirror.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else {
                continue;
            };
            let path = e.path();
            if ft.is_dir() {
                // Refs live in `refs/`; objects never hold locks worth a walk.
                if path.starts_with(mirror.join("refs")) || e.file_name() == "refs" {
                    dirs.push(path);
                }
            } else if ft.is_file() && e.file_name().to_string_lossy().ends_with(".lock") {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::warn!(
                        path = %path.display(),
                        "removed a lock file an interrupted fetch left in the mirror"
                    ),
                    Err(err) => tracing::warn!(
                        path = %path.display(),
                        error = %err,
                        "cannot remove a stale lock file of the mirror"
                    ),
                }
            }
        }
    }
}

impl Follower {
    /// Opens (creating) the mirror in `<data>/git` following `branch` of `url`.
    /// A local path is made absolute.
    pub fn open(data: &Path, url: &str, branch: &str) -> Result<Self, GitError> {
        Self::open_with(data, url, branch, None)
    }

    /// [`Follower::open`], authenticating with `credentials` when the
    /// remote asks for them.
    pub fn open_with(
        data: &Path,
        url: &str,
        branch: &str,
        credentials: Option<RepoCredentials>,
    ) -> Result<Self, GitError> {
        let path = data.join("git");
        remove_stale_locks(&path);
        let repo = match Repository::open_bare(&path) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(&path).map_err(|e| GitError::Open(path.clone(), e))?,
        };
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            std::path::absolute(url)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| url.to_owned())
        };
        Ok(Self {
            repo,
            shown: redact_url(&url),
            url,
            branch: branch.to_owned(),
            credentials,
        })
    }

    /// `text` without the URL's credentials nor the credentials file's
    /// secret.
    fn redact(&self, text: &str) -> String {
        let text = redact_in(text, &self.url);
        match &self.credentials {
            Some(c) => text.replace(&c.secret, "***"),
            None => text,
        }
    }

    /// The remote being followed, its credentials redacted.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// Fetches the branch; returns its tip.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let err = |source: git2::Error| GitError::Fetch {
            url: self.shown.clone(),
            branch: self.branch.clone(),
            source: git2::Error::new(source.code(), source.class(), self.redact(source.message())),
        };
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(err)?;
        let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}", b = self.branch);
        let mut opts = git2::FetchOptions::new();
        opts.download_tags(git2::AutotagOption::None);
        if let Some(creds) = &self.credentials {
            // libgit2 asks again after a refusal: answer once, then fail
            // (a wrong password must not loop).
            let mut asked = false;
            let mut callbacks = git2::RemoteCallbacks::new();
            callbacks.credentials(move |_url, _user, allowed| {
                if asked || !allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                    return Err(git2::Error::from_str(
                        "the repository refused the user and password of repo_credentials_file",
                    ));
                }
                asked = true;
                git2::Cred::userpass_plaintext(&creds.user, &creds.secret)
            });
            opts.remote_callbacks(callbacks);
        }
        remote
            .fetch(&[refspec.as_str()], Some(&mut opts), None)
            .map_err(err)?;
        let reference = self
            .repo
            .find_reference(&format!("refs/remotes/origin/{}", self.branch))
            .map_err(err)?;
        reference.peel_to_commit().map(|c| c.id()).map_err(err)
    }

    fn read_err(&self, commit: Oid) -> impl Fn(git2::Error) -> GitError {
        move |source| GitError::Read {
            commit: commit.to_string(),
            source,
        }
    }

    /// Id, serial and summary of a commit.
    pub fn info(&self, id: Oid) -> Result<CommitInfo, GitError> {
        let e = self.read_err(id);
        let commit = self.repo.find_commit(id).map_err(&e)?;
        Ok(CommitInfo {
            id,
            serial: crate::revision::first_parent_count(&self.repo, id).map_err(&e)?,
            summary: commit
                .summary()
                .ok()
                .flatten()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        })
    }

    /// Whether `new` is `old` or descends from it.
    pub fn fast_forward(&self, old: Oid, new: Oid) -> Result<bool, GitError> {
        if old == new {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(new, old)
            .map_err(self.read_err(new))
    }

    /// Commits reachable from `to` but not from `from`, oldest first.
    pub fn range(&self, from: Option<Oid>, to: Oid) -> Result<Vec<Oid>, GitError> {
        let e = self.read_err(to);
        let mut walk = self.repo.revwalk().map_err(&e)?;
        walk.push(to).map_err(&e)?;
        if let Some(f) = from {
            walk.hide(f).map_err(&e)?;
        }
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)
            .map_err(&e)?;
        walk.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    /// Checks the SSH signature of a commit against `trusted` (namespace
    /// `git`, as `git commit -S` with `gpg.format=ssh` makes).
    pub fn check_signature(&self, id: Oid, trusted: &TrustedKeys) -> Result<(), SignatureError> {
        let id_s = id.to_string();
        let Ok((sig, data)) = self.repo.extract_signature(&id, None) else {
            return Err(SignatureError::Unsigned(id_s));
        };
        let sig = sig.as_str().unwrap_or_default();
        if !sig
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            return Err(SignatureError::NotSsh(id_s));
        }
        trusted
            .verify_in("git", &data, sig.as_bytes())
            .map(|_| ())
            .map_err(|e| SignatureError::Invalid {
                id: id_s,
                error: e.to_string(),
            })
    }

    /// The manifest files of a commit, as [`source::read_dir`] would read
    /// them from a checkout.
    pub fn source_set(&self, id: Oid) -> Result<SourceSet, GitError> {
        let e = self.read_err(id);
        let commit = self.repo.find_commit(id).map_err(&e)?;
        let tree = commit.tree().map_err(&e)?;
        tree_source_set(&self.repo, &tree).map_err(&e)
    }
}

/// The manifest files under `tree` (a commit's root, or the folder of a
/// commit that holds the manifests), as [`source::read_dir`] would read
/// them from a checkout.
pub fn tree_source_set(repo: &Repository, tree: &git2::Tree<'_>) -> Result<SourceSet, git2::Error> {
    {
        let odb = repo.odb()?;
        let mut set = SourceSet::default();
        let read = |path: &str,
                    entry: &git2::TreeEntry<'_>,
                    set: &mut SourceSet|
         -> Result<(), git2::Error> {
            if entry.filemode() == 0o120_000 {
                set.skipped.push(Skipped {
                    path: Arc::from(path),
                    reason: source::SKIP_SYMLINK,
                });
                return Ok(());
            }
            if entry.kind() != Some(ObjectType::Blob) {
                set.skipped.push(Skipped {
                    path: Arc::from(path),
                    reason: source::SKIP_NOT_FILE,
                });
                return Ok(());
            }
            let (size, _) = odb.read_header(entry.id())?;
            let content = if size as u64 > MAX_MANIFEST_BYTES {
                Err(size as u64)
            } else {
                Ok(repo.find_blob(entry.id())?.content().to_vec())
            };
            set.files.push(SourceFile {
                path: Arc::from(path),
                content,
            });
            Ok(())
        };
        for rel in [source::FLEET_FILE, source::CATALOG_FILE] {
            if let Ok(entry) = tree.get_path(Path::new(rel)) {
                read(rel, &entry, &mut set)?;
            }
        }
        for dir in source::DIRS {
            let Ok(entry) = tree.get_path(Path::new(dir)) else {
                continue;
            };
            // A symlink or a submodule where the folder should be is
            // said, never followed or silently dropped.
            let not_a_folder = match (entry.filemode(), entry.kind()) {
                (0o120_000, _) => Some(source::SKIP_SYMLINK),
                (_, Some(ObjectType::Commit)) => Some(source::SKIP_SUBMODULE),
                (_, Some(ObjectType::Tree)) => None,
                _ => Some(source::SKIP_NOT_DIR),
            };
            if let Some(reason) = not_a_folder {
                set.skipped.push(Skipped {
                    path: Arc::from(dir),
                    reason,
                });
                continue;
            }
            let sub = repo.find_tree(entry.id())?;
            for child in sub.iter() {
                let name = String::from_utf8_lossy(child.name_bytes()).into_owned();
                if source::has_control(&name) {
                    set.skipped.push(Skipped {
                        path: Arc::from(format!("{dir}/{}", source::shown(&name))),
                        reason: source::SKIP_CONTROL,
                    });
                    continue;
                }
                let name = name.as_str();
                let rel = format!("{dir}/{name}");
                match source::classify(name) {
                    Some(Kind::Manifest) => read(&rel, &child, &mut set)?,
                    Some(Kind::Misnamed) => set.skipped.push(Skipped {
                        path: rel.into(),
                        reason: source::SKIP_MISNAMED,
                    }),
                    None => {}
                }
            }
        }
        set.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch killed while it updated the branch's ref leaves
    /// `refs/remotes/origin/main.lock`; reopening the mirror removes it and
    /// fetches again (regression: the controller could not sync any more).
    #[test]
    fn a_lock_file_left_by_a_killed_fetch_does_not_stop_the_next_one() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let repo = Repository::init(&src).unwrap();
        std::fs::write(src.join("fleet.yaml"), "name: t\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("fleet.yaml")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        let head = repo
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        let branch = repo.head().unwrap().shorthand().unwrap().to_owned();
        let data = tmp.path().join("data");
        let f = Follower::open(&data, &src.display().to_string(), &branch).unwrap();
        assert_eq!(f.fetch().unwrap(), head);
        drop(f);
        let lock = data.join(format!("git/refs/remotes/origin/{branch}.lock"));
        std::fs::write(&lock, "").unwrap();
        // A new commit: the ref must move.
        let parent = repo.find_commit(head).unwrap();
        let next = repo
            .commit(Some("HEAD"), &sig, &sig, "d", &tree, &[&parent])
            .unwrap();
        let f = Follower::open(&data, &src.display().to_string(), &branch).unwrap();
        assert_eq!(f.fetch().unwrap(), next);
        assert!(!lock.exists());
    }
}
