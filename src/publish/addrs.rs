//! A list of publishers, parsed and checked once, then walked in turn: a
//! client's `--publisher A,B,C` (or `$ZURG_PUBLISHER`) and a host's `zurg
//! run --publish A,B,C` alike, so both accept the same forms and refuse
//! the same mistakes. Pure: no I/O.

use std::fmt;

/// One or more `HOST:PORT` addresses, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publishers(Vec<String>);

/// What is wrong with a list of publishers; names the option it came
/// from and the bad entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("{option} {list:?}: entry {position} is empty; give HOST:PORT[,HOST:PORT...] without stray commas")]
    Empty {
        option: &'static str,
        list: String,
        position: usize,
    },
    #[error("{option} {list:?}: {entry:?} is not HOST:PORT (a host name or address, a colon, a port from 1 to 65535; an IPv6 address in brackets: [::1]:7300)")]
    NotHostPort {
        option: &'static str,
        list: String,
        entry: String,
    },
}

impl Publishers {
    /// A client's `--publisher A,B,C`: see `parse_option`.
    pub fn parse(list: &str) -> Result<Publishers, ListError> {
        Publishers::parse_option("--publisher", list)
    }

    /// `A,B,C` given as `option` (named in the error): every entry must be
    /// `HOST:PORT`. Names are not resolved here: a name that does not
    /// resolve now may later, and is then just a publisher that cannot be
    /// reached.
    pub fn parse_option(option: &'static str, list: &str) -> Result<Publishers, ListError> {
        let mut out = Vec::new();
        for (i, entry) in list.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(ListError::Empty {
                    option,
                    list: list.to_string(),
                    position: i.saturating_add(1),
                });
            }
            if !is_host_port(entry) {
                return Err(ListError::NotHostPort {
                    option,
                    list: list.to_string(),
                    entry: entry.to_string(),
                });
            }
            out.push(entry.to_string());
        }
        Ok(Publishers(out))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The address at `i`, counting round the list.
    pub fn at(&self, i: usize) -> &str {
        match self.0.len() {
            0 => "",
            n => self.0.get(i % n).map(String::as_str).unwrap_or_default(),
        }
    }

    /// The index after `i`, back to the first after the last.
    pub fn after(&self, i: usize) -> usize {
        match self.0.len() {
            0 => 0,
            n => i.saturating_add(1) % n,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The addresses, in order.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl fmt::Display for Publishers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

fn is_host_port(entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        // A bare IPv6 address would be ambiguous about where its port is.
        None => !host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_its_order_and_cycles() {
        let p = Publishers::parse("a:1,10.0.0.2:7300,[::1]:9").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            ["a:1", "10.0.0.2:7300", "[::1]:9"]
        );
        assert_eq!(p.at(0), "a:1");
        assert_eq!(p.after(0), 1);
        assert_eq!(p.after(2), 0);
        assert_eq!(p.at(4), "10.0.0.2:7300");
        assert_eq!(p.to_string(), "a:1,10.0.0.2:7300,[::1]:9");
        let one = Publishers::parse("h:1").unwrap();
        assert_eq!(one.after(0), 0);
    }

    #[test]
    fn a_bad_entry_is_named() {
        let e = Publishers::parse("a:1,nope,b:2").unwrap_err();
        assert_eq!(
            e,
            ListError::NotHostPort {
                option: "--publisher",
                list: "a:1,nope,b:2".into(),
                entry: "nope".into()
            }
        );
        assert!(e.to_string().contains("\"nope\" is not HOST:PORT"), "{e}");
        for bad in ["a:0", "a:65536", "a:x", ":1", "::1:80", "[zz]:1", "a b:1"] {
            assert!(
                matches!(Publishers::parse(bad), Err(ListError::NotHostPort { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn stray_commas_are_refused_with_their_position() {
        assert_eq!(
            Publishers::parse("a:1,,b:2"),
            Err(ListError::Empty {
                option: "--publisher",
                list: "a:1,,b:2".into(),
                position: 2
            })
        );
        assert!(matches!(
            Publishers::parse(""),
            Err(ListError::Empty { position: 1, .. })
        ));
        assert!(matches!(
            Publishers::parse("a:1,"),
            Err(ListError::Empty { position: 2, .. })
        ));
    }

    #[test]
    fn the_error_names_the_option_the_list_came_from() {
        let e = Publishers::parse_option("--publish", "a:1,,b:2").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--publish \"a:1,,b:2\": entry 2 is empty"),
            "{e}"
        );
        let e = Publishers::parse_option("$ZURG_PUBLISHER", "x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("$ZURG_PUBLISHER \"x\": \"x\" is not"),
            "{e}"
        );
    }
}
