//! `touchline import-neopro`: NEOPRO's `site.conf` files (both forms, read
//! by `touchline_schemas::neopro`) into `sites/<id>.yaml` manifests ready
//! for a pull request, and a report of what did not map.
//!
//! Every file is read and checked before anything is written: a file that
//! does not read, a missing id, two files for one site, or a site file
//! already there (without `--force`) is an error naming the file and line,
//! and then nothing is written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use touchline_schemas::SiteId;
use touchline_schemas::neopro::{Field, Form, SiteConf, normalise_id};

/// A site.conf, read and mapped.
#[derive(Debug)]
pub struct Imported {
    /// The file it came from.
    pub from: PathBuf,
    /// The site.
    pub id: SiteId,
    /// The manifest text.
    pub yaml: String,
    /// What the operator should know (unmapped keys, missing fields).
    pub notes: Vec<String>,
}

/// The site.conf files named: files as given, and the regular files of
/// directories (not hidden, not recursive), in name order.
pub fn inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for a in args {
        let meta = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)
                .map_err(|e| format!("{}: {e}", a.display()))?
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{}: no file in this directory", a.display()));
            }
            out.extend(files);
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

/// Reads and maps every file; all the errors (`file:line: message`) when
/// any file is wrong.
pub fn read_all(files: &[PathBuf]) -> Result<Vec<Imported>, Vec<String>> {
    let mut errors = Vec::new();
    let mut done: Vec<(Imported, usize)> = Vec::new();
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                errors.push(format!("{}: cannot read it: {e}", f.display()));
                continue;
            }
        };
        let (imported, line) = match read_one(f, &bytes) {
            Ok(x) => x,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if let Some((other, other_line)) = done.iter().find(|(i, _)| i.id == imported.id) {
            errors.push(format!(
                "{}:{line}: error: site `{}` again: {}:{other_line} maps to the same id",
                f.display(),
                imported.id,
                other.from.display()
            ));
            continue;
        }
        done.push((imported, line));
    }
    if errors.is_empty() {
        Ok(done.into_iter().map(|(i, _)| i).collect())
    } else {
        Err(errors)
    }
}

/// Why a site.conf does not import: its file and line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: error: {message}", file.display())]
pub struct ImportError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads and maps one file's bytes (`file` names it): the site and the
/// line of its id.
pub fn read_one(file: &Path, bytes: &[u8]) -> Result<(Imported, usize), ImportError> {
    let at = |e: touchline_schemas::neopro::ConfError| ImportError {
        file: file.to_path_buf(),
        line: e.line,
        message: e.message,
    };
    let conf = SiteConf::parse(bytes).map_err(at)?;
    let id = conf.site_id().map_err(at)?;
    let line = conf.line(Field::SiteId).unwrap_or(1);
    Ok((map(file, &conf, id), line))
}

