//! NEOPRO's `/etc/neopro/site.conf`, both forms found in the field: the
//! sync agent's `KEY=VALUE` lines (`SITE_ID=…`, `VIDEOS_PATH=…`) and the
//! central management spec's INI (`[site]` `id=…`, `[central]`,
//! `[features]`). [`SiteConf::parse`] reads either into one set of
//! [`Field`]s, each with the line it came from; what it does not know is
//! kept in [`SiteConf::unmapped`] for the caller to report.
//!
//! Refused, naming the line: text that is not UTF-8, a line that is not
//! `key=value`, a key given twice, an unknown `[section]`, a key before the
//! first section of an INI file.

use std::collections::BTreeMap;

use crate::SiteId;

/// What a site.conf says, in Touchline's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// `SITE_ID` / `[site] id`.
    SiteId,
    /// `SITE_NAME` / `[site] name`.
    Name,
    /// `CLUB_NAME` / `[site] club_name`.
    Club,
    /// `LOCATION_CITY` / `[site] location_city`.
    City,
    /// `LOCATION_REGION` / `[site] location_region`.
    Region,
    /// `LOCATION_COUNTRY` / `[site] location_country`.
    Country,
    /// `SPORTS` / `[site] sports`: comma-separated.
    Sports,
    /// `HARDWARE_MODEL`.
    Hardware,
    /// `NEOPRO_ROOT`.
    NeoproRoot,
    /// `VIDEOS_PATH`.
    VideosPath,
    /// `CONFIG_PATH`.
    ConfigPath,
    /// `MAX_DOWNLOAD_SIZE`, bytes.
    MaxDownloadSize,
    /// `AUTO_UPDATE_HOUR`, 0-23.
    AutoUpdateHour,
}

/// `KEY=VALUE` keys and INI `section.key`s, and the field each is.
const KEYS: &[(&str, Field)] = &[
    ("SITE_ID", Field::SiteId),
    ("SITE_NAME", Field::Name),
    ("CLUB_NAME", Field::Club),
    ("LOCATION_CITY", Field::City),
    ("LOCATION_REGION", Field::Region),
    ("LOCATION_COUNTRY", Field::Country),
    ("SPORTS", Field::Sports),
    ("HARDWARE_MODEL", Field::Hardware),
    ("NEOPRO_ROOT", Field::NeoproRoot),
    ("VIDEOS_PATH", Field::VideosPath),
    ("CONFIG_PATH", Field::ConfigPath),
    ("MAX_DOWNLOAD_SIZE", Field::MaxDownloadSize),
    ("AUTO_UPDATE_HOUR", Field::AutoUpdateHour),
    ("site.id", Field::SiteId),
    ("site.name", Field::Name),
    ("site.club_name", Field::Club),
    ("site.location_city", Field::City),
    ("site.location_region", Field::Region),
    ("site.location_country", Field::Country),
    ("site.sports", Field::Sports),
    ("site.hardware_model", Field::Hardware),
];

/// Keys that hold a secret of the old system: never copied, never shown.
const SECRETS: &[&str] = &["SITE_API_KEY", "central.api_key"];

/// The INI sections that exist.
const SECTIONS: &[&str] = &["site", "central", "features"];

/// Which form a file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `KEY=VALUE` (the sync agent's).
    KeyValue,
    /// `[site]` / `[central]` / `[features]`.
    Ini,
}

/// A value and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The value, unquoted.
    pub text: String,
    /// 1-based line.
    pub line: usize,
}

/// A key the reader does not map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// The key (`CENTRAL_SERVER_URL`, `features.telemetry`).
    pub key: String,
    /// 1-based line.
    pub line: usize,
    /// Whether it is a secret (its value is not kept).
    pub secret: bool,
}

/// Why a file does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ConfError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A site.conf, read.
#[derive(Debug, Clone)]
pub struct SiteConf {
    /// The form.
    pub form: Form,
    /// What it says.
    pub fields: BTreeMap<Field, Value>,
    /// Everything else, in file order.
    pub unmapped: Vec<Unmapped>,
}

