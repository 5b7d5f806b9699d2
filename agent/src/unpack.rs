//! Unpacking a release package (`tar.gz`) into a staging directory, with
//! every entry checked before anything is written: no absolute path, no
//! `..`, no link pointing outside the release, no device or fifo, the
//! total size and the number of entries capped. A package that fails a
//! check is refused with the entry named; the staging directory is removed.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;
use touchline_schemas::manifest::PackageFormat;

use crate::beneath::{BeneathError, Dir, Entry, Kind};

/// Caps on what a package may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of the file sizes.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

/// Why a package was refused or could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry breaks a rule.
    #[error("entry `{entry}`: {why}")]
    Entry {
        /// The entry's path as written in the archive.
        entry: String,
        /// The rule.
        why: Rule,
    },
    /// Over a cap.
    #[error("{0}")]
    Limit(String),
    /// Not a readable archive.
    #[error("not a valid {format} archive: {source}")]
    Format {
        /// The expected format.
        format: &'static str,
        /// The reader's error.
        source: io::Error,
    },
    /// Local I/O (disk full…).
    #[error("writing `{path}`: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Local I/O through a directory handle, or something in the way.
    #[error(transparent)]
    Beneath(#[from] BeneathError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The rule an archive entry breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    /// `..` in its path.
    #[error("`..` in the path")]
    ParentDir,
    /// An absolute path.
    #[error("absolute path")]
    Absolute,
    /// An empty path (not a directory).
    #[error("empty path")]
    Empty,
    /// It would be written through a symlink the archive made earlier.
    #[error("goes through the symlink `{}`", .0.display())]
    ThroughSymlink(PathBuf),
    /// A parent of it is a file.
    #[error("`{}` is a file, not a directory", .0.display())]
    ParentIsFile(PathBuf),
    /// Fewer bytes than its header says.
    #[error("truncated: {copied} of {size} bytes")]
    Truncated {
        /// Bytes read.
        copied: u64,
        /// Bytes announced.
        size: u64,
    },
    /// A symlink without a target.
    #[error("symlink without a target")]
    SymlinkWithoutTarget,
    /// A symlink that points outside the release.
    #[error("symlink to `{}` points outside the release", .0.display())]
    SymlinkOutside(PathBuf),
    /// A hard link without a target.
    #[error("hard link without a target")]
    HardLinkWithoutTarget,
    /// A hard link whose target path is not inside the release.
    #[error("hard link to `{}` points outside the release ({why})", target.display())]
    HardLinkOutside {
        /// The target as written.
        target: PathBuf,
        /// What is wrong with it.
        why: Box<Rule>,
    },
    /// A hard link to something that is not a file of the package.
    #[error("hard link to `{}`, which is not a file earlier in the package", .0.display())]
    HardLinkToNothing(PathBuf),
    /// A device file or a fifo.
    #[error("device files and fifos are not allowed")]
    Device,
    /// Another entry type.
    #[error("unsupported entry type {0}")]
    Unsupported(String),
    /// A name that is not UTF-8.
    #[error("the name is not UTF-8")]
    NotUtf8,
    /// A directory of that name came earlier.
    #[error("a directory with that name came earlier in the package")]
    DirectoryExists,
}

/// A relative path made only of normal components, or why not.
fn safe_relative(p: &Path) -> Result<PathBuf, Rule> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(Rule::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(Rule::Absolute),
        }
    }
    Ok(out)
}

/// Whether a symlink at `link` (relative to the release) with `target`
/// stays inside the release, resolved lexically.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The components of a checked relative path, as names (a name that is
/// not UTF-8 is refused: the handles take `&str`).
fn names(rel: &Path) -> Result<Vec<&str>, Rule> {
    rel.iter()
        .map(|c| c.to_str().ok_or(Rule::NotUtf8))
        .collect()
}

