//! Parsing the manifest files into typed documents that remember where each
//! value came from. Problems of one file (bad YAML, unknown field, wrong
//! type, wrong name) are diagnostics; parsing goes on with the other files
//! so that one run reports everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use touchline_schemas::manifest::{Catalog, Fleet, Group, Release, Site};
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
}

/// Parses every file of `set`. Returns what parsed and every problem.
pub fn parse(set: &SourceSet) -> (Manifests, Diagnostics) {
    let mut m = Manifests {
        files_read: set.files.len() + set.skipped.len(),
        ..Manifests::default()
    };
    let mut diags = Diagnostics::default();
    for skipped in &set.skipped {
        diags.warning(&skipped.path, Pos::START, skipped.reason);
    }
    for file in &set.files {
        parse_file(file, &mut m, &mut diags);
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

fn parse_file(file: &SourceFile, m: &mut Manifests, diags: &mut Diagnostics) {
    let before = diags.errors();
    parse_file_inner(file, m, diags);
    if diags.errors() > before
        && let Some((kind, _)) = kind_of(&file.path)
    {
        match kind {
            Kind::Site => m.broken.sites = true,
            Kind::Group => m.broken.groups = true,
            Kind::Catalog => m.broken.catalog = true,
            Kind::Release => m.broken.releases = true,
            Kind::Fleet => {}
        }
    }
}

fn parse_file_inner(file: &SourceFile, m: &mut Manifests, diags: &mut Diagnostics) {
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
            return;
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
            return;
        }
    };
    let (kind, stem) = match kind_of(path) {
        Some(k) => k,
        None => return,
    };
    let Some(pos) = yaml::positions(text) else {
        diags.error(
            path,
            Pos::START,
            format!("file is empty: expected {}", kind.what()),
        );
        return;
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
                    return;
                }
            }
        };
    }
    let name_mismatch = |diags: &mut Diagnostics, doc_pos: Pos, what: &str, id: &str| {
        diags.error(
            path,
            doc_pos,
            format!("{what} `{id}` does not match the file name `{path}`; rename the file to `{id}.yaml` or fix the {what}"),
        );
    };
    match kind {
        Kind::Fleet => m.fleet = Some(typed!(Fleet)),
        Kind::Catalog => m.catalog = Some(typed!(Catalog)),
        Kind::Site => {
            let doc = typed!(Site);
            if doc.value.id.as_str() != stem {
                name_mismatch(
                    diags,
                    doc.at(&["id".into()]),
                    "site id",
                    doc.value.id.as_str(),
                );
            }
            if m.sites.contains_key(&doc.value.id) {
                diags.error(
                    path,
                    doc.at(&["id".into()]),
                    format!("duplicate site id `{}`", doc.value.id),
                );
            } else {
                m.sites.insert(doc.value.id.clone(), doc);
            }
        }
        Kind::Group => {
            let doc = typed!(Group);
            if doc.value.id.as_str() != stem {
                name_mismatch(
                    diags,
                    doc.at(&["id".into()]),
                    "group id",
                    doc.value.id.as_str(),
                );
            }
            if m.groups.contains_key(&doc.value.id) {
                diags.error(
                    path,
                    doc.at(&["id".into()]),
                    format!("duplicate group id `{}`", doc.value.id),
                );
            } else {
                m.groups.insert(doc.value.id.clone(), doc);
            }
        }
        Kind::Release => {
            let doc = typed!(Release);
            let v = doc.value.version.to_string();
            if v != stem {
                name_mismatch(diags, doc.at(&["version".into()]), "release version", &v);
            }
            if m.releases.contains_key(&doc.value.version) {
                diags.error(
                    path,
                    doc.at(&["version".into()]),
                    format!("duplicate release `{v}`"),
                );
            } else {
                m.releases.insert(doc.value.version.clone(), doc);
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
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Fleet => "the fleet definition (name, timezone, defaults)",
            Kind::Catalog => "the video catalog (videos: [...])",
            Kind::Site => "a site definition (id, name, club, location, ...)",
            Kind::Group => "a group definition (id, priority, selector or sites, desired)",
            Kind::Release => "a release definition (version, package, health_check)",
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
        _ => return None,
    };
    Some((kind, stem))
}
