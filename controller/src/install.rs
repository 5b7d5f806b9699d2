//! What a new box installs from: the agent packages named in the config
//! (`[enrollment] agent_packages`), put into the content store at start,
//! and `/install.sh`, which picks the box's architecture, downloads its
//! package, checks its sha256, installs it and runs `touchline-agent
//! enroll` with the code it was given.

use std::path::PathBuf;

use touchline_schemas::Sha256;

use crate::content::ContentStore;

/// Architectures a package may be for (Debian's names).
const ARCHES: [&str; 4] = ["amd64", "arm64", "armhf", "i386"];

/// An agent package the controller serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPackage {
    /// Debian architecture.
    pub arch: String,
    /// Package version.
    pub version: String,
    /// `touchline-agent_<version>_<arch>.deb`.
    pub file: String,
    /// Its sha256 (in the content store).
    pub sha256: Sha256,
    /// Bytes.
    pub size: u64,
}

/// Checks the names and stores the packages; one per architecture.
pub fn load(paths: &[PathBuf], content: &ContentStore) -> Result<Vec<AgentPackage>, String> {
    let mut out: Vec<AgentPackage> = Vec::new();
    for p in paths {
        let file = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (version, arch) = parse_name(&file).ok_or_else(|| {
            format!(
                "enrollment.agent_packages: `{}` is not named touchline-agent_<version>_<arch>.deb (arch one of {})",
                p.display(),
                ARCHES.join(", ")
            )
        })?;
        if let Some(other) = out.iter().find(|o| o.arch == arch) {
            return Err(format!(
                "enrollment.agent_packages: two packages for {arch} ({} and {file}): keep one",
                other.file
            ));
        }
        let (sha256, size) = content.add_file(p).map_err(|e| {
            format!(
                "enrollment.agent_packages: {}",
                crate::fleet::error_chain(&e)
            )
        })?;
        out.push(AgentPackage {
            arch: arch.to_owned(),
            version: version.to_owned(),
            file,
            sha256,
            size,
        });
    }
    Ok(out)
}

/// `touchline-agent_<version>_<arch>.deb` → (version, arch).
fn parse_name(file: &str) -> Option<(&str, &str)> {
    let rest = file
        .strip_prefix("touchline-agent_")?
        .strip_suffix(".deb")?;
    let (version, arch) = rest.rsplit_once('_')?;
    let version_ok = !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b));
    (version_ok && ARCHES.contains(&arch)).then_some((version, arch))
}

/// The package served as `file`, if any.
pub fn find<'a>(packages: &'a [AgentPackage], file: &str) -> Option<&'a AgentPackage> {
    packages.iter().find(|p| p.file == file)
}

/// A shell word in single quotes.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The install script for boxes reaching the controller at `url`.
pub fn script(url: &str, packages: &[AgentPackage]) -> String {
    let mut cases = String::new();
    for p in packages {
        cases.push_str(&format!(
            "  {}) file={}; sha={} ;;\n",
            p.arch,
            sq(&p.file),
            p.sha256
        ));
    }
    let have: Vec<&str> = packages.iter().map(|p| p.arch.as_str()).collect();
    let have = if have.is_empty() {
        "none: list them in [enrollment] agent_packages".to_owned()
    } else {
        have.join(" ")
    };
    format!(
        r#"#!/bin/sh
# Touchline: installs touchline-agent on this box and enrolls it.
#   curl -fsSL {url_q}/install.sh | sudo sh      (then type the code)
#   curl -fsSL {url_q}/install.sh | sudo sh -s -- <enrollment code>
# The code comes from `touchline site enroll <site>` (single use).
set -eu
url={url_q}
if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run it as root (... | sudo sh)" >&2
  exit 2
fi
code="${{1:-${{TOUCHLINE_ENROLL_CODE:-}}}}"
if [ -z "$code" ] && [ -r /dev/tty ]; then
  # Typed, the code never shows in the process list.
  printf 'enrollment code: ' >/dev/tty
  read -r code </dev/tty || code=
fi
if [ -z "$code" ]; then
  echo "usage: curl -fsSL $url/install.sh | sudo sh   (then type the code), or ... | sudo sh -s -- <code>" >&2
  exit 2
fi
arch=$(dpkg --print-architecture)
case "$arch" in
{cases}  *) echo "install.sh: this controller has no touchline-agent package for $arch (it has: {have})" >&2; exit 1 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading $file"
curl -fsS --retry 5 --retry-delay 2 -o "$tmp/$file" "$url/v1/agent-packages/$file"
if ! echo "$sha  $tmp/$file" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "install.sh: $file does not match its sha256: not installed" >&2
  exit 1
fi
dpkg -i "$tmp/$file"
set -- enroll --controller "$url"
if [ -r /etc/neopro/site.conf ]; then
  set -- "$@" --from-neopro /etc/neopro/site.conf
fi
if [ -d /run/systemd/system ]; then
  set -- "$@" --start
fi
# The code goes in the environment (readable by root only), not argv.
TOUCHLINE_ENROLL_CODE=$code
export TOUCHLINE_ENROLL_CODE
touchline-agent "$@"
"#,
        url_q = sq(url),
    )
}

/// The packages, for the log.
pub fn describe(packages: &[AgentPackage]) -> String {
    packages
        .iter()
        .map(|p| format!("{} {} ({} bytes)", p.arch, p.version, p.size))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_checked() {
        assert_eq!(
            parse_name("touchline-agent_0.1.0_arm64.deb"),
            Some(("0.1.0", "arm64"))
        );
        assert_eq!(
            parse_name("touchline-agent_0.1.0+2_armhf.deb"),
            Some(("0.1.0+2", "armhf"))
        );
        for bad in [
            "touchline-agent_0.1.0_sparc.deb",
            "touchline_0.1.0_amd64.deb",
            "touchline-agent_0.1.0_amd64.tar",
            "touchline-agent__amd64.deb",
            "touchline-agent_0.1;rm_amd64.deb",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_script_quotes_what_it_embeds() {
        let s = script("https://x.example/it's", &[]);
        assert!(s.contains(r"url='https://x.example/it'\''s'"), "{s}");
        assert!(s.contains("it has: none"), "{s}");
    }
}
