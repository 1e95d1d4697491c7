//! What the agent tells the server about its machine, read from `/proc`, `/etc` and a few syscalls.
//!
//! The parsers take text so they are tested on samples; `collect` does the reading. Files of the
//! host (`/etc/os-release`, `/etc/machine-id`, the root filesystem) are read under `host_root`, so
//! a containerised agent can report its host (`--host-root /host`); `/proc` is the kernel's and
//! is read where it is.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The longest text the server accepts in a fact.
const MAX_TEXT: usize = 255;
/// The most addresses the server accepts.
const MAX_ADDRESSES: usize = 256;

/// The machine's facts, collected anew for each heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub hostname: String,
    /// The interface's IPv4, else the first non-loopback IPv4; empty when there is none.
    pub ip_address: String,
    pub interface: String,
    pub addresses: Vec<String>,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_gb: f64,
    pub uptime_seconds: u64,
}

/// Collects the facts of this machine; nothing here fails, a missing fact has a fallback.
pub fn collect(host_root: &Path, interface: &str) -> Facts {
    let uname = rustix::system::uname();
    let text = |c: &std::ffi::CStr| c.to_string_lossy().trim().to_string();
    let hostname = Some(text(uname.nodename()))
        .filter(|h| !h.is_empty() && h != "(none)")
        .unwrap_or_else(|| "unknown".into());
    let interfaces: Vec<(String, IpAddr)> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let ip = i.ip();
            (i.name, ip)
        })
        .collect();
    let primary = primary_ipv4(&interfaces, interface);
    let os = [
        host_path(host_root, "etc/os-release"),
        host_path(host_root, "usr/lib/os-release"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|t| os_pretty_name(&t))
    .unwrap_or_else(|| "Linux".into());
    Facts {
        hostname: clip(hostname),
        ip_address: primary.map(|ip| ip.to_string()).unwrap_or_default(),
        interface: clip(interface.to_string()),
        addresses: addresses(&interfaces, primary),
        os: clip(os),
        kernel: clip(text(uname.release())),
        arch: clip(
            Some(text(uname.machine()))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| std::env::consts::ARCH.into()),
        ),
        cpu_count: read("/proc/stat")
            .and_then(|t| cpu_count(&t))
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| n.get() as u32)
            })
            .unwrap_or(1),
        memory_mb: read("/proc/meminfo")
            .and_then(|t| meminfo(&t))
            .map_or(0, |m| m.total_kb / 1024),
        disk_gb: rustix::fs::statvfs(host_root)
            .map(|s| round1(s.f_blocks.saturating_mul(s.f_frsize) as f64 / 1e9))
            .unwrap_or(0.0),
        uptime_seconds: read("/proc/uptime").and_then(|t| uptime(&t)).unwrap_or(0),
    }
}

/// `rel` (relative, like `etc/os-release`) under the host's root.
pub fn host_path(host_root: &Path, rel: &str) -> PathBuf {
    host_root.join(rel)
}

pub(crate) fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// At most [`MAX_TEXT`] characters.
fn clip(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_TEXT) {
        s.truncate(i);
    }
    s
}

/// `PRETTY_NAME` of an os-release file, else `NAME VERSION`.
pub fn os_pretty_name(text: &str) -> Option<String> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        if value.is_empty() {
            continue;
        }
        match key.trim() {
            "PRETTY_NAME" => return Some(value),
            "NAME" => name = Some(value),
            "VERSION" => version = Some(value),
            _ => {}
        }
    }
    match (name, version) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    }
}

/// A shell-quoted os-release value: `"…"` with `\` escapes, `'…'`, or bare.
fn unquote(v: &str) -> String {
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return v[1..v.len() - 1].to_string();
    }
    let inner = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The two numbers of `/proc/meminfo` the agent uses, in kB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total_kb: u64,
    pub available_kb: u64,
}

/// Parses `/proc/meminfo`; `MemAvailable` falls back to free + buffers + cached (old kernels).
pub fn meminfo(text: &str) -> Option<MemInfo> {
    let mut total = None;
    let mut available = None;
    let mut fallback = 0u64;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kb) = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        match key {
            "MemTotal" => total = Some(kb),
            "MemAvailable" => available = Some(kb),
            "MemFree" | "Buffers" | "Cached" => fallback += kb,
            _ => {}
        }
    }
    let total_kb = total?;
    Some(MemInfo {
        total_kb,
        available_kb: available.unwrap_or(fallback).min(total_kb),
    })
}

/// Whole seconds of `/proc/uptime`.
pub fn uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// Online CPUs: the `cpuN` lines of `/proc/stat`.
pub fn cpu_count(text: &str) -> Option<u32> {
    let n = text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    (n > 0).then_some(n as u32)
}

