//! The host's address for GPIDs: the IPv4 address of the interface that
//! carries the default route, read from /proc/net/route and getifaddrs.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr};

/// Interface of the default route in /proc/net/route's text (pure).
pub fn default_route_iface(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let iface = f.next()?;
        let dest = f.next()?;
        (dest == "00000000").then(|| iface.to_string())
    })
}

fn iface_ipv4(name: &str) -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    // SAFETY: walking the list the kernel/libc gave us; each node and its
    // name/addr pointers stay valid until freeifaddrs.
    unsafe {
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                && CStr::from_ptr(ifa.ifa_name).to_bytes() == name.as_bytes()
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// The default route's interface address, else 127.0.0.1.
pub fn host_ip() -> IpAddr {
    std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| default_route_iface(&t))
        .and_then(|i| iface_ipv4(&i))
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_default_route() {
        let t = "Iface\tDestination\tGateway\tFlags\nlo\t0000007F\t00000000\t0001\neth0\t00000000\t0101A8C0\t0003\n";
        assert_eq!(super::default_route_iface(t).as_deref(), Some("eth0"));
        assert_eq!(super::default_route_iface("Iface\tDestination\n"), None);
    }
}