/// The directory `comps` below the release's root, reached by handle
/// (created when `create`), one component at a time without following a
/// symlink (`None`: missing); a symlink or a file on the way is the
/// entry's fault, told by `bad`.
fn entry_dir(
    root: &Dir,
    comps: &[&str],
    create: bool,
    bad: &dyn Fn(Rule) -> UnpackError,
) -> Result<Option<Dir>, UnpackError> {
    let at = if create {
        root.walk_creating(comps.iter().copied())
            .map(|(d, _)| Some(d))
    } else {
        root.walk(comps.iter().copied())
    };
    at.map_err(|e| match e {
        BeneathError::Occupied { path, what } => {
            let rel = path
                .strip_prefix(root.path())
                .unwrap_or(&path)
                .to_path_buf();
            bad(match what {
                Kind::Symlink => Rule::ThroughSymlink(rel),
                _ => Rule::ParentIsFile(rel),
            })
        }
        other => other.into(),
    })
}

/// A directory standing where an entry goes is the entry's fault.
fn directory_there(bad: &dyn Fn(Rule) -> UnpackError) -> impl Fn(BeneathError) -> UnpackError {
    move |e| match e {
        BeneathError::Occupied { .. } => bad(Rule::DirectoryExists),
        other => other.into(),
    }
}

/// Unpacks `package` into `dest` (created; must not exist), reached from
/// its parent directory's path; see [`unpack_into`].
pub fn unpack(
    package: &Path,
    format: PackageFormat,
    dest: &Path,
    limits: Limits,
) -> Result<(), UnpackError> {
    let (Some(parent), Some(leaf)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str()))
    else {
        return Err(io_at(dest)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory name",
        )));
    };
    let parent = Dir::open_root(parent).map_err(io_at(parent))?;
    unpack_into(package, format, &parent, leaf, limits)
}

/// Unpacks `package` into the new directory `name` of `parent` (opened by
/// handle). On any error that directory is removed. Every entry is written
/// through directory handles beneath it (`openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`, temp names renamed into place), so no entry is
/// written through a symlink, whoever made it. Files are made durable with
/// one `syncfs` at the end.
pub fn unpack_into(
    package: &Path,
    format: PackageFormat,
    parent: &Dir,
    name: &str,
    limits: Limits,
) -> Result<(), UnpackError> {
    let result = unpack_inner(package, format, parent, name, limits);
    if result.is_err() {
        // By handle: a symlink in the tree is unlinked, not followed.
        let _ = parent.remove_tree(name);
    }
    result
}