/// The IPv4 of `interface`, else the first non-loopback IPv4 of any interface.
pub fn primary_ipv4(interfaces: &[(String, IpAddr)], interface: &str) -> Option<Ipv4Addr> {
    fn v4(entry: &(String, IpAddr)) -> Option<(&str, Ipv4Addr)> {
        match entry.1 {
            IpAddr::V4(v4) if !v4.is_loopback() => Some((entry.0.as_str(), v4)),
            _ => None,
        }
    }
    interfaces
        .iter()
        .filter_map(v4)
        .find(|(name, _)| *name == interface)
        .or_else(|| interfaces.iter().find_map(v4))
        .map(|(_, ip)| ip)
}

/// Every non-loopback, non-link-local address, the primary one first, without repeats.
pub fn addresses(interfaces: &[(String, IpAddr)], primary: Option<Ipv4Addr>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    primary
        .map(IpAddr::V4)
        .into_iter()
        .chain(interfaces.iter().map(|(_, ip)| *ip))
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip))
        .filter(|ip| seen.insert(*ip))
        .take(MAX_ADDRESSES)
        .map(|ip| ip.to_string())
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\n\
                      VERSION_ID=\"13\"\nVERSION=\"13 (trixie)\"\nID=debian\n";
        assert_eq!(
            os_pretty_name(debian).unwrap(),
            "Debian GNU/Linux 13 (trixie)"
        );
        let no_pretty = "# comment\nNAME='Alpine Linux'\nVERSION=3.20\n";
        assert_eq!(os_pretty_name(no_pretty).unwrap(), "Alpine Linux 3.20");
        let escaped = r#"PRETTY_NAME="My \"Quoted\" OS \\ \$1""#;
        assert_eq!(os_pretty_name(escaped).unwrap(), r#"My "Quoted" OS \ $1"#);
        assert_eq!(os_pretty_name("ID=x\nPRETTY_NAME=\"\"\n"), None);
        assert_eq!(os_pretty_name("NAME=Bare").unwrap(), "Bare");
    }

    #[test]
    fn meminfo_sample() {
        let text = "MemTotal:        8039428 kB\nMemFree:          524288 kB\n\
                    MemAvailable:    4019714 kB\nBuffers:          100000 kB\nCached:          2000000 kB\n";
        let m = meminfo(text).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total_kb: 8_039_428,
                available_kb: 4_019_714
            }
        );
        assert_eq!(m.total_kb / 1024, 7851);
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        assert_eq!(meminfo(old).unwrap().available_kb, 400);
        assert_eq!(meminfo("garbage"), None);
    }

    #[test]
    fn uptime_loadavg_and_cpus() {
        assert_eq!(uptime("350735.47 234388.90\n"), Some(350_735));
        assert_eq!(uptime("x"), None);
        assert_eq!(
            loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(loadavg("0.5 0.5"), None);
        let stat = "cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\ncpu3 1 2 3 4\nintr 1\nctxt 2\n";
        assert_eq!(cpu_count(stat), Some(3));
        assert_eq!(cpu_count("cpu  1 2\n"), None);
    }

    fn ifs(list: &[(&str, &str)]) -> Vec<(String, IpAddr)> {
        list.iter()
            .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
            .collect()
    }

    #[test]
    fn primary_address_prefers_the_interface() {
        let list = ifs(&[
            ("lo", "127.0.0.1"),
            ("docker0", "172.17.0.1"),
            ("eth0", "fe80::1"),
            ("eth0", "10.0.0.12"),
            ("eth0", "2001:db8::12"),
            ("eth1", "fe80::2"),
            ("eth1", "169.254.3.4"),
        ]);
        let eth0 = primary_ipv4(&list, "eth0");
        assert_eq!(eth0, Some(Ipv4Addr::new(10, 0, 0, 12)));
        assert_eq!(
            primary_ipv4(&list, "ens3"),
            Some(Ipv4Addr::new(172, 17, 0, 1))
        );
        assert_eq!(primary_ipv4(&ifs(&[("lo", "127.0.0.1")]), "lo"), None);
        assert_eq!(
            addresses(&list, eth0),
            ["10.0.0.12", "172.17.0.1", "2001:db8::12"]
        );
    }

    #[test]
    fn long_facts_are_clipped() {
        assert_eq!(clip("é".repeat(300)).chars().count(), 255);
        assert_eq!(clip("short".into()), "short");
    }

    #[test]
    fn facts_of_this_machine() {
        let f = collect(Path::new("/"), "no-such-interface");
        assert!(!f.hostname.is_empty());
        assert!(f.cpu_count >= 1);
        assert!(f.memory_mb > 0);
        assert!(!f.kernel.is_empty() && !f.arch.is_empty() && !f.os.is_empty());
        assert!(f.addresses.iter().all(|a| a.parse::<IpAddr>().is_ok()));
        if !f.ip_address.is_empty() {
            assert_eq!(f.addresses[0], f.ip_address);
        }
    }
}