impl SiteConf {
    /// Reads a file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfError {
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            message: "not UTF-8 text (save the file as UTF-8; accents in Latin-1 do not read)"
                .into(),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let is_ini = text.lines().any(|l| l.trim_start().starts_with('['));
        let form = if is_ini { Form::Ini } else { Form::KeyValue };
        let mut section: Option<&str> = None;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut conf = SiteConf {
            form,
            fields: BTreeMap::new(),
            unmapped: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            let err = |message: String| ConfError { line, message };
            if let Some(c) = l.chars().find(|c| c.is_control() && *c != '\t') {
                return Err(err(format!(
                    "a control character (U+{:04X}) in the line: not a site.conf",
                    u32::from(c)
                )));
            }
            if let Some(rest) = l.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err(format!("`{l}` opens a section but does not close it")))?
                    .trim();
                let Some(known) = SECTIONS.iter().find(|s| **s == name) else {
                    return Err(err(format!(
                        "unknown section `[{name}]` (a site.conf has [site], [central] and [features])"
                    )));
                };
                section = Some(known);
                continue;
            }
            let (k, v) = l.split_once('=').ok_or_else(|| {
                err(format!(
                    "`{}` is not key=value",
                    l.chars().take(60).collect::<String>()
                ))
            })?;
            let k = k.trim().strip_prefix("export ").unwrap_or(k.trim()).trim();
            let key = match (form, section) {
                (Form::Ini, Some(s)) => format!("{s}.{}", k.to_ascii_lowercase()),
                (Form::Ini, None) => {
                    return Err(err(format!("`{k}` comes before the first [section]")));
                }
                (Form::KeyValue, _) => k.to_owned(),
            };
            if k.is_empty() {
                return Err(err("a value without a key".into()));
            }
            if let Some(first) = seen.insert(key.clone(), line) {
                return Err(err(format!(
                    "`{key}` is given twice (first on line {first})"
                )));
            }
            let text = unquote(v.trim()).to_owned();
            match KEYS.iter().find(|(name, _)| *name == key) {
                Some((_, field)) => {
                    conf.fields.insert(*field, Value { text, line });
                }
                None => conf.unmapped.push(Unmapped {
                    secret: SECRETS.contains(&key.as_str()),
                    key,
                    line,
                }),
            }
        }
        Ok(conf)
    }

    /// A field's text, when given and not empty.
    pub fn get(&self, f: Field) -> Option<&str> {
        self.fields
            .get(&f)
            .map(|v| v.text.as_str())
            .filter(|t| !t.is_empty())
    }

    /// A field's line.
    pub fn line(&self, f: Field) -> Option<usize> {
        self.fields.get(&f).map(|v| v.line)
    }

    /// The site id, normalised to Touchline's rules ([`normalise_id`]).
    pub fn site_id(&self) -> Result<SiteId, ConfError> {
        let raw = self.get(Field::SiteId).ok_or_else(|| ConfError {
            line: self.line(Field::SiteId).unwrap_or(1),
            message: match self.form {
                Form::KeyValue => "no SITE_ID: every site.conf names its site".into(),
                Form::Ini => "no id in [site]: every site.conf names its site".into(),
            },
        })?;
        normalise_id(raw).ok_or_else(|| ConfError {
            line: self.line(Field::SiteId).unwrap_or(1),
            message: format!("site id `{raw}` has no letter or digit to make an id of"),
        })
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// An id in Touchline's alphabet: lower case, accents dropped, every run
/// of other characters one `-`, at most 63 characters. `None` when
/// nothing is left.
pub fn normalise_id(raw: &str) -> Option<SiteId> {
    let mut out = String::new();
    let mut dash = false;
    for c in raw.chars().flat_map(fold_accent) {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
    }
    let cut: String = out.chars().take(63).collect();
    SiteId::new(cut.trim_end_matches('-')).ok()
}

/// The letters French names use, without their accents.
fn fold_accent(c: char) -> impl Iterator<Item = char> {
    let s: &str = match c {
        'à' | 'á' | 'â' | 'ä' | 'ã' | 'å' | 'À' | 'Á' | 'Â' | 'Ä' | 'Ã' | 'Å' => "a",
        'ç' | 'Ç' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
        'ñ' | 'Ñ' => "n",
        'ò' | 'ó' | 'ô' | 'ö' | 'õ' | 'Ò' | 'Ó' | 'Ô' | 'Ö' | 'Õ' => "o",
        'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
        'ý' | 'ÿ' | 'Ý' => "y",
        'œ' | 'Œ' => "oe",
        'æ' | 'Æ' => "ae",
        _ => "",
    };
    let keep = if s.is_empty() { Some(c) } else { None };
    s.chars().chain(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_agent_form_reads_with_lines() {
        let c = SiteConf::parse(
            b"# Serveur central\nCENTRAL_SERVER_URL=https://x\nSITE_ID=Rennes FC\nSITE_API_KEY=secret\nSITE_NAME=\"Site Rennes\"\nSPORTS=football,futsal\nVIDEOS_PATH=/home/pi/neopro/videos\n",
        )
        .unwrap();
        assert_eq!(c.form, Form::KeyValue);
        assert_eq!(c.site_id().unwrap().as_str(), "rennes-fc");
        assert_eq!(c.get(Field::Name), Some("Site Rennes"));
        assert_eq!(c.line(Field::VideosPath), Some(7));
        assert_eq!(c.unmapped.len(), 2);
        assert!(c.unmapped[1].secret);
        assert_eq!(c.unmapped[0].key, "CENTRAL_SERVER_URL");
    }

    #[test]
    fn the_ini_form_reads_with_lines() {
        let c = SiteConf::parse(
            "[site]\nid=Étoile Sportive Saint-Étienne\nname=Club\n\n[central]\napi_key=XXXX\n[features]\ntelemetry=true\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(c.form, Form::Ini);
        assert_eq!(
            c.site_id().unwrap().as_str(),
            "etoile-sportive-saint-etienne"
        );
        assert_eq!(c.line(Field::Name), Some(3));
        let keys: Vec<_> = c
            .unmapped
            .iter()
            .map(|u| (u.key.as_str(), u.secret))
            .collect();
        assert_eq!(
            keys,
            [("central.api_key", true), ("features.telemetry", false)]
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"SITE_ID=a\nSITE_ID=b\n",
                "line 2: `SITE_ID` is given twice (first on line 1)",
            ),
            (
                b"[site]\nid=a\n[network]\nx=1\n",
                "line 3: unknown section `[network]`",
            ),
            (
                b"SITE_ID=a\njust words\n",
                "line 2: `just words` is not key=value",
            ),
            (
                b"SITE_ID=a\nCLUB_NAME=Stade Rennais\n\nSITE_NAME=Caf\xe9\n",
                "line 4: not UTF-8",
            ),
            (
                b"id=a\n[site]\n",
                "line 1: `id` comes before the first [section]",
            ),
            (b"[site\nid=a\n", "line 1: `[site` opens a section"),
            (
                "SITE_ID=a\nLOCATION_REGION=R\u{12}\u{89}\n".as_bytes(),
                "line 2: a control character (U+0012) in the line",
            ),
        ];
        for (text, want) in cases {
            let e = SiteConf::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} (wanted {want})");
        }
        let e = SiteConf::parse(b"SITE_NAME=x\n")
            .unwrap()
            .site_id()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: no SITE_ID: every site.conf names its site"
        );
        let e = SiteConf::parse(b"SITE_ID=---\n")
            .unwrap()
            .site_id()
            .unwrap_err();
        assert!(e.to_string().contains("no letter or digit"), "{e}");
    }

    #[test]
    fn ids_are_normalised() {
        for (raw, want) in [
            ("cesson-handball", "cesson-handball"),
            ("Cesson Handball", "cesson-handball"),
            ("  Lœuilly / Côte-d'Or  ", "loeuilly-cote-d-or"),
            (
                "b827eb12-3456-4d2e-9f00-aa11bb22cc33",
                "b827eb12-3456-4d2e-9f00-aa11bb22cc33",
            ),
            ("__x__", "x"),
        ] {
            assert_eq!(normalise_id(raw).unwrap().as_str(), want, "{raw}");
        }
        assert_eq!(normalise_id(&"a".repeat(100)).unwrap().as_str().len(), 63);
        assert!(normalise_id("…").is_none());
    }
}
