//! `system-info`: what the box is, read from procfs, sysfs and
//! `/etc/os-release` (each file read with a cap; whatever a box does not
//! expose is left out, never guessed).

use std::io::Read;
use std::path::Path;

use serde::Serialize;

/// Largest file read for the inventory.
const MAX_FILE: u64 = 64 * 1024;

/// Reads a small text file (at most [`MAX_FILE`] bytes).
pub fn read_small(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// One mounted filesystem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Disk {
    /// Where it is mounted.
    pub mount: String,
    /// The device.
    pub device: String,
    /// Its type (`ext4`, `vfat`).
    pub fs: String,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Bytes free for the agent.
    pub available_bytes: u64,
    /// Mounted read-only.
    pub read_only: bool,
}

/// One network interface.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Nic {
    /// `eth0`, `wlan0`.
    pub name: String,
    /// Its MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `up`, `down`, `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The box.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: Option<String>,
    /// The kernel release.
    pub kernel: Option<String>,
    /// The agent's build architecture.
    pub arch: &'static str,
    /// The host name.
    pub hostname: Option<String>,
    /// The board (`Raspberry Pi 4 Model B Rev 1.5`), from the device tree.
    pub model: Option<String>,
    /// The Pi's revision code (`/proc/cpuinfo`).
    pub revision: Option<String>,
    /// The Pi's serial number.
    pub serial: Option<String>,
    /// This agent.
    pub agent_version: &'static str,
    /// Seconds since boot.
    pub uptime_secs: Option<u64>,
    /// The kernel's boot id.
    pub boot_id: Option<String>,
    /// Real filesystems.
    pub disks: Vec<Disk>,
    /// Network interfaces (not `lo`).
    pub interfaces: Vec<Nic>,
    /// Local IPv4 addresses (`/proc/net/fib_trie`).
    pub addresses: Vec<String>,
    /// The box's clock now.
    pub clock: jiff::Timestamp,
    /// The time the agent believes (the controller's when the box's
    /// clock is off).
    pub trusted_time: jiff::Timestamp,
    /// The lowest time the agent accepts (persisted: no clock battery).
    pub time_floor: Option<jiff::Timestamp>,
    /// Controller clock minus box clock, seconds, from the last answer.
    pub clock_offset_secs: Option<i64>,
}

/// Filesystems worth listing (not procfs, tmpfs, cgroups…).
const REAL_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "vfat", "exfat", "btrfs", "xfs", "f2fs", "ntfs", "ntfs3", "fuseblk",
    "overlay",
];

fn disks(mounts: &str) -> Vec<Disk> {
    let mut out: Vec<Disk> = Vec::new();
    for line in mounts.lines().take(1000) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mount, fs, opts, ..] = f[..] else {
            continue;
        };
        if !REAL_FS.contains(&fs) {
            continue;
        }
        // `\040` is a space in /proc/mounts.
        let mount = mount.replace("\\040", " ");
        if out.iter().any(|d| d.mount == mount) {
            continue;
        }
        let Ok(st) = rustix::fs::statvfs(mount.as_str()) else {
            continue;
        };
        out.push(Disk {
            device: device.to_owned(),
            fs: fs.to_owned(),
            total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
            available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
            read_only: opts.split(',').any(|o| o == "ro"),
            mount,
        });
    }
    out
}

