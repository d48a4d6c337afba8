//! GPIDs: a global id for every process zurg starts, `ip:port:start_us:pid`,
//! that never repeats across restarts, pid reuse or clock jumps (pure).
//!
//! `start_us` comes from `StartClock`, which never issues the same value
//! twice and never goes backwards, whatever the wall clock does; the
//! supervisor persists its high-water mark in the state directory so the
//! guarantee survives a restart of zurg itself.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::str::FromStr;

/// The longest text of an IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`,
/// INET6_ADDRSTRLEN less its NUL).
pub const MAX_IP_TEXT: usize = 45;
/// The longest text of a GPID: `[` an IPv6 address `]:` a port `:` a
/// `u64` `:` a `u32`.
pub const MAX_TEXT: usize = 1 + MAX_IP_TEXT + 2 + 5 + 1 + 20 + 1 + 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gpid {
    pub ip: IpAddr,
    pub port: u16,
    /// Microseconds since the Unix epoch (UTC) when zurg started the process.
    pub start_us: u64,
    pub pid: u32,
}

impl fmt::Display for Gpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}:{}:{}", self.port, self.start_us, self.pid),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}:{}:{}", self.port, self.start_us, self.pid),
        }
    }
}

impl Gpid {
    /// Everything but the pid, `ip:port:start_us:`, for a child to complete
    /// with its own pid before exec.
    pub fn prefix(ip: IpAddr, port: u16, start_us: u64) -> String {
        match ip {
            IpAddr::V4(ip) => format!("{ip}:{port}:{start_us}:"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}:{start_us}:"),
        }
    }
}

/// A GPID without its host address, which every process one zurg starts
/// shares: what zurg keeps per service (16 bytes where an `Option<Gpid>`
/// is 32; issue 22), made whole with the address when shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Never 0: `StartClock` issues times above its last, which is at
    /// least 0. The niche makes `Option<Local>` no larger than `Local`.
    start_us: NonZeroU64,
    pid: u32,
    port: u16,
}

impl Local {
    /// The GPID parts of a process zurg started; `None` for a start time
    /// of 0, which no `StartClock` issues.
    pub fn new(port: u16, start_us: u64, pid: u32) -> Option<Local> {
        Some(Local {
            start_us: NonZeroU64::new(start_us)?,
            pid,
            port,
        })
    }

    /// The GPID of this process on the host at `ip`.
    pub fn on(self, ip: IpAddr) -> Gpid {
        Gpid {
            ip,
            port: self.port,
            start_us: self.start_us.get(),
            pid: self.pid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gpid {input:?}: {reason}")]
pub struct GpidError {
    pub input: String,
    pub reason: String,
}

impl FromStr for Gpid {
    type Err = GpidError;

    fn from_str(s: &str) -> Result<Gpid, GpidError> {
        let fail = |reason: &str| GpidError {
            input: s.chars().take(128).collect(),
            reason: reason.to_string(),
        };
        let (ip_text, rest) = if let Some(after) = s.strip_prefix('[') {
            let (ip, rest) = after
                .split_once("]:")
                .ok_or_else(|| fail("an IPv6 address must be written [addr]:port:start:pid"))?;
            (ip, rest)
        } else {
            s.split_once(':')
                .ok_or_else(|| fail("expected ip:port:start_us:pid"))?
        };
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| fail(&format!("{ip_text:?} is not an IP address")))?;
        if matches!(ip, IpAddr::V6(_)) && !s.starts_with('[') {
            return Err(fail(
                "an IPv6 address must be written [addr]:port:start:pid",
            ));
        }
        let parts: Vec<&str> = rest.split(':').collect();
        let [port, start, pid] = parts.as_slice() else {
            return Err(fail("expected ip:port:start_us:pid"));
        };
        let num = |text: &str, what: &str| -> Result<u64, GpidError> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(&format!("{what} {text:?} is not a decimal number")));
            }
            text.parse::<u64>()
                .map_err(|_| fail(&format!("{what} {text:?} is out of range")))
        };
        let port = u16::try_from(num(port, "port")?).map_err(|_| fail("port is out of range"))?;
        let start_us = num(start, "start time")?;
        let pid = u32::try_from(num(pid, "pid")?).map_err(|_| fail("pid is out of range"))?;
        if pid == 0 {
            return Err(fail("pid 0 is not a process"));
        }
        Ok(Gpid {
            ip,
            port,
            start_us,
            pid,
        })
    }
}

