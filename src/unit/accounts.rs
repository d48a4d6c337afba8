//! The user and group databases (/etc/passwd, /etc/group) parsed without
//! NSS: a static binary cannot load NSS modules, and a minimal image has
//! none. Pure: the caller reads the files; this parses their text and
//! resolves a unit's `user`, `group` and `supplementary_groups` to numbers
//! with initgroups' rule for a user's groups.

use super::creds::{Creds, Id};

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Both databases, as parsed. Lines that do not parse are skipped, as
/// glibc's files backend does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<Passwd>,
    pub groups: Vec<Group>,
}

/// The ids a service gets, and the passwd variables that go with its user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The supplementary groups (setgroups), when they change.
    pub groups: Option<Vec<u32>>,
    /// `HOME`, `USER`, `LOGNAME`, `SHELL` of the user.
    pub env: Vec<(String, String)>,
}

/// A name that did not resolve: the key and the message.
pub type Unresolved = (&'static str, String);

fn fields(line: &str) -> Option<Vec<&str>> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split(':').collect())
}

impl Accounts {
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(fields)
            .filter_map(|f| match f.as_slice() {
                [name, _, uid, gid, _, home, shell, ..] => Some(Passwd {
                    name: (*name).to_string(),
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                    home: (*home).to_string(),
                    shell: (*shell).to_string(),
                }),
                _ => None,
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(fields)
            .filter_map(|f| match f.as_slice() {
                [name, _, gid, rest @ ..] => Some(Group {
                    name: (*name).to_string(),
                    gid: gid.parse().ok()?,
                    members: rest
                        .first()
                        .map(|m| {
                            m.split(',')
                                .map(str::trim)
                                .filter(|m| !m.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        Accounts { users, groups }
    }

    /// The passwd entry of a name, or of a number (the first with that uid).
    pub fn user(&self, id: &Id) -> Option<&Passwd> {
        match id {
            Id::Name(n) => self.users.iter().find(|u| &u.name == n),
            Id::Num(n) => self.users.iter().find(|u| u.uid == *n),
        }
    }

    /// The gid of a group name, or a number as it is.
    pub fn gid(&self, id: &Id) -> Option<u32> {
        match id {
            Id::Num(n) => Some(*n),
            Id::Name(n) => self.groups.iter().find(|g| &g.name == n).map(|g| g.gid),
        }
    }

    /// initgroups(3): `primary` and every group that lists `user` as a
    /// member, in file order, without repeats.
    pub fn groups_of(&self, user: &str, primary: u32) -> Vec<u32> {
        let mut out = vec![primary];
        for g in &self.groups {
            if g.members.iter().any(|m| m == user) && !out.contains(&g.gid) {
                out.push(g.gid);
            }
        }
        out
    }

    /// The ids of `creds`, or every name that is not in the databases.
    pub fn resolve(&self, creds: &Creds) -> Result<Resolved, Vec<Unresolved>> {
        let mut errors: Vec<Unresolved> = Vec::new();
        let mut out = Resolved::default();
        let group = match &creds.group {
            None => None,
            Some(id) => {
                let gid = self.gid(id);
                if gid.is_none() {
                    errors.push(("group", format!("no group {id} in /etc/group")));
                }
                gid
            }
        };
        let mut extra = Vec::new();
        for id in creds.supplementary_groups.iter().flatten() {
            match self.gid(id) {
                Some(g) => extra.push(g),
                None => errors.push((
                    "supplementary_groups",
                    format!("no group {id} in /etc/group"),
                )),
            }
        }
        match &creds.user {
            None => {
                out.gid = group;
                if group.is_some() || creds.supplementary_groups.is_some() {
                    let mut groups: Vec<u32> = group.into_iter().collect();
                    groups.extend(extra.iter().filter(|g| Some(**g) != group));
                    out.groups = Some(groups);
                }
            }
            Some(id) => match (self.user(id), id) {
                (Some(pw), _) => {
                    out.uid = Some(pw.uid);
                    let gid = group.unwrap_or(pw.gid);
                    out.gid = Some(gid);
                    let mut groups = match group {
                        Some(g) => vec![g],
                        None => self.groups_of(&pw.name, pw.gid),
                    };
                    for g in &extra {
                        if !groups.contains(g) {
                            groups.push(*g);
                        }
                    }
                    out.groups = Some(groups);
                    out.env = vec![
                        ("HOME".into(), pw.home.clone()),
                        ("USER".into(), pw.name.clone()),
                        ("LOGNAME".into(), pw.name.clone()),
                        ("SHELL".into(), pw.shell.clone()),
                    ];
                }
                // A bare number runs without a passwd entry if the group is
                // given; there is no primary group to guess otherwise.
                (None, Id::Num(uid)) => match group {
                    Some(g) => {
                        out.uid = Some(*uid);
                        out.gid = Some(g);
                        let mut groups = vec![g];
                        groups.extend(extra.iter().filter(|x| **x != g));
                        out.groups = Some(groups);
                    }
                    None => errors.push((
                        "user",
                        format!("uid {uid} has no /etc/passwd entry: set `group` as well"),
                    )),
                },
                (None, Id::Name(_)) => {
                    errors.push(("user", format!("no user {id} in /etc/passwd")))
                }
            },
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        web:x:1500:1500::/srv/web:/bin/sh\n\
        broken line\n\
        bad:x:notanumber:1::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nweb:x:1500:\n\
        ops:x:2000:alice,web\nlog:x:2001:web\ndup:x:1500:web\n";

    fn creds(user: Option<Id>, group: Option<Id>, extra: Option<Vec<Id>>) -> Creds {
        Creds {
            user,
            group,
            supplementary_groups: extra,
            ..Creds::default()
        }
    }

    fn name(n: &str) -> Id {
        Id::Name(n.into())
    }

    #[test]
    fn parses_both_files_and_skips_what_does_not_parse() {
        let a = Accounts::parse(PASSWD, GROUP);
        let names: Vec<&str> = a.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "nobody", "web"]);
        assert_eq!(
            a.user(&Id::Num(65534)).map(|u| u.home.as_str()),
            Some("/nonexistent")
        );
        assert_eq!(a.gid(&name("ops")), Some(2000));
        assert_eq!(a.gid(&Id::Num(7)), Some(7));
        assert_eq!(a.gid(&name("nope")), None);
        assert_eq!(a.groups_of("web", 1500), [1500, 2000, 2001]);
        assert_eq!(a.groups_of("alice", 100), [100, 2000]);
    }

    #[test]
    fn a_user_gets_its_primary_group_its_member_groups_and_its_variables() {
        let a = Accounts::parse(PASSWD, GROUP);
        let r = a.resolve(&creds(Some(name("web")), None, None)).unwrap();
        assert_eq!((r.uid, r.gid), (Some(1500), Some(1500)));
        assert_eq!(r.groups, Some(vec![1500, 2000, 2001]));
        assert!(r.env.contains(&("HOME".into(), "/srv/web".into())));
        assert!(r.env.contains(&("LOGNAME".into(), "web".into())));
        assert!(r.env.contains(&("SHELL".into(), "/bin/sh".into())));
        // `group` replaces initgroups; supplementary groups come on top
        let r = a
            .resolve(&creds(
                Some(name("web")),
                Some(name("log")),
                Some(vec![Id::Num(9)]),
            ))
            .unwrap();
        assert_eq!((r.gid, r.groups), (Some(2001), Some(vec![2001, 9])));
        // only groups: no uid, no variables
        let r = a.resolve(&creds(None, Some(Id::Num(5)), None)).unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (None, Some(5), Some(vec![5])));
        assert!(r.env.is_empty());
        let r = a
            .resolve(&creds(None, None, Some(vec![name("ops")])))
            .unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (None, None, Some(vec![2000])));
        // a number without an entry needs a group
        let r = a.resolve(&creds(Some(Id::Num(4242)), Some(Id::Num(4242)), None));
        assert_eq!(r.unwrap().uid, Some(4242));
    }

    #[test]
    fn every_unknown_name_is_reported_with_its_key() {
        let a = Accounts::parse(PASSWD, GROUP);
        let e = a
            .resolve(&creds(
                Some(name("bob")),
                Some(name("staff")),
                Some(vec![name("ops"), name("wheel")]),
            ))
            .unwrap_err();
        assert_eq!(
            e,
            [
                ("group", "no group \"staff\" in /etc/group".to_string()),
                (
                    "supplementary_groups",
                    "no group \"wheel\" in /etc/group".to_string()
                ),
                ("user", "no user \"bob\" in /etc/passwd".to_string()),
            ]
        );
        let e = a
            .resolve(&creds(Some(Id::Num(4242)), None, None))
            .unwrap_err();
        assert_eq!(e[0].0, "user");
        assert!(e[0].1.contains("set `group`"), "{e:?}");
    }
}
