//! User and group lookups by reading /etc/passwd and /etc/group directly:
//! a static glibc binary must not go through NSS (it would try to dlopen
//! modules that do not exist in a minimal image).

use std::io;

/// Parses a group database for `name` (or a plain number). Pure, for tests.
pub fn find_group(db: &str, name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    db.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2).and_then(|g| g.parse().ok()))
}

/// The gid of group `name` (or a number), from /etc/group.
pub fn group_id(name: &str) -> io::Result<u32> {
    let db = std::fs::read_to_string("/etc/group").unwrap_or_default();
    find_group(&db, name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named {name:?} in /etc/group"),
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups() {
        let db = "root:x:0:\n# comment\nops:x:1500:alice,bob\nbad\n";
        assert_eq!(super::find_group(db, "ops"), Some(1500));
        assert_eq!(super::find_group(db, "root"), Some(0));
        assert_eq!(super::find_group(db, "42"), Some(42));
        assert_eq!(super::find_group(db, "nope"), None);
        assert_eq!(super::find_group(db, "bad"), None);
    }
}
