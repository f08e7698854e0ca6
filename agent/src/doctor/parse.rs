//! Parsers for what the kernel tells us in text: `uname -r`, `/proc/self/status`,
//! securityfs' `lockdown`, PMU format files, `/proc/self/maps`, namespace links.
//!
//! Pure functions over strings, so the fixtures in the tests below pin them without a
//! kernel. Every parser returns `None` on text it does not understand rather than
//! guessing.

use std::fmt;

/// A kernel version from `uname -r` ("6.18.44-fc-v669", "5.15.0-91-generic").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// Leading decimal digits of `s` as a number ("44-fc" -> 44).
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// `major.minor[.patch][anything]`; a missing patch is 0.
pub fn kernel_release(release: &str) -> Option<KernelVersion> {
    let mut parts = release.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor_part = parts.next()?;
    let minor = leading_number(minor_part)?;
    // "6.1-rc3" has no patch; "6.1.0-rc3" does.
    let patch = if minor_part.len() == minor.to_string().len() {
        parts.next().and_then(leading_number).unwrap_or(0)
    } else {
        0
    };
    Some(KernelVersion::new(major, minor, patch))
}

/// Kernel lockdown mode (security/lockdown/lockdown.c; Linux 5.4+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
}

impl fmt::Display for Lockdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
        })
    }
}

/// The bracketed mode in `/sys/kernel/security/lockdown` ("none [integrity] confidentiality").
pub fn lockdown(text: &str) -> Option<Lockdown> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    match &text[start + 1..end] {
        "none" => Some(Lockdown::None),
        "integrity" => Some(Lockdown::Integrity),
        "confidentiality" => Some(Lockdown::Confidentiality),
        _ => None,
    }
}

/// The effective capability mask (`CapEff:` line of `/proc/self/status`, hex).
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Capability numbers (include/uapi/linux/capability.h) the doctor reasons about.
pub mod cap {
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_RESOURCE: u32 = 24;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;

    /// Name of a capability the doctor mentions.
    pub fn name(bit: u32) -> &'static str {
        match bit {
            DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
            SYS_PTRACE => "CAP_SYS_PTRACE",
            SYS_ADMIN => "CAP_SYS_ADMIN",
            SYS_RESOURCE => "CAP_SYS_RESOURCE",
            PERFMON => "CAP_PERFMON",
            BPF => "CAP_BPF",
            _ => "CAP_?",
        }
    }

    /// Whether `bit` is set in `mask`.
    pub fn has(mask: u64, bit: u32) -> bool {
        bit < 64 && mask & (1u64 << bit) != 0
    }
}