impl serde::Serialize for Gpid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Gpid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Gpid, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How far ahead of the wall clock a persisted high-water mark may be and
/// still be believed. A wall clock stepped back by NTP is minutes or hours
/// off; a mark days ahead is a corrupt or hand-edited file, and honouring it
/// would pin every start time to it (at `u64::MAX`, forever).
pub const MAX_AHEAD_US: u64 = 24 * 3600 * 1_000_000;

/// The clock cannot issue a start time above `last_us`: `u64::MAX` µs is
/// reached, so any value would repeat one already issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the GPID clock is exhausted at {last_us} µs; no start time after it exists, so nothing is started rather than given a repeated GPID: remove the state directory's clock file and restart zurg")]
pub struct ClockExhausted {
    pub last_us: u64,
}

/// A persisted high-water mark that is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{mark_us} µs is more than a day ahead of the wall clock ({now_us} µs)")]
pub struct FarFuture {
    pub mark_us: u64,
    pub now_us: u64,
}

/// Checks a persisted high-water mark against the wall clock: at most
/// `MAX_AHEAD_US` ahead of it, or it is refused.
pub fn plausible_mark(mark_us: u64, now_us: u64) -> Result<u64, FarFuture> {
    if mark_us > now_us.saturating_add(MAX_AHEAD_US) {
        return Err(FarFuture { mark_us, now_us });
    }
    Ok(mark_us)
}

/// Issues start times that strictly increase: max(now, last + 1 µs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartClock {
    last_us: u64,
}

impl StartClock {
    /// A clock that will never issue `last_us` or anything before it.
    pub fn after(last_us: u64) -> StartClock {
        StartClock { last_us }
    }

    /// The next start time, strictly greater than every one before; an
    /// error, and the clock unchanged, when none is left.
    pub fn issue(&mut self, now_us: u64) -> Result<u64, ClockExhausted> {
        let floor = self.last_us.checked_add(1).ok_or(ClockExhausted {
            last_us: self.last_us,
        })?;
        let next = now_us.max(floor);
        self.last_us = next;
        Ok(next)
    }

