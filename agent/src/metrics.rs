//! Box metrics, read from procfs and sysfs (cheap: a few small files; no
//! background sampling thread). Whatever a box does not expose is left
//! absent ("unknown"), never guessed.

use std::collections::BTreeMap;
use std::path::Path;

use touchline_schemas::report::{Interface, Metrics, Throttling};

/// Fewest `/proc/stat` ticks (USER_HZ, all cores) between two samples for
/// a CPU figure.
const MIN_CPU_TICKS: u64 = 100;

/// CPU counters between two samples.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuSample {
    busy: u64,
    total: u64,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The first 4 KiB of a small system file, as text (these files are the
/// system's, not the club's; still, no size is trusted).
fn read_small(path: &str) -> Option<String> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// One line of text: NULs (the device tree ends its strings with one) and
/// control characters out, at most 128 bytes, `None` when empty.
fn one_line(s: &str) -> Option<String> {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut t = clean.trim().to_owned();
    let mut end = t.len().min(128);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t.truncate(end);
    (!t.is_empty()).then_some(t)
}

/// The board: the device tree's model (a Pi), else the DMI product name.
fn hardware() -> Option<String> {
    ["/proc/device-tree/model", "/sys/class/dmi/id/product_name"]
        .into_iter()
        .find_map(|p| read_small(p).as_deref().and_then(one_line))
}

/// `PRETTY_NAME` of an os-release file (os-release(5): `KEY=value`, the
/// value optionally in double or single quotes).
fn pretty_name(text: &str) -> Option<String> {
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    one_line(&v.replace("\\\"", "\"").replace("\\\\", "\\"))
}

fn os() -> Option<String> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .into_iter()
        .find_map(|p| read_small(p).as_deref().and_then(pretty_name))
}

/// `/proc/stat`'s first line.
pub fn cpu_sample() -> Option<CpuSample> {
    let stat = read("/proc/stat")?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(CpuSample {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Temperature in °C from the first thermal zone, else the first hwmon.
fn temperature() -> Option<f64> {
    let from = |p: &str| {
        read(p)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(|m| m / 1000.0)
    };
    if let Some(t) = from("/sys/class/thermal/thermal_zone0/temp") {
        return Some(t);
    }
    let rd = std::fs::read_dir("/sys/class/hwmon").ok()?;
    for e in rd.flatten() {
        if let Some(t) = from(&format!("{}/temp1_input", e.path().display())) {
            return Some(t);
        }
    }
    None
}

/// Raspberry Pi throttling flags (`get_throttled` in sysfs, hex).
fn throttling() -> Option<Throttling> {
    let raw = read("/sys/devices/platform/soc/soc:firmware/get_throttled")?;
    decode_throttled(&raw)
}

/// `get_throttled` text (`0x50005`) → flags, as `vcgencmd` documents them.
fn decode_throttled(raw: &str) -> Option<Throttling> {
    let v = u32::from_str_radix(raw.trim().trim_start_matches("0x"), 16).ok()?;
    Some(Throttling {
        under_voltage: v & 0x1 != 0,
        throttled: v & 0x4 != 0,
        under_voltage_occurred: v & 0x10000 != 0,
        throttled_occurred: v & 0x40000 != 0,
    })
}

fn memory_percent() -> Option<f64> {
    let info = read("/proc/meminfo")?;
    let get = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let total = get("MemTotal:")?;
    let avail = get("MemAvailable:")?;
    (total > 0.0).then(|| ((total - avail) / total * 1000.0).round() / 10.0)
}

fn load() -> Option<[f64; 3]> {
    let s = read("/proc/loadavg")?;
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some([*v.first()?, *v.get(1)?, *v.get(2)?])
}

fn uptime() -> Option<u64> {
    let s = read("/proc/uptime")?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(secs as u64)
}

fn interfaces() -> Vec<Interface> {
    let Some(s) = read("/proc/net/dev") else {
        return Vec::new();
    };
    s.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(Interface {
                name: name.to_owned(),
                rx_bytes: *v.first()?,
                tx_bytes: *v.get(8)?,
            })
        })
        .collect()
}

fn root_read_only() -> Option<bool> {
    let mounts = read("/proc/mounts")?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"/")).then(|| f.get(3).is_some_and(|o| o.split(',').any(|x| x == "ro")))
    })
}

/// `systemctl is-active` of each service; without systemd, `unknown`.
async fn services(names: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let systemd = Path::new("/run/systemd/system").exists();
    for n in names {
        let state = if systemd {
            match tokio::process::Command::new("systemctl")
                .args(["is-active", "--", n])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .await
            {
                Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
                Err(_) => "unknown".to_owned(),
            }
        } else {
            "unknown".to_owned()
        };
        out.insert(
            n.clone(),
            if state.is_empty() {
                "unknown".into()
            } else {
                state
            },
        );
    }
    out
}

