//! Parsing the manifest files into typed documents that remember where each
//! value came from. Problems of one file (bad YAML, unknown field, wrong
//! type, wrong name) are diagnostics; parsing goes on with the other files
//! so that one run reports everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use touchline_schemas::manifest::{AgentRelease, Catalog, Fleet, Group, Release, Site};
use touchline_schemas::{GroupId, ReleaseVersion, SiteId};

use crate::diag::Diagnostics;
use crate::source::{CATALOG_FILE, FLEET_FILE, MAX_MANIFEST_BYTES, SourceFile, SourceSet};
use crate::yaml::{self, Pos, Positions, Seg};

/// A parsed manifest and where its nodes are.
#[derive(Debug)]
pub struct Doc<T> {
    /// Relative path of the file.
    pub file: Arc<str>,
    /// The typed content.
    pub value: T,
    /// Path → line:col.
    pub pos: Positions,
}

impl<T> Doc<T> {
    /// Position of a node, or of its nearest ancestor.
    pub fn at(&self, path: &[Seg]) -> Pos {
        self.pos.find(path)
    }
}

/// Every manifest that parsed.
#[derive(Debug, Default)]
pub struct Manifests {
    /// `fleet.yaml`.
    pub fleet: Option<Doc<Fleet>>,
    /// `sites/*.yaml` by id.
    pub sites: BTreeMap<SiteId, Doc<Site>>,
    /// `groups/*.yaml` by id.
    pub groups: BTreeMap<GroupId, Doc<Group>>,
    /// `videos/catalog.yaml`.
    pub catalog: Option<Doc<Catalog>>,
    /// `releases/*.yaml` by version.
    pub releases: BTreeMap<ReleaseVersion, Doc<Release>>,
    /// `agent-releases/*.yaml` by version.
    pub agent_releases: BTreeMap<ReleaseVersion, Doc<AgentRelease>>,
    /// How many files were read.
    pub files_read: usize,
    /// Kinds of file of which at least one did not parse. References into
    /// a broken kind are not reported as dangling: the parse error already
    /// says what to fix, and a cascade of "unknown" errors would hide it.
    pub broken: Broken,
}

/// Which kinds of manifest had a file that did not parse.
#[derive(Debug, Default, Clone, Copy)]
pub struct Broken {
    /// A site file.
    pub sites: bool,
    /// A group file.
    pub groups: bool,
    /// The catalog.
    pub catalog: bool,
    /// A release file.
    pub releases: bool,
    /// An agent release file.
    pub agent_releases: bool,
}

/// Parses every file of `set`. Returns what parsed and every problem.
///
/// Files are decoded on every core (each file on its own, no shared state),
/// then gathered in path order, so the result does not depend on threads.
pub fn parse(set: &SourceSet) -> (Manifests, Diagnostics) {
    let mut m = Manifests {
        files_read: set.files.len() + set.skipped.len(),
        ..Manifests::default()
    };
    let mut diags = Diagnostics::default();
    for skipped in &set.skipped {
        diags.warning(&skipped.path, Pos::START, skipped.reason);
    }
    for (file, decoded) in set.files.iter().zip(decode_all(&set.files)) {
        let failed = decoded.diags.has_errors();
        diags.extend(decoded.diags);
        match decoded.doc {
            Some(doc) => gather(doc, &mut m, &mut diags),
            None if failed => mark_broken(&file.path, &mut m),
            None => {}
        }
    }
    if m.fleet.is_none() && !set.files.iter().any(|f| &*f.path == FLEET_FILE) {
        diags.error(
            &Arc::from(FLEET_FILE),
            Pos::START,
            "missing fleet.yaml: every manifests repository needs one (name, timezone, defaults)",
        );
    }
    (m, diags)
}

fn mark_broken(path: &str, m: &mut Manifests) {
    match kind_of(path).map(|(k, _)| k) {
        Some(Kind::Site) => m.broken.sites = true,
        Some(Kind::Group) => m.broken.groups = true,
        Some(Kind::Catalog) => m.broken.catalog = true,
        Some(Kind::Release) => m.broken.releases = true,
        Some(Kind::AgentRelease) => m.broken.agent_releases = true,
        Some(Kind::Fleet) | None => {}
    }
}

/// One file, decoded on its own.
struct Decoded {
    doc: Option<AnyDoc>,
    diags: Diagnostics,
}

enum AnyDoc {
    Fleet(Doc<Fleet>),
    Catalog(Doc<Catalog>),
    Site(Doc<Site>, String),
    Group(Doc<Group>, String),
    Release(Doc<Release>, String),
    AgentRelease(Doc<AgentRelease>, String),
}

