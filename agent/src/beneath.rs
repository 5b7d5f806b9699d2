//! Directories opened by handle, for the trees the club can write in
//! (`videos_dir`, the configuration's directory) and `software_root`
//! (releases, `current`, a package's unpack): every step below a root
//! is one path component opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` relative to the directory above it, so a symlink,
//! a `..` or a component swapped for a link between two steps is refused
//! by the kernel, never followed. The root itself is the configured path
//! and may be a symlink (a `videos_dir` on another disk).
//!
//! Files are read with `O_NOFOLLOW | O_NONBLOCK` and checked to be regular
//! by `fstat` on the open handle (a fifo never blocks a pass), created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` under an unpredictable temp name in the
//! directory's handle, renamed and unlinked by name in that handle
//! (neither follows a link).

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fsx;

/// What stands at a path that was not what the agent needed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A symbolic link (never followed).
    Symlink,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A fifo, socket or device.
    Special,
}

impl Kind {
    fn of(mode: u32) -> Self {
        Self::of_type(FileType::from_raw_mode(mode))
    }

    fn of_type(t: FileType) -> Self {
        match t {
            FileType::Symlink => Self::Symlink,
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Directory,
            _ => Self::Special,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Symlink => "a symlink",
            Self::File => "a file",
            Self::Directory => "a directory",
            Self::Special => "a fifo, socket or device",
        })
    }
}

/// A failure below a root.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// A component the agent needs as a directory (or a file) is something
    /// else: the club's, left alone.
    #[error("`{}` is {what}: not followed, left alone", path.display())]
    Occupied {
        /// The full path of the component.
        path: PathBuf,
        /// What stands there.
        what: Kind,
    },
    /// I/O on a path.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<BeneathError> for io::Error {
    fn from(e: BeneathError) -> Self {
        let kind = e.io().map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, e.to_string())
    }
}

impl BeneathError {
    /// The underlying I/O error, when there is one.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Occupied { .. } => None,
        }
    }
}

fn io_at(action: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> BeneathError {
    move |source| BeneathError::Io {
        action,
        path,
        source,
    }
}

/// What a name in a directory is, not following a symlink at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Missing,
    /// Something of this kind.
    Is(Kind),
}