    pub fn last(&self) -> u64 {
        self.last_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gpid_fits_its_bound() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let g = Gpid {
            ip,
            port: u16::MAX,
            start_us: u64::MAX,
            pid: u32::MAX,
        };
        assert!(g.to_string().len() <= MAX_TEXT, "{g}");
        let widest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        assert_eq!(widest.len(), MAX_IP_TEXT);
        assert!(widest.parse::<IpAddr>().is_ok());
    }
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn a_local_gpid_is_the_whole_one_without_its_address() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        let local = Local::new(8080, 1_795_000_000_123_456, 42).unwrap();
        assert_eq!(
            local.on(ip).to_string(),
            "10.0.0.7:8080:1795000000123456:42"
        );
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let whole = Local::new(0, u64::MAX, u32::MAX).unwrap().on(v6);
        assert_eq!(whole.to_string().parse::<Gpid>().unwrap(), whole);
        // A start time of 0 is never issued, so it stands for none.
        assert_eq!(Local::new(0, 0, 1), None);
        assert_eq!(StartClock::default().issue(0), Ok(1));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<Option<Local>>(), 16);
    }

    #[test]
    fn format_and_parse_round_trip() {
        let cases = [
            Gpid {
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
                port: 8080,
                start_us: 1_795_000_000_123_456,
                pid: 42,
            },
            Gpid {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                start_us: 0,
                pid: 1,
            },
            Gpid {
                ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 65535,
                start_us: u64::MAX,
                pid: u32::MAX,
            },
        ];
        for g in cases {
            let text = g.to_string();
            assert_eq!(text.parse::<Gpid>(), Ok(g), "{text}");
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(serde_json::from_str::<Gpid>(&json).unwrap(), g);
        }
        assert_eq!(cases[0].to_string(), "10.0.0.7:8080:1795000000123456:42");
        assert_eq!(
            cases[2].to_string(),
            "[::1]:65535:18446744073709551615:4294967295"
        );
    }

    #[test]
    fn malformed_input_is_rejected_with_a_reason() {
        let cases = [
            ("", "expected ip:port:start_us:pid"),
            ("10.0.0.7", "expected ip:port:start_us:pid"),
            ("10.0.0.7:80:5", "expected ip:port:start_us:pid"),
            ("10.0.0.7:80:5:1:9", "expected ip:port:start_us:pid"),
            ("10.0.0.300:80:5:1", "is not an IP address"),
            ("host:80:5:1", "is not an IP address"),
            ("10.0.0.7:70000:5:1", "port is out of range"),
            ("10.0.0.7:-1:5:1", "port \"-1\" is not a decimal number"),
            (
                "10.0.0.7:80:x:1",
                "start time \"x\" is not a decimal number",
            ),
            (
                "10.0.0.7:80:99999999999999999999:1",
                "start time \"99999999999999999999\" is out of range",
            ),
            ("10.0.0.7:80:5:0", "pid 0 is not a process"),
            ("10.0.0.7:80:5:+1", "pid \"+1\" is not a decimal number"),
            ("::1:80:5:1", "is not an IP address"),
            ("[::1:80:5:1", "must be written [addr]"),
        ];
        for (input, want) in cases {
            let e = input.parse::<Gpid>().unwrap_err();
            assert!(e.to_string().contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn clock_never_repeats_even_when_time_goes_backwards_or_stands_still() {
        let mut c = StartClock::after(0);
        let mut last = 0;
        let mut now: u64 = 1_795_000_000_000_000;
        for i in 0..1000u64 {
            // forwards, standing still, and jumping back by a second
            now = match i % 3 {
                0 => now + 5,
                1 => now,
                _ => now - 1_000_000 + 3,
            };
            let t = c.issue(now).unwrap();
            assert!(t > last, "step {i}: {t} after {last}");
            last = t;
        }
        // a clock restored from its persisted mark continues above it
        let mut c2 = StartClock::after(last);
        assert!(c2.issue(0).unwrap() > last);
    }

    #[test]
    fn an_exhausted_clock_refuses_instead_of_repeating() {
        let mut c = StartClock::after(u64::MAX - 2);
        assert_eq!(c.issue(0), Ok(u64::MAX - 1));
        assert_eq!(c.issue(u64::MAX), Ok(u64::MAX));
        for now in [0, 5, u64::MAX] {
            let e = c.issue(now).unwrap_err();
            assert_eq!(e.last_us, u64::MAX);
            assert!(e
                .to_string()
                .contains("remove the state directory's clock file"));
        }
        assert_eq!(c.last(), u64::MAX, "a refusal leaves the clock as it was");
    }

    #[test]
    fn issued_times_strictly_increase_up_to_the_end_of_the_clock() {
        let mut c = StartClock::after(u64::MAX - 100);
        let mut last = c.last();
        let mut issued = 0;
        while let Ok(t) = c.issue(3) {
            assert!(t > last, "{t} after {last}");
            last = t;
            issued += 1;
        }
        assert_eq!(issued, 100);
    }

    #[test]
    fn a_mark_far_ahead_of_the_wall_clock_is_not_believed() {
        let now = 1_795_000_000_000_000u64;
        assert_eq!(plausible_mark(now, now), Ok(now));
        assert_eq!(plausible_mark(0, now), Ok(0));
        // a clock stepped back by an hour: the mark is honoured
        let hour = 3_600_000_000;
        assert_eq!(plausible_mark(now + hour, now), Ok(now + hour));
        assert_eq!(
            plausible_mark(now + MAX_AHEAD_US, now),
            Ok(now + MAX_AHEAD_US)
        );
        for mark in [now + MAX_AHEAD_US + 1, now * 2, u64::MAX] {
            let e = plausible_mark(mark, now).unwrap_err();
            assert!(e.to_string().contains("more than a day ahead"), "{e}");
        }
        // a wall clock near the end of time does not overflow the check
        assert_eq!(plausible_mark(u64::MAX, u64::MAX - 1), Ok(u64::MAX));
    }
}