/// A single integer file (`/proc/sys/kernel/perf_event_paranoid`, `cap_last_cap`, PMU `type`).
pub fn int(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// The bit a PMU format file names ("config:0" in `.../uprobe/format/retprobe`).
pub fn pmu_format_bit(text: &str) -> Option<u32> {
    text.trim().strip_prefix("config:")?.parse().ok()
}

/// The inode in a namespace link ("pid:[4026531836]").
pub fn ns_inode(link: &str) -> Option<u64> {
    let inner = link.trim().split_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// The initial PID namespace's inode (`PROC_PID_INIT_INO`, include/linux/proc_ns.h; fixed
/// since Linux 3.8): a process seeing this is in the host's PID namespace.
pub const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// Where code at `addr` comes from, per `/proc/self/maps`: (file path, file offset).
/// Uprobes are placed by file offset, so this is what a uprobe on our own code needs.
pub fn file_offset(maps: &str, addr: u64) -> Option<(String, u64)> {
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        let perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let _dev = f.next()?;
        let _inode = f.next()?;
        let path = f.collect::<Vec<_>>().join(" ");
        (start <= addr && addr < end && perms.contains('x') && path.starts_with('/'))
            .then(|| (path, addr - start + offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        let v = |s| kernel_release(s).unwrap();
        assert_eq!(v("6.18.44-fc-v669"), KernelVersion::new(6, 18, 44));
        assert_eq!(v("5.15.0-91-generic"), KernelVersion::new(5, 15, 0));
        assert_eq!(v("3.10.0-1160.el7.x86_64"), KernelVersion::new(3, 10, 0));
        assert_eq!(v("6.1"), KernelVersion::new(6, 1, 0));
        assert_eq!(v("6.1-rc3"), KernelVersion::new(6, 1, 0));
        assert_eq!(v("6.10.0-rc3+\n"), KernelVersion::new(6, 10, 0));
        assert_eq!(v("4.19.282+"), KernelVersion::new(4, 19, 282));
        assert!(kernel_release("").is_none());
        assert!(kernel_release("linux").is_none());
        assert!(kernel_release("6").is_none());
        assert!(KernelVersion::new(5, 8, 0) > KernelVersion::new(5, 7, 19));
        assert!(KernelVersion::new(6, 0, 0) > KernelVersion::new(5, 19, 0));
        assert_eq!(KernelVersion::new(6, 18, 44).to_string(), "6.18.44");
        assert_eq!(KernelVersion::new(5, 8, 0).to_string(), "5.8");
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(
            lockdown("none [integrity] confidentiality\n"),
            Some(Lockdown::Integrity)
        );
        assert_eq!(
            lockdown("[none] integrity confidentiality\n"),
            Some(Lockdown::None)
        );
        assert_eq!(
            lockdown("none integrity [confidentiality]\n"),
            Some(Lockdown::Confidentiality)
        );
        assert_eq!(lockdown("none integrity confidentiality\n"), None);
        assert_eq!(lockdown("[bogus]"), None);
        assert_eq!(lockdown(""), None);
    }

    /// /proc/self/status of root on this kind of VM: everything but CAP_SYS_RESOURCE.
    const STATUS_ROOT: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\n\
        CapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n\
        CapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";
    /// A container granted CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH.
    const STATUS_DAEMONSET: &str = "CapInh:\t0000000000000000\n\
        CapPrm:\t000000c000080004\nCapEff:\t000000c000080004\n";
    const STATUS_USER: &str = "CapEff:\t0000000000000000\n";

    #[test]
    fn capabilities() {
        let root = cap_eff(STATUS_ROOT).unwrap();
        assert_eq!(root, 0x1fffeffffff);
        for bit in [
            cap::BPF,
            cap::PERFMON,
            cap::SYS_ADMIN,
            cap::SYS_PTRACE,
            cap::DAC_READ_SEARCH,
        ] {
            assert!(cap::has(root, bit), "{}", cap::name(bit));
        }
        assert!(!cap::has(root, cap::SYS_RESOURCE));

        let ds = cap_eff(STATUS_DAEMONSET).unwrap();
        assert!(cap::has(ds, cap::BPF) && cap::has(ds, cap::PERFMON));
        assert!(cap::has(ds, cap::SYS_PTRACE) && cap::has(ds, cap::DAC_READ_SEARCH));
        assert!(!cap::has(ds, cap::SYS_ADMIN));

        assert_eq!(cap_eff(STATUS_USER), Some(0));
        assert_eq!(cap_eff("Name:\tx\n"), None);
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
        assert!(!cap::has(u64::MAX, 64));
    }

    #[test]
    fn small_files() {
        assert_eq!(int("2\n"), Some(2));
        assert_eq!(int("-1\n"), Some(-1));
        assert_eq!(int("x"), None);
        assert_eq!(pmu_format_bit("config:0\n"), Some(0));
        assert_eq!(pmu_format_bit("config1:0-63\n"), None);
        assert_eq!(ns_inode("pid:[4026531836]"), Some(PROC_PID_INIT_INO));
        assert_eq!(ns_inode("pid:[4026532412]\n"), Some(4026532412));
        assert_eq!(ns_inode("pid:4026532412"), None);
    }

    const MAPS: &str = "\
55d0c8a00000-55d0c8a3c000 r--p 00000000 fd:01 1234 /usr/local/bin/periscope
55d0c8a3c000-55d0c8f00000 r-xp 0003c000 fd:01 1234 /usr/local/bin/periscope
55d0c8f00000-55d0c8f80000 r--p 00500000 fd:01 1234 /usr/local/bin/periscope
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000100000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 r-xp 00000000 00:00 0 [vdso]
7ffe00000000-7ffe00001000 r-xp 00000000 fd:01 5 /tmp/a dir/with space
";

    #[test]
    fn maps_file_offsets() {
        assert_eq!(
            file_offset(MAPS, 0x55d0c8a3c000 + 0x1234),
            Some(("/usr/local/bin/periscope".into(), 0x3c000 + 0x1234))
        );
        assert_eq!(
            file_offset(MAPS, 0x7f1000000010),
            Some(("/usr/lib/x86_64-linux-gnu/libc.so.6".into(), 0x28010))
        );
        // Not executable, anonymous, or a pseudo-file: no uprobe target.
        assert_eq!(file_offset(MAPS, 0x55d0c8a00010), None);
        assert_eq!(file_offset(MAPS, 0x7f0000000010), None);
        assert_eq!(file_offset(MAPS, 0x7ffd00000010), None);
        assert_eq!(file_offset(MAPS, 0x1000), None);
        assert_eq!(
            file_offset(MAPS, 0x7ffe00000008),
            Some(("/tmp/a dir/with space".into(), 8))
        );
    }
}