/// Collects full metrics. `prev` is the CPU sample of the previous call.
pub async fn collect(
    prev: &mut Option<CpuSample>,
    videos_dir: &Path,
    services_list: &[String],
    videos: (u64, u64),
    local_files: u64,
) -> Metrics {
    let now = cpu_sample();
    // Over at least half a second of all cores' ticks: a shorter interval
    // (the first report right after start) says more about the agent's own
    // start-up than about the box.
    let cpu_percent = match (prev.as_ref(), now.as_ref()) {
        (Some(a), Some(b)) if b.total >= a.total + MIN_CPU_TICKS => {
            #[allow(clippy::cast_precision_loss)]
            let v = (b.busy.saturating_sub(a.busy)) as f64 / (b.total - a.total) as f64 * 100.0;
            Some((v * 10.0).round() / 10.0)
        }
        _ => None,
    };
    if cpu_percent.is_some() || prev.is_none() {
        *prev = now;
    }
    // The videos filesystem: the nearest existing ancestor before the first
    // apply has created the directory.
    let disk_probe = crate::fsx::existing_ancestor(videos_dir);
    let (disk_used_bytes, disk_total_bytes) = match rustix::fs::statvfs(disk_probe) {
        Ok(st) => {
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let free = st.f_bfree.saturating_mul(st.f_frsize);
            (Some(total.saturating_sub(free)), Some(total))
        }
        Err(_) => (None, None),
    };
    Metrics {
        cpu_percent,
        memory_percent: memory_percent(),
        load: load(),
        temperature_c: temperature(),
        disk_used_bytes,
        disk_total_bytes,
        uptime_secs: uptime(),
        interfaces: interfaces(),
        services: services(services_list).await,
        throttling: throttling(),
        root_read_only: root_read_only(),
        video_count: Some(videos.0),
        video_bytes: Some(videos.1),
        local_files: Some(local_files),
        hardware: hardware(),
        os: os(),
        kernel: read_small("/proc/sys/kernel/osrelease")
            .as_deref()
            .and_then(one_line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linux_box_reports_what_procfs_has_and_leaves_the_rest_unknown() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut prev = cpu_sample();
        // Some work so that the CPU counters move.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        // Enough wall time for MIN_CPU_TICKS on any core count.
        std::thread::sleep(std::time::Duration::from_millis(600));
        let m = rt.block_on(collect(
            &mut prev,
            Path::new("/no/such/videos/dir"),
            &["touchline-no-such-unit".to_owned()],
            (3, 300),
            1,
        ));
        let cpu = m.cpu_percent.expect("cpu from /proc/stat");
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        let mem = m.memory_percent.expect("memory from /proc/meminfo");
        assert!(mem > 0.0 && mem < 100.0, "{mem}");
        assert!(m.uptime_secs.is_some_and(|u| u > 0));
        assert!(m.load.is_some());
        let (used, total) = (m.disk_used_bytes.unwrap(), m.disk_total_bytes.unwrap());
        assert!(used <= total && total > 0);
        assert_eq!(m.root_read_only, Some(false));
        assert_eq!(
            (m.video_count, m.video_bytes, m.local_files),
            (Some(3), Some(300), Some(1))
        );
        // A unit that does not exist is not "active"; without systemd it
        // is unknown.
        let state = &m.services["touchline-no-such-unit"];
        assert_ne!(state, "active");
        // Right after, too short an interval: no CPU figure rather than a
        // wrong one.
        let m = rt.block_on(collect(&mut prev, Path::new("/"), &[], (0, 0), 0));
        assert_eq!(m.cpu_percent, None);
    }

    #[test]
    fn the_os_name_and_the_board_read_as_one_clean_line() {
        assert_eq!(
            pretty_name(
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
            )
            .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            pretty_name("PRETTY_NAME='Raspbian 11'").as_deref(),
            Some("Raspbian 11")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Alpine").as_deref(), Some("Alpine"));
        assert_eq!(pretty_name("NAME=x\n"), None);
        assert_eq!(
            one_line("Raspberry Pi 4 Model B Rev 1.4\0").as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(one_line("\0\n"), None);
        let long = "é".repeat(100);
        let cut = one_line(&long).unwrap();
        assert!(cut.len() <= 128 && cut.chars().all(|c| c == 'é'));
        // This machine has an os-release and a kernel release.
        assert!(os().is_some());
        assert!(
            read_small("/proc/sys/kernel/osrelease")
                .as_deref()
                .and_then(one_line)
                .is_some()
        );
    }

    #[test]
    fn throttling_flags_decode_like_vcgencmd() {
        // 0x50005: under-voltage and throttled, now and since boot.
        let t = decode_throttled("0x50005\n").unwrap();
        assert!(t.under_voltage && t.throttled && t.under_voltage_occurred && t.throttled_occurred);
        // 0x50000: it happened since boot, not now.
        let t = decode_throttled("0x50000").unwrap();
        assert!(
            !t.under_voltage && !t.throttled && t.under_voltage_occurred && t.throttled_occurred
        );
        assert_eq!(decode_throttled("0x0"), Some(Throttling::default()));
        assert_eq!(decode_throttled("garbage"), None);
    }
}