fn nics(root: &Path) -> Vec<Nic> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Nic> = rd
        .flatten()
        .take(64)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name != "lo").then(|| {
                let read = |f: &str| {
                    read_small(&e.path().join(f))
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                };
                Nic {
                    mac: read("address"),
                    state: read("operstate"),
                    name,
                }
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The local addresses of `/proc/net/fib_trie`: an address line followed
/// by `/32 host LOCAL`.
fn local_addresses(trie: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last: Option<&str> = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-', '`']).trim();
        if t.contains("/32 host LOCAL") {
            if let Some(a) = last
                && !a.starts_with("127.")
                && !out.iter().any(|o| o == a)
            {
                out.push(a.to_owned());
            }
        } else if t.parse::<std::net::Ipv4Addr>().is_ok() {
            last = Some(t);
        }
    }
    out
}

fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key)
            .then(|| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

fn os_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim().trim_matches('"').to_owned())
    })
}

/// The clock facts the agent knows.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// The box's clock.
    pub clock: jiff::Timestamp,
    /// What the agent believes.
    pub trusted: jiff::Timestamp,
    /// The floor.
    pub floor: Option<jiff::Timestamp>,
    /// Controller minus box.
    pub offset_secs: Option<i64>,
}

/// Reads the inventory; `boot_id` is where the boot id is read from.
pub fn collect(boot_id: &Path, clocks: Clocks) -> Inventory {
    let p = |s: &str| read_small(Path::new(s));
    let cpuinfo = p("/proc/cpuinfo").unwrap_or_default();
    Inventory {
        os: p("/etc/os-release").and_then(|t| os_pretty_name(&t)),
        kernel: p("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
        arch: std::env::consts::ARCH,
        hostname: p("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()),
        model: p("/proc/device-tree/model").map(|s| s.trim_end_matches('\0').trim().to_owned()),
        revision: cpuinfo_field(&cpuinfo, "Revision"),
        serial: cpuinfo_field(&cpuinfo, "Serial"),
        agent_version: env!("CARGO_PKG_VERSION"),
        uptime_secs: uptime(),
        boot_id: read_boot_id(boot_id),
        disks: disks(&p("/proc/self/mounts").unwrap_or_default()),
        interfaces: nics(Path::new("/sys/class/net")),
        addresses: local_addresses(&p("/proc/net/fib_trie").unwrap_or_default()),
        clock: clocks.clock,
        trusted_time: clocks.trusted,
        time_floor: clocks.floor,
        clock_offset_secs: clocks.offset_secs,
    }
}

/// Seconds since boot (`/proc/uptime`).
pub fn uptime() -> Option<u64> {
    let s = read_small(Path::new("/proc/uptime"))?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(secs.max(0.0) as u64)
}

/// The boot id: it changes at every boot.
pub fn read_boot_id(path: &Path) -> Option<String> {
    read_small(path)
        .map(|s| s.trim().chars().take(64).collect::<String>())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pi_reads_as_a_pi() {
        let cpuinfo = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\n\nHardware\t: BCM2835\nRevision\t: c03115\nSerial\t\t: 10000000a1b2c3d4\nModel\t\t: Raspberry Pi 4 Model B Rev 1.5\n";
        assert_eq!(
            cpuinfo_field(cpuinfo, "Revision").as_deref(),
            Some("c03115")
        );
        assert_eq!(
            cpuinfo_field(cpuinfo, "Serial").as_deref(),
            Some("10000000a1b2c3d4")
        );
        assert_eq!(cpuinfo_field(cpuinfo, "Nope"), None);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_pretty_name(os).as_deref(),
            Some("Raspbian GNU/Linux 12 (bookworm)")
        );
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     |-- 192.168.1.42\n        /32 host LOCAL\n     |-- 192.168.1.255\n        /32 link BROADCAST\nLocal:\n     |-- 192.168.1.42\n        /32 host LOCAL\n";
        assert_eq!(local_addresses(trie), vec!["192.168.1.42".to_owned()]);
    }

    #[test]
    fn this_machine_lists_its_root_filesystem_and_interfaces() {
        let tmp = tempfile::tempdir().unwrap();
        let id = tmp.path().join("boot_id");
        std::fs::write(&id, "3f1c\n").unwrap();
        let now = jiff::Timestamp::now();
        let inv = collect(
            &id,
            Clocks {
                clock: now,
                trusted: now,
                floor: None,
                offset_secs: Some(2),
            },
        );
        assert_eq!(inv.boot_id.as_deref(), Some("3f1c"));
        assert!(inv.kernel.is_some() && inv.uptime_secs.is_some());
        let mounts = "/dev/root / ext4 rw,noatime 0 0\nproc /proc proc rw 0 0\n/dev/mmcblk0p1 /boot/firmware vfat ro 0 0\n";
        let d = disks(mounts);
        assert_eq!(d.first().map(|d| d.mount.as_str()), Some("/"));
        assert!(d[0].total_bytes > 0 && !d[0].read_only);
        assert!(d.iter().all(|d| d.fs != "proc"));
        let json = serde_json::to_value(&inv).unwrap();
        assert_eq!(json["clock_offset_secs"], 2);
        assert_eq!(json["agent_version"], env!("CARGO_PKG_VERSION"));
    }
}
