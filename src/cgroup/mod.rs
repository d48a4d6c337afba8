//! cgroup v2: a service's resource limits and how it is stopped.
//!
//! This file is pure (L0): the values of the unit keys `memory_max`,
//! `memory_high`, `cpu_max`, `pids_max`, `io_weight` and `kill_mode`, what
//! each writes into which cgroup file, and the parsers of the kernel's
//! `memory.events` and `cpu.stat`. The file system side (finding the
//! subtree zurg manages, creating a service's cgroup, killing it) is
//! `tree.rs`.

pub mod tree;

/// A cgroup v2 controller a limit needs enabled in the subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
    Io,
}

impl Controller {
    pub const ALL: [Controller; 4] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Pids,
        Controller::Io,
    ];

    /// Its name in `cgroup.controllers` and `cgroup.subtree_control`.
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
            Controller::Io => "io",
        }
    }
}

/// What a stop signals, and what SIGKILL reaches (`kill_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// Every process in the service's cgroup: the stop signal to each, then
    /// `cgroup.kill`; what is left when the main process exits is killed.
    Cgroup,
    /// The service's process group (it leads its own session).
    Group,
    /// The main process only.
    Main,
}

impl KillMode {
    pub const ALL: [KillMode; 3] = [KillMode::Cgroup, KillMode::Group, KillMode::Main];

    /// The word a unit file uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            KillMode::Cgroup => "cgroup",
            KillMode::Group => "group",
            KillMode::Main => "main",
        }
    }

    pub fn parse(word: &str) -> Option<KillMode> {
        KillMode::ALL.into_iter().find(|m| m.as_str() == word)
    }
}

/// `cpu.max`: at most `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota_us: u64,
    pub period_us: u64,
}

/// The kernel's default `cpu.max` period.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses a quota or period below 1 ms...
const CPU_MIN_US: u64 = 1_000;
/// ...and a period above 1 s.
const CPU_MAX_PERIOD_US: u64 = 1_000_000;

/// A unit's cgroup limits; `None` leaves the kernel's default ("max").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes: past it the OOM killer ends a process.
    pub memory_max: Option<u64>,
    /// `memory.high` in bytes: past it the service is throttled and reclaimed.
    pub memory_high: Option<u64>,
    pub cpu_max: Option<CpuMax>,
    /// `pids.max`: tasks (processes and threads).
    pub pids_max: Option<u64>,
    /// `io.weight`, 1 to 10000.
    pub io_weight: Option<u16>,
}

impl Limits {
    /// `Limits::default()` as a constant, for the unit's defaults.
    pub const DEFAULT: Limits = Limits {
        memory_max: None,
        memory_high: None,
        cpu_max: None,
        pids_max: None,
        io_weight: None,
    };
}

/// One cgroup file a limit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub file: &'static str,
    pub controller: Controller,
    /// What to write: the limit, or the kernel's default when unset.
    pub value: String,
    pub set: bool,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Every limit with its file, controller and the text to write (the
    /// default text for an unset one, so a reload can clear it).
    pub fn settings(&self) -> [Setting; 5] {
        let bytes = |v: Option<u64>| v.map_or_else(|| "max".to_string(), |b| b.to_string());
        [
            Setting {
                key: "memory_max",
                file: "memory.max",
                controller: Controller::Memory,
                value: bytes(self.memory_max),
                set: self.memory_max.is_some(),
            },
            Setting {
                key: "memory_high",
                file: "memory.high",
                controller: Controller::Memory,
                value: bytes(self.memory_high),
                set: self.memory_high.is_some(),
            },
            Setting {
                key: "cpu_max",
                file: "cpu.max",
                controller: Controller::Cpu,
                value: self.cpu_max.map_or_else(
                    || format!("max {CPU_PERIOD_US}"),
                    |c| format!("{} {}", c.quota_us, c.period_us),
                ),
                set: self.cpu_max.is_some(),
            },
            Setting {
                key: "pids_max",
                file: "pids.max",
                controller: Controller::Pids,
                value: bytes(self.pids_max),
                set: self.pids_max.is_some(),
            },
            Setting {
                key: "io_weight",
                file: "io.weight",
                controller: Controller::Io,
                value: format!("default {}", self.io_weight.unwrap_or(100)),
                set: self.io_weight.is_some(),
            },
        ]
    }
}

/// `"512M"`, `"1G"`, `"64KiB"`, `"100"` or an integer: bytes, in powers of
/// 1024; at least one byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let bad = || format!("expected bytes such as 536870912, \"512M\" or \"2G\", found {text:?}");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(bytes)
}

