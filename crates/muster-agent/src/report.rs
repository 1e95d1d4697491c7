//! The periodic report: load, memory, uptime and the usage of every real filesystem, with a
//! health verdict (`fail` when a disk is at least 95 % used, `warn` at 85 %).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::facts::{self, round1};

/// A disk this full makes the report `warn`.
pub const WARN_PERCENT: f64 = 85.0;
/// A disk this full makes the report `fail`.
pub const FAIL_PERCENT: f64 = 95.0;
/// At most this many disks in one report.
const MAX_DISKS: usize = 64;

/// The body of `POST /api/v1/report`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub hostname: String,
    pub health: &'static str,
    pub metrics: Metrics,
    pub disks: Vec<Disk>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub cpu_count: u32,
    pub uptime_seconds: u64,
}

/// One filesystem; sizes in GB (10^9 bytes), one decimal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub mount: String,
    pub total_gb: f64,
    pub used_gb: f64,
    pub used_percent: f64,
}

/// Collects a report of this machine. With a `host_root` other than `/`, the mounts are PID 1's
/// (the host's, given `hostPID`), measured under `host_root`.
pub fn collect(host_root: &Path, hostname: &str, cpu_count: u32) -> Report {
    let load = facts::read("/proc/loadavg")
        .and_then(|t| facts::loadavg(&t))
        .unwrap_or_default();
    let mem = facts::read("/proc/meminfo").and_then(|t| facts::meminfo(&t));
    let on_host = host_root != Path::new("/");
    let mounts_file = if on_host {
        "/proc/1/mounts"
    } else {
        "/proc/self/mounts"
    };
    let disks: Vec<Disk> =
        real_mounts(&parse_mounts(&facts::read(mounts_file).unwrap_or_default()))
            .into_iter()
            .filter_map(|m| {
                let path = host_root.join(m.mount_point.trim_start_matches('/'));
                let s = rustix::fs::statvfs(&path).ok()?;
                disk(
                    &m.mount_point,
                    s.f_frsize,
                    s.f_blocks,
                    s.f_bfree,
                    s.f_bavail,
                )
            })
            .take(MAX_DISKS)
            .collect();
    Report {
        hostname: hostname.to_string(),
        health: health(&disks),
        metrics: Metrics {
            load1: load[0],
            load5: load[1],
            load15: load[2],
            memory_total_mb: mem.map_or(0, |m| m.total_kb / 1024),
            memory_used_mb: mem.map_or(0, |m| (m.total_kb - m.available_kb) / 1024),
            cpu_count,
            uptime_seconds: facts::read("/proc/uptime")
                .and_then(|t| facts::uptime(&t))
                .unwrap_or(0),
        },
        disks,
    }
}

/// `ok`, `warn` or `fail` from the fullest disk.
pub fn health(disks: &[Disk]) -> &'static str {
    let fullest = disks.iter().map(|d| d.used_percent).fold(0.0, f64::max);
    if fullest >= FAIL_PERCENT {
        "fail"
    } else if fullest >= WARN_PERCENT {
        "warn"
    } else {
        "ok"
    }
}

/// A disk from `statvfs` numbers; `None` for an empty filesystem. Used percent as `df`: used
/// over what unprivileged users can have (used + available), so the root reserve counts as full.
pub fn disk(mount: &str, frsize: u64, blocks: u64, free: u64, avail: u64) -> Option<Disk> {
    if blocks == 0 || frsize == 0 {
        return None;
    }
    let used = blocks.saturating_sub(free);
    let usable = used + avail.min(free);
    let gb = |b: u64| round1(b as f64 * frsize as f64 / 1e9);
    Some(Disk {
        mount: mount.to_string(),
        total_gb: gb(blocks),
        used_gb: gb(used),
        used_percent: if usable == 0 {
            0.0
        } else {
            round1(used as f64 * 100.0 / usable as f64)
        },
    })
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fstype: String,
}

/// Parses `/proc/mounts`, decoding the octal escapes (`\040` is a space).
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Mount {
                device: unescape(f.next()?),
                mount_point: unescape(f.next()?),
                fstype: f.next()?.to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystems that are not disks: kernel interfaces, memory, read-only images that are always
/// full (snaps, ISO config drives), and container overlays that repeat the disk below them.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "udf",
];