fn decode_all(files: &[SourceFile]) -> Vec<Decoded> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if threads < 2 || files.len() < 64 {
        return files.iter().map(decode).collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(decode).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A panic in a parser is a bug; surface it where it happened.
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

fn decode(file: &SourceFile) -> Decoded {
    let mut diags = Diagnostics::default();
    let doc = decode_inner(file, &mut diags);
    Decoded { doc, diags }
}

fn decode_inner(file: &SourceFile, diags: &mut Diagnostics) -> Option<AnyDoc> {
    let path = &file.path;
    let bytes = match &file.content {
        Ok(b) => b,
        Err(size) => {
            diags.error(
                path,
                Pos::START,
                format!(
                    "file is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit for a manifest; not parsed"
                ),
            );
            return None;
        }
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let col = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            let byte = bytes.get(e.valid_up_to()).copied().unwrap_or(0);
            diags.error(
                path,
                Pos {
                    line: u32::try_from(line).unwrap_or(u32::MAX),
                    col: u32::try_from(col).unwrap_or(u32::MAX),
                },
                format!("file is not valid UTF-8 (byte 0x{byte:02x}); save it as UTF-8"),
            );
            return None;
        }
    };
    let (kind, stem) = kind_of(path)?;
    if let Some(at) = yaml::too_deep(text) {
        diags.error(
            path,
            at,
            format!(
                "nesting is deeper than {} levels: a manifest never needs that many",
                yaml::MAX_DEPTH
            ),
        );
        return None;
    }
    let Some(pos) = yaml::positions(text) else {
        diags.error(
            path,
            Pos::START,
            format!("file is empty: expected {}", kind.what()),
        );
        return None;
    };
    macro_rules! typed {
        ($t:ty) => {
            match yaml::from_str::<$t>(text) {
                Ok(value) => Doc {
                    file: path.clone(),
                    value,
                    pos,
                },
                Err(e) => {
                    diags.error(path, e.pos.unwrap_or(Pos::START), e.message);
                    return None;
                }
            }
        };
    }
    Some(match kind {
        Kind::Fleet => AnyDoc::Fleet(typed!(Fleet)),
        Kind::Catalog => AnyDoc::Catalog(typed!(Catalog)),
        Kind::Site => AnyDoc::Site(typed!(Site), stem.to_owned()),
        Kind::Group => AnyDoc::Group(typed!(Group), stem.to_owned()),
        Kind::Release => AnyDoc::Release(typed!(Release), stem.to_owned()),
        Kind::AgentRelease => AnyDoc::AgentRelease(typed!(AgentRelease), stem.to_owned()),
    })
}

/// Adds a decoded document, checking its name and uniqueness.
fn gather(doc: AnyDoc, m: &mut Manifests, diags: &mut Diagnostics) {
    fn check_name<T>(
        diags: &mut Diagnostics,
        doc: &Doc<T>,
        key: &str,
        what: &str,
        id: &str,
        stem: &str,
    ) -> bool {
        if id == stem {
            return true;
        }
        diags.error(
            &doc.file,
            doc.at(&[key.into()]),
            format!(
                "{what} `{id}` does not match the file name `{}`; rename the file to `{id}.yaml` or fix the {what}",
                doc.file
            ),
        );
        false
    }
    match doc {
        AnyDoc::Fleet(d) => m.fleet = Some(d),
        AnyDoc::Catalog(d) => m.catalog = Some(d),
        AnyDoc::Site(d, stem) => {
            let mut ok = check_name(diags, &d, "id", "site id", d.value.id.as_str(), &stem);
            if m.sites.contains_key(&d.value.id) {
                diags.error(
                    &d.file,
                    d.at(&["id".into()]),
                    format!("duplicate site id `{}`", d.value.id),
                );
                ok = false;
            } else {
                m.sites.insert(d.value.id.clone(), d);
            }
            if !ok {
                m.broken.sites = true;
            }
        }
        AnyDoc::Group(d, stem) => {
            let mut ok = check_name(diags, &d, "id", "group id", d.value.id.as_str(), &stem);
            if m.groups.contains_key(&d.value.id) {
                diags.error(
                    &d.file,
                    d.at(&["id".into()]),
                    format!("duplicate group id `{}`", d.value.id),
                );
                ok = false;
            } else {
                m.groups.insert(d.value.id.clone(), d);
            }
            if !ok {
                m.broken.groups = true;
            }
        }
        AnyDoc::Release(d, stem) => {
            let v = d.value.version.to_string();
            let mut ok = check_name(diags, &d, "version", "release version", &v, &stem);
            if m.releases.contains_key(&d.value.version) {
                diags.error(
                    &d.file,
                    d.at(&["version".into()]),
                    format!("duplicate release `{v}`"),
                );
                ok = false;
            } else {
                m.releases.insert(d.value.version.clone(), d);
            }
            if !ok {
                m.broken.releases = true;
            }
        }
        AnyDoc::AgentRelease(d, stem) => {
            let v = d.value.version.to_string();
            let mut ok = check_name(diags, &d, "version", "agent release version", &v, &stem);
            if m.agent_releases.contains_key(&d.value.version) {
                diags.error(
                    &d.file,
                    d.at(&["version".into()]),
                    format!("duplicate agent release `{v}`"),
                );
                ok = false;
            } else {
                m.agent_releases.insert(d.value.version.clone(), d);
            }
            if !ok {
                m.broken.agent_releases = true;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Fleet,
    Catalog,
    Site,
    Group,
    Release,
    AgentRelease,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Fleet => "the fleet definition (name, timezone, defaults)",
            Kind::Catalog => "the video catalog (videos: [...])",
            Kind::Site => "a site definition (id, name, club, location, ...)",
            Kind::Group => "a group definition (id, priority, selector or sites, desired)",
            Kind::Release => "a release definition (version, package, health_check)",
            Kind::AgentRelease => "an agent release definition (version, binaries)",
        }
    }
}

fn kind_of(path: &str) -> Option<(Kind, &str)> {
    if path == FLEET_FILE {
        return Some((Kind::Fleet, "fleet"));
    }
    if path == CATALOG_FILE {
        return Some((Kind::Catalog, "catalog"));
    }
    let (dir, name) = path.split_once('/')?;
    let stem = name.strip_suffix(".yaml")?;
    let kind = match dir {
        "sites" => Kind::Site,
        "groups" => Kind::Group,
        "releases" => Kind::Release,
        "agent-releases" => Kind::AgentRelease,
        _ => return None,
    };
    Some((kind, stem))
}