/// A YAML string scalar: JSON's quoting is YAML's double-quoted style,
/// and what YAML reads otherwise than JSON is escaped too: the characters
/// it takes for line breaks (U+2028, U+2029, folded away), a byte order
/// mark, and those outside its printable set (U+007F-U+009F, U+FFFE,
/// U+FFFF).
fn q(s: &str) -> String {
    let json = serde_json::Value::String(s.to_owned()).to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        ) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn map(file: &Path, c: &SiteConf, id: SiteId) -> Imported {
    let mut notes = Vec::new();
    let mut missing = |what: &str, key: &str| {
        notes.push(format!("missing {key}: {what}"));
    };
    let raw_id = c.get(Field::SiteId).unwrap_or_default();
    let club = c.get(Field::Club);
    let name = c.get(Field::Name).or(club).unwrap_or(id.as_str());
    if c.get(Field::Name).is_none() {
        missing("name is the club's or the id", key(c, "SITE_NAME", "name"));
    }
    let club = club.unwrap_or(name);
    if c.get(Field::Club).is_none() {
        missing("club is the name", key(c, "CLUB_NAME", "club_name"));
    }
    let city = c.get(Field::City).unwrap_or_default();
    if city.is_empty() {
        missing(
            "location.city is empty, fill it",
            key(c, "LOCATION_CITY", "location_city"),
        );
    }
    let region = c.get(Field::Region).unwrap_or_default();
    if region.is_empty() {
        missing(
            "location.region is empty, fill it",
            key(c, "LOCATION_REGION", "location_region"),
        );
    }
    let country = c.get(Field::Country).unwrap_or("France");
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Imported from {} by `touchline import-neopro`: review it, set the\n# coordinates, then commit.",
        q(&file.display().to_string())
    );
    if raw_id != id.as_str() {
        let _ = writeln!(y, "# The site.conf's id was {}.", q(raw_id));
    }
    let _ = writeln!(y, "id: {id}\nname: {}\nclub: {}", q(name), q(club));
    let _ = writeln!(
        y,
        "location:\n  city: {}\n  region: {}\n  country: {}\n  latitude: 0.0   # not in site.conf: set it\n  longitude: 0.0",
        q(city),
        q(region),
        q(country)
    );
    let sports: Vec<SiteId> = c
        .get(Field::Sports)
        .unwrap_or_default()
        .split(',')
        .filter_map(normalise_id)
        .collect();
    let region_label = normalise_id(region);
    if !sports.is_empty() || region_label.is_some() {
        y.push_str("labels:\n");
        if let Some(s) = sports.first() {
            let _ = writeln!(y, "  sport: {s}");
        }
        if let Some(r) = &region_label {
            let _ = writeln!(y, "  region: {r}");
        }
    }
    if sports.len() > 1 {
        let rest: Vec<&str> = sports[1..].iter().map(SiteId::as_str).collect();
        notes.push(format!(
            "sports: a label holds one value; `sport` is {}, not mapped: {}",
            sports[0],
            rest.join(", ")
        ));
    }
    if let Some(h) = c.get(Field::Hardware) {
        let _ = writeln!(y, "hardware: {}", q(h));
    }
    let box_side: Vec<&str> = [
        (Field::NeoproRoot, "NEOPRO_ROOT"),
        (Field::VideosPath, "VIDEOS_PATH"),
        (Field::ConfigPath, "CONFIG_PATH"),
        (Field::MaxDownloadSize, "MAX_DOWNLOAD_SIZE"),
    ]
    .into_iter()
    .filter(|(f, _)| c.get(*f).is_some())
    .map(|(_, k)| k)
    .collect();
    if !box_side.is_empty() {
        notes.push(format!(
            "on the box, `touchline-agent enroll --from-neopro` carries: {}",
            box_side.join(", ")
        ));
    }
    if let Some(h) = c.get(Field::AutoUpdateHour) {
        notes.push(format!(
            "AUTO_UPDATE_HOUR={h} (line {}): not mapped; the manifests' maintenance windows say when a box may switch",
            c.line(Field::AutoUpdateHour).unwrap_or(0)
        ));
    }
    for u in &c.unmapped {
        notes.push(if u.secret {
            format!(
                "{} (line {}): a secret of the old system, not copied",
                u.key, u.line
            )
        } else {
            format!("{} (line {}): not mapped", u.key, u.line)
        });
    }
    Imported {
        from: file.to_owned(),
        id,
        yaml: y,
        notes,
    }
}

fn key(c: &SiteConf, kv: &'static str, ini: &'static str) -> &'static str {
    match c.form {
        Form::KeyValue => kv,
        Form::Ini => ini,
    }
}

/// Writes `sites/<id>.yaml` under `out` for each; refuses (writing
/// nothing) when one exists and `force` is off.
pub fn write_all(out: &Path, sites: &[Imported], force: bool) -> Result<Vec<PathBuf>, Vec<String>> {
    let dir = out.join("sites");
    let targets: Vec<PathBuf> = sites
        .iter()
        .map(|s| dir.join(format!("{}.yaml", s.id)))
        .collect();
    if !force {
        let there: Vec<String> = targets
            .iter()
            .zip(sites)
            .filter(|(t, _)| t.symlink_metadata().is_ok())
            .map(|(t, s)| {
                format!(
                    "{}: error: {} exists (site `{}` is in the manifests already); pass --force to replace it",
                    s.from.display(),
                    t.display(),
                    s.id
                )
            })
            .collect();
        if !there.is_empty() {
            return Err(there);
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    for (t, s) in targets.iter().zip(sites) {
        crate::keys::write_atomic(t, s.yaml.as_bytes(), 0o644)
            .map_err(|e| vec![format!("{}: {e}", t.display())])?;
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_yaml_line_breaks_read_back_as_they_were() {
        // Found by fuzzing: " \u{2029}" was folded away by YAML, and
        // U+FFFF refused.
        let conf =
            "SITE_ID=x\nSITE_NAME=Ch\u{e2}teaubriant \u{2029}salle\u{2028}A\u{feff}\u{ffff}\n";
        let (site, _) = read_one(Path::new("site.conf"), conf.as_bytes()).unwrap();
        let back: touchline_schemas::manifest::Site = serde_yaml::from_str(&site.yaml).unwrap();
        assert_eq!(
            back.name,
            "Ch\u{e2}teaubriant \u{2029}salle\u{2028}A\u{feff}\u{ffff}"
        );
    }
}