fn unpack_inner(
    package: &Path,
    format: PackageFormat,
    parent: &Dir,
    leaf: &str,
    limits: Limits,
) -> Result<(), UnpackError> {
    let reader: Box<dyn Read> = match format {
        PackageFormat::TarGz => Box::new(flate2::read::GzDecoder::new(
            File::open(package).map_err(io_at(package))?,
        )),
        PackageFormat::TarZst => {
            return Err(UnpackError::Limit(
                "tar.zst packages are not supported by this agent; publish the release as tar.gz"
                    .into(),
            ));
        }
    };
    let format_err = |source| UnpackError::Format {
        format: "tar.gz",
        source,
    };
    let root = parent.create_dir(leaf, 0o755)?;
    let dest = root.path();
    let mut archive = tar::Archive::new(reader);
    let mut entries_seen = 0u64;
    let mut bytes = 0u64;
    for entry in archive.entries().map_err(format_err)? {
        let mut entry = entry.map_err(format_err)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(UnpackError::Limit(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let raw = entry.path().map_err(format_err)?.into_owned();
        let name = raw.display().to_string();
        let bad = |why: Rule| UnpackError::Entry {
            entry: name.clone(),
            why,
        };
        let kind = entry.header().entry_type();
        let rel = safe_relative(&raw).map_err(bad)?;
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue; // "./"
            }
            return Err(bad(Rule::Empty));
        }
        let parts = names(&rel).map_err(bad)?;
        let Some((leaf, parents)) = parts.split_last() else {
            return Err(bad(Rule::Empty));
        };
        // The entry's directory, created as needed (never missing then).
        let into = || entry_dir(&root, parents, true, &bad)?.ok_or_else(|| bad(Rule::Empty));
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => {
                entry_dir(&root, &parts, true, &bad)?
                    .ok_or_else(|| bad(Rule::Empty))?
                    .set_mode(mode | 0o700)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(format_err)?;
                bytes = bytes.saturating_add(size);
                if bytes > limits.max_bytes {
                    return Err(UnpackError::Limit(format!(
                        "unpacks to more than {} bytes (at `{name}`)",
                        limits.max_bytes
                    )));
                }
                let dir = into()?;
                let (tmp, mut out) = dir.create_temp(leaf)?;
                let written = io::copy(&mut (&mut entry).take(size), &mut out)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                            io_at(&dest.join(&rel))(e)
                        }
                        _ => format_err(e),
                    })
                    .and_then(|copied| {
                        if copied == size {
                            Ok(())
                        } else {
                            Err(bad(Rule::Truncated { copied, size }))
                        }
                    })
                    .and_then(|()| {
                        out.set_permissions(fs::Permissions::from_mode(mode))
                            .map_err(io_at(&dest.join(&rel)))
                    });
                drop(out);
                if let Err(e) = written {
                    let _ = dir.remove_file(&tmp);
                    return Err(e);
                }
                dir.replace_with(&tmp, leaf)
                    .map_err(directory_there(&bad))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(format_err)?
                    .ok_or_else(|| bad(Rule::SymlinkWithoutTarget))?
                    .into_owned();
                if !link_stays_inside(&rel, &link) {
                    return Err(bad(Rule::SymlinkOutside(link)));
                }
                into()?
                    .symlink(&link, leaf)
                    .map_err(directory_there(&bad))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(format_err)?
                    .ok_or_else(|| bad(Rule::HardLinkWithoutTarget))?
                    .into_owned();
                let link_rel = safe_relative(&link).map_err(|why| {
                    bad(Rule::HardLinkOutside {
                        target: link.clone(),
                        why: Box::new(why),
                    })
                })?;
                let link_parts = names(&link_rel).map_err(bad)?;
                let Some((from, from_parents)) = link_parts.split_last() else {
                    return Err(bad(Rule::HardLinkToNothing(link)));
                };
                let Some(source) = entry_dir(&root, from_parents, false, &bad)? else {
                    return Err(bad(Rule::HardLinkToNothing(link)));
                };
                if source.entry(from).map_err(io_at(dest))? != Entry::Is(Kind::File) {
                    return Err(bad(Rule::HardLinkToNothing(link)));
                }
                into()?
                    .hard_link(&source, from, leaf)
                    .map_err(directory_there(&bad))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(bad(Rule::Device));
            }
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => {
                return Err(bad(Rule::Unsupported(format!("{other:?}"))));
            }
        }
    }
    root.sync_filesystem()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    /// Builds a tar.gz from raw headers, so that hostile entries (which
    /// the `tar` builder refuses to write) can be made.
    fn package(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            for (path, kind, data, link) in entries {
                let mut h = tar::Header::new_old();
                {
                    let raw = h.as_old_mut();
                    raw.name[..path.len()].copy_from_slice(path.as_bytes());
                    if let Some(l) = link {
                        raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
                    }
                }
                h.set_entry_type(*kind);
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            b.into_inner().unwrap().finish().unwrap();
        }
        out
    }

    fn try_unpack(
        entries: &[(&str, EntryType, &[u8], Option<&str>)],
    ) -> (tempfile::TempDir, Result<(), UnpackError>) {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("p.tar.gz");
        fs::write(&pkg, package(entries)).unwrap();
        let dest = tmp.path().join("out");
        let r = unpack(&pkg, PackageFormat::TarGz, &dest, LIMITS);
        (tmp, r)
    }

    fn refused(entries: &[(&str, EntryType, &[u8], Option<&str>)], want: &str) {
        let (tmp, r) = try_unpack(entries);
        let msg = r.expect_err("must be refused").to_string();
        assert_eq!(msg, want);
        assert!(!tmp.path().join("out").exists(), "nothing left behind");
        assert!(!tmp.path().join("evil").exists());
    }

    #[test]
    fn a_good_package_unpacks_with_links_and_modes() {
        let (tmp, r) = try_unpack(&[
            ("app/", EntryType::Directory, b"", None),
            ("app/run.sh", EntryType::Regular, b"#!/bin/sh\n", None),
            ("app/current-run", EntryType::Symlink, b"", Some("run.sh")),
            ("app/www/index.html", EntryType::Regular, b"<p>hi</p>", None),
            ("app/www/up", EntryType::Symlink, b"", Some("../run.sh")),
            ("app/again.sh", EntryType::Link, b"", Some("app/run.sh")),
        ]);
        r.unwrap();
        let out = tmp.path().join("out");
        assert_eq!(fs::read(out.join("app/run.sh")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::read(out.join("app/current-run")).unwrap(),
            b"#!/bin/sh\n"
        );
        assert_eq!(fs::read(out.join("app/www/up")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(fs::read(out.join("app/again.sh")).unwrap(), b"#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(out.join("app/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        refused(
            &[("/etc/passwd", EntryType::Regular, b"x", None)],
            "entry `/etc/passwd`: absolute path",
        );
        refused(
            &[("app/../../evil", EntryType::Regular, b"x", None)],
            "entry `app/../../evil`: `..` in the path",
        );
        refused(
            &[("app/link", EntryType::Symlink, b"", Some("../../evil"))],
            "entry `app/link`: symlink to `../../evil` points outside the release",
        );
        refused(
            &[("link", EntryType::Symlink, b"", Some("/etc"))],
            "entry `link`: symlink to `/etc` points outside the release",
        );
        refused(
            &[("hard", EntryType::Link, b"", Some("../evil"))],
            "entry `hard`: hard link to `../evil` points outside the release (`..` in the path)",
        );
        refused(
            &[("hard", EntryType::Link, b"", Some("/etc/shadow"))],
            "entry `hard`: hard link to `/etc/shadow` points outside the release (absolute path)",
        );
        refused(
            &[("dev/sda", EntryType::Block, b"", None)],
            "entry `dev/sda`: device files and fifos are not allowed",
        );
        refused(
            &[("fifo", EntryType::Fifo, b"", None)],
            "entry `fifo`: device files and fifos are not allowed",
        );
        // A symlink inside the release, then a file written "through" it.
        refused(
            &[
                ("d", EntryType::Symlink, b"", Some(".")),
                ("d/x", EntryType::Regular, b"x", None),
            ],
            "entry `d/x`: goes through the symlink `d`",
        );
        // A file, a symlink or a hard link where a directory came earlier.
        for (kind, link) in [
            (EntryType::Regular, None),
            (EntryType::Symlink, Some("f")),
            (EntryType::Link, Some("f")),
        ] {
            refused(
                &[
                    ("f", EntryType::Regular, b"x", None),
                    ("d/", EntryType::Directory, b"", None),
                    ("d", kind, b"", link),
                ],
                "entry `d`: a directory with that name came earlier in the package",
            );
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_is_refused_and_nothing_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("p.tar.gz");
        let mut out = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            let mut h = tar::Header::new_old();
            let name = b"www/caf\xe9.html";
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(EntryType::Regular);
            h.set_size(2);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &b"hi"[..]).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        fs::write(&pkg, out).unwrap();
        let dest = tmp.path().join("out");
        let e = unpack(&pkg, PackageFormat::TarGz, &dest, LIMITS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry `www/caf\u{fffd}.html`: the name is not UTF-8"
        );
        assert!(!dest.exists(), "nothing left behind");
    }

    #[test]
    fn caps_on_size_and_entries() {
        let big = vec![0u8; (LIMITS.max_bytes + 1) as usize];
        refused(
            &[("big.bin", EntryType::Regular, &big, None)],
            "unpacks to more than 1048576 bytes (at `big.bin`)",
        );
        let names: Vec<String> = (0..=LIMITS.max_entries).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, EntryType, &[u8], Option<&str>)> = names
            .iter()
            .map(|n| (n.as_str(), EntryType::Regular, &b"x"[..], None))
            .collect();
        refused(&entries, "more than 100 entries");
    }

    #[test]
    fn not_an_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("p.tar.gz");
        fs::write(&pkg, b"this is not gzip at all").unwrap();
        let dest = tmp.path().join("out");
        let e = unpack(&pkg, PackageFormat::TarGz, &dest, LIMITS).unwrap_err();
        assert!(
            e.to_string().starts_with("not a valid tar.gz archive: "),
            "{e}"
        );
        assert!(!dest.exists());
    }
}