/// A directory opened by handle, with the path it was reached by (for
/// messages and the stat index only: nothing is opened through it).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One component, checked to be a plain name (the kernel checks again:
/// `RESOLVE_BENEATH` refuses `..` and absolute names).
fn component(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a single path component"),
        ));
    }
    Ok(name)
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` beneath `dir`, falling back to `openat` with `O_NOFOLLOW` on a
/// kernel without it (before 5.6), where [`component`] already refused
/// anything but a plain name.
fn open_beneath(dir: impl AsFd, name: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat2(&dir, name, flags, mode, RESOLVE) {
        Err(Errno::NOSYS) => rustix::fs::openat(&dir, name, flags, mode),
        r => r,
    }
}

impl Dir {
    /// Opens a configured root (following a symlink at the root itself).
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a configured root, creating it (and its parents) first.
    pub fn create_root(path: &Path) -> io::Result<Self> {
        fsx::create_dirs(path)?;
        Self::open_root(path)
    }

    /// The path this directory was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// What stands at `name`, not following a symlink.
    pub fn entry(&self, name: &str) -> io::Result<Entry> {
        let name = component(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Entry::Is(Kind::of(st.st_mode))),
            Err(Errno::NOENT) => Ok(Entry::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of what stands at `name` (not following a symlink).
    pub fn size(&self, name: &str) -> Option<u64> {
        let st =
            rustix::fs::statat(&self.fd, component(name).ok()?, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        u64::try_from(st.st_size).ok()
    }

    /// Why `name` could not be opened as a directory or a file.
    fn occupied(&self, name: &str, errno: Errno, action: &'static str) -> BeneathError {
        match (errno, self.entry(name)) {
            (Errno::LOOP | Errno::NOTDIR | Errno::XDEV | Errno::ISDIR, Ok(Entry::Is(what))) => {
                BeneathError::Occupied {
                    path: self.child(name),
                    what,
                }
            }
            _ => BeneathError::Io {
                action,
                path: self.child(name),
                source: errno.into(),
            },
        }
    }

    /// The subdirectory `name` (`None`: nothing there); a symlink, file
    /// or fifo there is [`BeneathError::Occupied`].
    pub fn subdir(&self, name: &str) -> Result<Option<Dir>, BeneathError> {
        let checked = component(name).map_err(io_at("opening", self.child(name)))?;
        match open_beneath(
            &self.fd,
            checked,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.child(name),
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.occupied(name, e, "opening")),
        }
    }

    /// Walks `components` down from here (`None`: one of them is missing).
    pub fn walk<'a>(
        &self,
        components: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Dir>, BeneathError> {
        let mut at: Option<Dir> = None;
        for c in components {
            let here = at.as_ref().unwrap_or(self);
            match here.subdir(c)? {
                Some(d) => at = Some(d),
                None => return Ok(None),
            }
        }
        match at {
            Some(d) => Ok(Some(d)),
            None => self.try_clone().map(Some),
        }
    }

    /// Walks `components` down from here, creating what is missing (each
    /// creation fsynced in its parent). Returns the directory and how many
    /// of the trailing components it created.
    pub fn walk_creating<'a>(
        &self,
        components: impl IntoIterator<Item = &'a str>,
    ) -> Result<(Dir, usize), BeneathError> {
        let mut at = self.try_clone()?;
        let mut created = 0;
        for c in components {
            let next = match at.subdir(c)? {
                Some(d) => d,
                None => {
                    let checked = component(c).map_err(io_at("creating", at.child(c)))?;
                    match rustix::fs::mkdirat(&at.fd, checked, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_at("creating", at.child(c))(e.into())),
                    }
                    at.sync()?;
                    created += 1;
                    at.subdir(c)?.ok_or_else(|| {
                        io_at("creating", at.child(c))(io::Error::from(io::ErrorKind::NotFound))
                    })?
                }
            };
            at = next;
        }
        Ok((at, created))
    }

    fn try_clone(&self) -> Result<Dir, BeneathError> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(io_at("opening", self.path.clone()))?,
            path: self.path.clone(),
        })
    }

    /// Opens the regular file `name` for reading (`None`: nothing there);
    /// a symlink, directory or fifo there is [`BeneathError::Occupied`].
    pub fn open_file(&self, name: &str) -> Result<Option<File>, BeneathError> {
        let checked = component(name).map_err(io_at("opening", self.child(name)))?;
        let fd = match open_beneath(
            &self.fd,
            checked,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.occupied(name, e, "opening")),
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(io_at("reading", self.child(name)))?;
        if !meta.is_file() {
            return Err(BeneathError::Occupied {
                path: self.child(name),
                what: if meta.is_dir() {
                    Kind::Directory
                } else {
                    Kind::Special
                },
            });
        }
        Ok(Some(file))
    }

    /// Creates a temp file for `name` exclusively under a fresh
    /// unpredictable name (`O_CREAT | O_EXCL | O_NOFOLLOW`).
    pub fn create_temp(&self, name: &str) -> Result<(String, File), BeneathError> {
        let tmp =
            fsx::temp_name(name).map_err(io_at("naming a temp file for", self.child(name)))?;
        let fd = open_beneath(
            &self.fd,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io_at("creating", self.child(&tmp))(e.into()))?;
        Ok((tmp, File::from(fd)))
    }

    /// Hard-links `source` (a file of ours, outside the club's trees) to a
    /// fresh temp name for `name`; `linkat` never follows a symlink and
    /// fails on anything already at the name.
    pub fn link_temp(&self, source: &Path, name: &str) -> Result<String, BeneathError> {
        let tmp =
            fsx::temp_name(name).map_err(io_at("naming a temp file for", self.child(name)))?;
        rustix::fs::linkat(CWD, source, &self.fd, tmp.as_str(), AtFlags::empty())
            .map_err(|e| io_at("linking", self.child(&tmp))(e.into()))?;
        Ok(tmp)
    }

    /// Renames `from` over `to`, both in this directory (a symlink at `to`
    /// is replaced, not followed).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), BeneathError> {
        let (f, t) = (
            component(from).map_err(io_at("renaming", self.child(from)))?,
            component(to).map_err(io_at("renaming into", self.child(to)))?,
        );
        rustix::fs::renameat(&self.fd, f, &self.fd, t)
            .map_err(|e| io_at("renaming into", self.child(to))(e.into()))
    }

    /// Unlinks the non-directory `name` (a symlink is removed itself).
    /// `Ok(false)`: nothing was there.
    pub fn remove_file(&self, name: &str) -> Result<bool, BeneathError> {
        let checked = component(name).map_err(io_at("removing", self.child(name)))?;
        match rustix::fs::unlinkat(&self.fd, checked, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(Errno::ISDIR) => Err(BeneathError::Occupied {
                path: self.child(name),
                what: Kind::Directory,
            }),
            Err(e) => Err(io_at("removing", self.child(name))(e.into())),
        }
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &str) -> Result<(), BeneathError> {
        let checked = component(name).map_err(io_at("removing", self.child(name)))?;
        rustix::fs::unlinkat(&self.fd, checked, AtFlags::REMOVEDIR)
            .map_err(|e| io_at("removing", self.child(name))(e.into()))
    }

    /// Creates the directory `name`, which must not exist (a symlink or
    /// anything else there is an error), and opens it.
    pub fn create_dir(&self, name: &str, mode: u32) -> Result<Dir, BeneathError> {
        let checked = component(name).map_err(io_at("creating", self.child(name)))?;
        rustix::fs::mkdirat(&self.fd, checked, Mode::from_raw_mode(mode))
            .map_err(|e| io_at("creating", self.child(name))(e.into()))?;
        self.subdir(name)?.ok_or_else(|| {
            io_at("creating", self.child(name))(io::Error::from(io::ErrorKind::NotFound))
        })
    }

    /// Sets this directory's permission bits (on the handle).
    pub fn set_mode(&self, mode: u32) -> Result<(), BeneathError> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_at("setting the mode of", self.path.clone())(e.into()))
    }

    /// Puts a symlink to `target` at `name`: made under a fresh temp name
    /// and renamed over what is there (a file or a symlink is replaced, a
    /// directory is [`BeneathError::Occupied`]).
    pub fn symlink(&self, target: &Path, name: &str) -> Result<(), BeneathError> {
        let tmp =
            fsx::temp_name(name).map_err(io_at("naming a temp file for", self.child(name)))?;
        rustix::fs::symlinkat(target, &self.fd, tmp.as_str())
            .map_err(|e| io_at("linking", self.child(&tmp))(e.into()))?;
        self.replace_with(&tmp, name)
    }

    /// Hard-links the regular file `from` of `source` (a directory opened
    /// by handle) at `name` here, through a temp name renamed over what is
    /// there; `linkat` does not follow a symlink at `from`.
    pub fn hard_link(&self, source: &Dir, from: &str, name: &str) -> Result<(), BeneathError> {
        let from = component(from).map_err(io_at("linking", source.child(from)))?;
        let tmp =
            fsx::temp_name(name).map_err(io_at("naming a temp file for", self.child(name)))?;
        rustix::fs::linkat(&source.fd, from, &self.fd, tmp.as_str(), AtFlags::empty())
            .map_err(|e| io_at("linking", self.child(&tmp))(e.into()))?;
        self.replace_with(&tmp, name)
    }

    /// Renames the temp `tmp` over `name` unless a directory stands there;
    /// the temp is removed when that fails.
    pub fn replace_with(&self, tmp: &str, name: &str) -> Result<(), BeneathError> {
        let result = match self.entry(name) {
            Ok(Entry::Is(Kind::Directory)) => Err(BeneathError::Occupied {
                path: self.child(name),
                what: Kind::Directory,
            }),
            _ => self.rename(tmp, name),
        };
        if result.is_err() {
            let _ = self.remove_file(tmp);
        }
        result
    }

    /// The target of the symlink `name` (`None`: nothing there, or not a
    /// symlink); `readlinkat` reads the link itself.
    pub fn read_link(&self, name: &str) -> Result<Option<PathBuf>, BeneathError> {
        let checked = component(name).map_err(io_at("reading", self.child(name)))?;
        match rustix::fs::readlinkat(&self.fd, checked, Vec::new()) {
            Ok(target) => Ok(Some(PathBuf::from(OsStr::from_bytes(target.as_bytes())))),
            Err(Errno::NOENT | Errno::INVAL) => Ok(None),
            Err(e) => Err(io_at("reading", self.child(name))(e.into())),
        }
    }

    /// Renames `from` here to `to` in `dest` (both by handle; a symlink at
    /// `from` is moved itself).
    pub fn move_to(&self, from: &str, dest: &Dir, to: &str) -> Result<(), BeneathError> {
        let (f, t) = (
            component(from).map_err(io_at("renaming", self.child(from)))?,
            component(to).map_err(io_at("renaming into", dest.child(to)))?,
        );
        rustix::fs::renameat(&self.fd, f, &dest.fd, t)
            .map_err(|e| io_at("renaming into", dest.child(to))(e.into()))
    }

    /// Removes `name` and, when it is a directory, everything in it, by
    /// handle: a symlink anywhere in the tree is unlinked itself, never
    /// followed. Nothing there is not an error.
    pub fn remove_tree(&self, name: &str) -> Result<(), BeneathError> {
        match self
            .entry(name)
            .map_err(io_at("removing", self.child(name)))?
        {
            Entry::Missing => Ok(()),
            Entry::Is(Kind::Directory) => {
                if let Some(d) = self.subdir(name)? {
                    for (n, e) in d.list()? {
                        match e {
                            Entry::Is(Kind::Directory) => d.remove_tree(&n)?,
                            Entry::Missing => {}
                            Entry::Is(_) => {
                                d.remove_file(&n)?;
                            }
                        }
                    }
                }
                self.remove_dir(name)
            }
            Entry::Is(_) => self.remove_file(name).map(|_| ()),
        }
    }

    /// Flushes the whole filesystem this directory is on (one `syncfs`
    /// for many files written: an SD card pays per fsync).
    pub fn sync_filesystem(&self) -> Result<(), BeneathError> {
        rustix::fs::syncfs(&self.fd).map_err(|e| io_at("syncing", self.path.clone())(e.into()))
    }

    /// fsyncs this directory (a rename or unlink in it is durable).
    pub fn sync(&self) -> Result<(), BeneathError> {
        rustix::fs::fsync(&self.fd).map_err(|e| io_at("syncing", self.path.clone())(e.into()))
    }

    /// Replaces `name` with `bytes` through an exclusive temp file, fsync,
    /// rename and directory fsync; no temp is left on failure.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), BeneathError> {
        let (tmp, mut f) = self.create_temp(name)?;
        let result = f
            .write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io_at("writing", self.child(&tmp)))
            .and_then(|()| self.rename(&tmp, name))
            .and_then(|()| self.sync());
        if result.is_err() {
            let _ = self.remove_file(&tmp);
        }
        result
    }

    /// The names in this directory with what each is (not following
    /// symlinks); `.` and `..` left out.
    pub fn list(&self) -> Result<Vec<(String, Entry)>, BeneathError> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at("listing", self.path.clone())(e.into()))?;
        let dir =
            rustix::fs::Dir::new(fd).map_err(|e| io_at("listing", self.path.clone())(e.into()))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| io_at("listing", self.path.clone())(e.into()))?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let name = OsStr::from_bytes(raw).to_string_lossy().into_owned();
            // The listing's type can be unknown on some filesystems: ask.
            let what = match entry.file_type() {
                FileType::Unknown => self.entry(&name).unwrap_or(Entry::Missing),
                t => Entry::Is(Kind::of_type(t)),
            };
            out.push((name, what));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlinked_component_is_refused_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("videos");
        fs::create_dir_all(root.join("A")).unwrap();
        fs::create_dir_all(tmp.path().join("outside")).unwrap();
        symlink(tmp.path().join("outside"), root.join("B")).unwrap();
        fs::write(root.join("F"), b"x").unwrap();
        let r = Dir::create_root(&root).unwrap();
        assert!(r.walk(["A"]).unwrap().is_some());
        assert!(r.walk(["Z"]).unwrap().is_none());
        let e = r.walk(["B"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "`{}` is a symlink: not followed, left alone",
                root.join("B").display()
            )
        );
        let e = r.walk_creating(["F", "x"]).unwrap_err();
        assert!(e.to_string().contains("is a file: not followed"), "{e}");
        // `..` never leaves the root.
        assert!(r.subdir("..").is_err());
        let (d, created) = r.walk_creating(["A", "B", "C"]).unwrap();
        assert_eq!(created, 2);
        assert_eq!(d.path(), root.join("A/B/C"));
        assert!(
            fs::read_dir(tmp.path().join("outside"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_symlinked_root_is_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("disk/videos")).unwrap();
        symlink(tmp.path().join("disk/videos"), tmp.path().join("videos")).unwrap();
        let r = Dir::open_root(&tmp.path().join("videos")).unwrap();
        r.write_atomic("a", b"1").unwrap();
        assert_eq!(fs::read(tmp.path().join("disk/videos/a")).unwrap(), b"1");
    }

    #[test]
    fn files_are_opened_without_following_and_never_block_on_a_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Dir::open_root(tmp.path()).unwrap();
        fs::write(tmp.path().join("secret"), b"root").unwrap();
        symlink(tmp.path().join("secret"), tmp.path().join("link")).unwrap();
        rustix::fs::mknodat(
            CWD,
            tmp.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(
            r.open_file("link"),
            Err(BeneathError::Occupied {
                what: Kind::Symlink,
                ..
            })
        ));
        assert!(matches!(
            r.open_file("fifo"),
            Err(BeneathError::Occupied {
                what: Kind::Special,
                ..
            })
        ));
        assert!(r.open_file("none").unwrap().is_none());
        assert!(r.open_file("secret").unwrap().is_some());
        // Removing the link removes the link.
        assert!(r.remove_file("link").unwrap());
        assert_eq!(fs::read(tmp.path().join("secret")).unwrap(), b"root");
        let mut names: Vec<_> = r.list().unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["fifo", "secret"]);
    }
}