/// `"50%"` (of one CPU, per 100 ms; `"200%"` is two CPUs) or
/// `"QUOTA PERIOD"` in microseconds, as cpu.max takes it.
pub fn parse_cpu_max(text: &str) -> Result<CpuMax, String> {
    let t = text.trim();
    let bad = || {
        format!("expected a share such as \"50%\" or \"QUOTA PERIOD\" in microseconds such as \"50000 100000\", found {text:?}")
    };
    if let Some(pct) = t.strip_suffix('%') {
        let pct: f64 = pct.trim().parse().map_err(|_| bad())?;
        if !pct.is_finite() || pct <= 0.0 {
            return Err(bad());
        }
        let quota = (pct * CPU_PERIOD_US as f64 / 100.0).round();
        if quota < CPU_MIN_US as f64 {
            return Err(format!("{text:?} is below the kernel's least share, 1%"));
        }
        if quota > u32::MAX as f64 * CPU_PERIOD_US as f64 {
            return Err(format!("{text:?} is too large"));
        }
        return Ok(CpuMax {
            quota_us: quota as u64,
            period_us: CPU_PERIOD_US,
        });
    }
    let mut words = t.split_whitespace();
    let (Some(q), Some(p), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let quota_us: u64 = q.parse().map_err(|_| bad())?;
    let period_us: u64 = p.parse().map_err(|_| bad())?;
    if quota_us < CPU_MIN_US {
        return Err(format!(
            "the quota must be at least {CPU_MIN_US} µs, found {quota_us}"
        ));
    }
    if !(CPU_MIN_US..=CPU_MAX_PERIOD_US).contains(&period_us) {
        return Err(format!(
            "the period must be {CPU_MIN_US} to {CPU_MAX_PERIOD_US} µs, found {period_us}"
        ));
    }
    Ok(CpuMax {
        quota_us,
        period_us,
    })
}

/// A `key value` line's value from a flat-keyed cgroup file
/// (`memory.events`, `cpu.stat`).
pub fn flat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == key).then(|| words.next()?.parse().ok())?
    })
}

/// How many processes the OOM killer has ended in the cgroup
/// (`memory.events`, `oom_kill`).
pub fn oom_kills(memory_events: &str) -> Option<u64> {
    flat_value(memory_events, "oom_kill")
}

/// (user, system) CPU time in ms from `cpu.stat`.
pub fn cpu_ms(cpu_stat: &str) -> Option<(u64, u64)> {
    let user = flat_value(cpu_stat, "user_usec")?;
    let system = flat_value(cpu_stat, "system_usec")?;
    Some((user / 1000, system / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10 MB"), Ok(10 << 20));
        for bad in ["", "M", "1.5G", "-1", "12X", "0", "0M"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn cpu_max_takes_a_share_or_quota_and_period() {
        let c = |q, p| CpuMax {
            quota_us: q,
            period_us: p,
        };
        assert_eq!(parse_cpu_max("50%"), Ok(c(50_000, 100_000)));
        assert_eq!(parse_cpu_max("200%"), Ok(c(200_000, 100_000)));
        assert_eq!(parse_cpu_max("12.5%"), Ok(c(12_500, 100_000)));
        assert_eq!(parse_cpu_max("25000 50000"), Ok(c(25_000, 50_000)));
        for bad in [
            "",
            "0%",
            "-5%",
            "0.5%",
            "half",
            "100",
            "1 2 3",
            "500 100000",
        ] {
            assert!(parse_cpu_max(bad).is_err(), "{bad:?}");
        }
        assert!(parse_cpu_max("5000 2000000")
            .unwrap_err()
            .contains("period"));
    }

    #[test]
    fn settings_write_the_limit_or_the_default() {
        let l = Limits {
            memory_max: Some(1 << 20),
            cpu_max: Some(CpuMax {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            io_weight: Some(500),
            ..Limits::default()
        };
        let s = l.settings();
        let get = |file: &str| s.iter().find(|x| x.file == file).unwrap();
        assert_eq!(get("memory.max").value, "1048576");
        assert!(get("memory.max").set);
        assert_eq!(get("memory.high").value, "max");
        assert!(!get("memory.high").set);
        assert_eq!(get("cpu.max").value, "50000 100000");
        assert_eq!(get("pids.max").value, "max");
        assert_eq!(get("io.weight").value, "default 500");
        assert_eq!(
            Limits::default().settings()[2].value,
            format!("max {CPU_PERIOD_US}")
        );
        assert!(Limits::default().is_empty() && !l.is_empty());
    }

    #[test]
    fn kernel_files_are_read_by_key() {
        let events = "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(events), Some(1));
        assert_eq!(oom_kills("low 0\n"), None);
        let stat = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n";
        assert_eq!(cpu_ms(stat), Some((1000, 500)));
        assert_eq!(flat_value("usage_usec x\n", "usage_usec"), None);
        for m in KillMode::ALL {
            assert_eq!(KillMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(KillMode::parse("process"), None);
    }
}
