//! Group lookups for `--readers`, by reading /etc/group directly (the
//! parser is `unit::accounts`, which `user` and `group` use too):
//! a static glibc binary must not go through NSS (it would try to dlopen
//! modules that do not exist in a minimal image).

use std::io;

/// Parses a group database for `name` (or a plain number). Pure, for tests.
pub fn find_group(db: &str, name: &str) -> Option<u32> {
    use crate::unit::creds::Id;
    let id = match name.parse::<u32>() {
        Ok(n) => Id::Num(n),
        Err(_) => Id::Name(name.to_string()),
    };
    crate::unit::accounts::Accounts::parse("", db).gid(&id)
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