/// The mounts worth reporting: no pseudo filesystems (except `/`, whatever it is, e.g. a
/// container's overlay) and each device once, at its shortest mount point (bind mounts repeat it).
pub fn real_mounts(mounts: &[Mount]) -> Vec<Mount> {
    let mut by_device: BTreeMap<&str, &Mount> = BTreeMap::new();
    for m in mounts {
        if m.mount_point != "/" && PSEUDO.contains(&m.fstype.as_str()) {
            continue;
        }
        let key = if m.mount_point == "/" {
            "\0root"
        } else {
            m.device.as_str()
        };
        by_device
            .entry(key)
            .and_modify(|best| {
                // Later mounts on `/` hide earlier ones; elsewhere the shortest path wins.
                if m.mount_point == "/" || m.mount_point.len() < best.mount_point.len() {
                    *best = m;
                }
            })
            .or_insert(m);
    }
    let mut out: Vec<Mount> = by_device.into_values().cloned().collect();
    // The root's device may also be mounted elsewhere: report it once, as `/`.
    if let Some(root) = mounts.iter().rev().find(|m| m.mount_point == "/") {
        out.retain(|m| m.mount_point == "/" || m.device != root.device);
    }
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=4001228k 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=803940k,mode=755 0 0
/dev/sda1 / ext4 rw,relatime,errors=remount-ro 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda15 /boot/efi vfat rw,relatime 0 0
/dev/loop0 /snap/core20/2105 squashfs ro,nodev,relatime 0 0
/dev/sdb1 /mnt/my\\040data ext4 rw,relatime 0 0
/dev/sdb1 /srv/bind ext4 rw,relatime 0 0
/dev/sda1 /var/lib/kubelet/pods/x ext4 rw,relatime 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw,relatime 0 0
/dev/sr0 /media/cidata iso9660 ro,relatime 0 0
nsfs /run/netns/cni-1 nsfs rw 0 0
";

    #[test]
    fn mounts_are_parsed_and_filtered() {
        let all = parse_mounts(MOUNTS);
        assert_eq!(all.len(), 15);
        assert_eq!(all[9].mount_point, "/mnt/my data");
        let real: Vec<String> = real_mounts(&all)
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        assert_eq!(real, ["/", "/boot/efi", "/srv/bind"]);
    }

    #[test]
    fn a_container_overlay_root_is_still_reported() {
        let text = "overlay / overlay rw 0 0\nproc /proc proc rw 0 0\ntmpfs /dev tmpfs rw 0 0\n\
                    /dev/vda1 /etc/hosts ext4 rw 0 0\n";
        let real: Vec<String> = real_mounts(&parse_mounts(text))
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        assert_eq!(real, ["/", "/etc/hosts"]);
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn disk_usage_like_df() {
        // 100 GB in 4 KiB blocks, 10 % free of which half is the root reserve.
        let blocks = 100_000_000_000 / 4096;
        let d = disk("/", 4096, blocks, blocks / 10, blocks / 20).unwrap();
        assert_eq!(d.total_gb, 100.0);
        assert_eq!(d.used_gb, 90.0);
        assert_eq!(d.used_percent, 94.7);
        assert_eq!(disk("/empty", 4096, 0, 0, 0), None);
    }

    #[test]
    fn health_from_the_fullest_disk() {
        let d = |p| Disk {
            mount: "/".into(),
            total_gb: 1.0,
            used_gb: 1.0,
            used_percent: p,
        };
        assert_eq!(health(&[]), "ok");
        assert_eq!(health(&[d(84.9), d(10.0)]), "ok");
        assert_eq!(health(&[d(10.0), d(85.0)]), "warn");
        assert_eq!(health(&[d(94.9)]), "warn");
        assert_eq!(health(&[d(50.0), d(95.0)]), "fail");
    }

    #[test]
    fn report_of_this_machine() {
        let r = collect(Path::new("/"), "h", 2);
        assert!(["ok", "warn", "fail"].contains(&r.health));
        assert!(r.metrics.memory_total_mb >= r.metrics.memory_used_mb);
        assert!(r.disks.iter().any(|d| d.mount == "/"), "{r:?}");
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "load1",
            "load5",
            "load15",
            "memory_total_mb",
            "memory_used_mb",
            "cpu_count",
            "uptime_seconds",
        ] {
            assert!(json["metrics"][key].is_number(), "{key}");
        }
    }
}
