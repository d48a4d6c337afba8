//! Ports of services: a fixed `port`, one zurg picks (`port = "auto"`), and
//! listening sockets zurg holds and passes as fd 3 (`socket = true`).

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use super::{creds, Supervisor};
use crate::os::listen;
use crate::unit::{vars, Unit};

/// Whether a reload changed what a slot's port or socket depends on.
pub(super) fn port_settings_changed(old: &Unit, new: &Unit) -> bool {
    (old.port, old.port_auto, old.socket, old.rare.bind)
        != (new.port, new.port_auto, new.socket, new.rare.bind)
}

fn env_entry(key: &str, value: &str) -> Option<CString> {
    CString::new(format!("{key}={value}")).ok()
}

impl Supervisor {
    /// Before a start: settles the port this process gets (and its socket),
    /// and the per-start environment and arguments that carry it.
    pub(super) fn prepare_port(&mut self, slot: usize) -> Result<u16, String> {
        let Some(s) = self.slots.get_mut(slot) else {
            return Ok(0);
        };
        s.ensure_spec(&self.start_dir)?;
        let unit = &s.service.unit;
        let ip = unit.rare.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if unit.socket {
            if s.cold.listener().is_none() {
                // An auto port keeps the number it had, when it can.
                let want = if unit.port_auto { s.port } else { unit.port };
                let listener = listen::listen(SocketAddr::new(ip, want))
                    .or_else(|e| {
                        if unit.port_auto && want != 0 {
                            listen::listen(SocketAddr::new(ip, 0))
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| format!("cannot listen on {}: {e}", SocketAddr::new(ip, want)))?;
                s.port = listener
                    .local_addr()
                    .map_err(|e| format!("cannot read the listening socket's port: {e}"))?
                    .port();
                s.cold.make().listener = Some(listener);
            }
        } else if unit.port_auto {
            if s.port == 0 || !listen::port_is_free(ip, s.port) {
                s.port = listen::free_port(ip)
                    .map_err(|e| format!("cannot find a free port on {ip}: {e}"))?;
            }
        } else {
            s.port = unit.port;
        }

        let Some(spec) = s.spec.as_deref_mut() else {
            return Ok(s.port);
        };
        spec.start_env.clear();
        if s.port != 0 && !unit.rare.env.contains_key("PORT") {
            spec.start_env
                .extend(env_entry("PORT", &s.port.to_string()));
        }
        spec.listen_fd = s.cold.listener().map(|l| l.as_raw_fd());
        if spec.listen_fd.is_some() {
            spec.start_env.extend(env_entry("LISTEN_FDS", "1"));
            spec.start_env
                .extend(env_entry("LISTEN_FDNAMES", &unit.name));
        }
        // `${PORT}` is known now (the others were replaced as the spec was built).
        let port = Some(s.port);
        if unit.args.iter().any(|a| vars::uses(a, "PORT")) {
            let mut argv = Vec::with_capacity(unit.args.len().saturating_add(1));
            argv.extend(spec.argv.first().cloned());
            argv.extend(creds::service_args(unit, port)?);
            spec.argv = argv;
        }
        if creds::env_or_cwd_use_port(unit) {
            spec.env = creds::service_env(unit, port, s.creds.extra_env())?;
            if let Some(cwd) = &unit.rare.cwd {
                spec.cwd = Some(creds::service_cwd(unit, cwd, port)?);
            }
        }
        Ok(s.port)
    }
}
