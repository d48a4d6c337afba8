//! The dependency graph of the units (`depends_on`), pure.
//!
//! Two uses. At load, `refusals` finds the units that cannot run because of
//! their dependencies: a name that no unit has, a unit whose own file has
//! errors, a cycle (reported as its path, `a -> b -> c -> a`), and, in turn,
//! every unit that depends on a refused one, since it could never start.
//! Once loaded, `Graph` holds each node's dependencies and dependants by
//! index (the supervisor's slots), built once per load or reload, so that
//! an event looks at its own node's lists and never walks every service.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// Why a unit is refused because of its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It is part of a cycle; the path starts and ends at the unit when it
    /// lies on the path found, else it is one cycle of its group.
    Cycle(Vec<String>),
    /// No unit has this name.
    Unknown(String),
    /// This dependency's own unit file has errors.
    Broken(String),
    /// This dependency is refused itself.
    Refused(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Cycle(path) => write!(f, "dependency cycle {}", path.join(" -> ")),
            Problem::Unknown(name) => write!(f, "no unit named `{name}`"),
            Problem::Broken(name) => {
                write!(f, "depends on `{name}`, whose unit file has errors")
            }
            Problem::Refused(name) => write!(
                f,
                "depends on `{name}`, which is refused for its own dependencies"
            ),
        }
    }
}

/// The longest cycle shown name by name; a longer one shows its ends.
const CYCLE_SHOWN: usize = 12;

/// The units that cannot run, by index into `nodes` (each a name and its
/// `depends_on`), with the first problem found for each, in index order.
/// `broken` says whether a name that no node has is a unit whose file
/// failed to parse (rather than no unit at all).
pub fn refusals(
    nodes: &[(&str, &[String])],
    broken: impl Fn(&str) -> bool,
) -> Vec<(usize, Problem)> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, i))
        .collect();
    let mut problem: Vec<Option<Problem>> = vec![None; nodes.len()];
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, (_, names)) in nodes.iter().enumerate() {
        for name in names.iter() {
            match index.get(name.as_str()) {
                Some(&j) => deps.get_mut(i).into_iter().for_each(|d| d.push(j)),
                None => {
                    if let Some(p @ None) = problem.get_mut(i) {
                        *p = Some(if broken(name) {
                            Problem::Broken(name.clone())
                        } else {
                            Problem::Unknown(name.clone())
                        });
                    }
                }
            }
        }
    }
    let name = |i: usize| nodes.get(i).map_or("", |(n, _)| *n).to_string();
    for group in cyclic_groups(&deps) {
        let Some(path) = group
            .first()
            .and_then(|&start| cycle_through(&deps, &group, start))
        else {
            continue;
        };
        let position: HashMap<usize, usize> =
            path.iter().enumerate().map(|(at, &n)| (n, at)).collect();
        let len = path.len();
        for &member in &group {
            // The path from `member` when it lies on it, else from its start.
            let from = position.get(&member).copied().unwrap_or(0);
            let at = |k: usize| name(path.get((from + k) % len).copied().unwrap_or(member));
            // A long cycle is shown by its ends, so the errors stay short.
            let mut names: Vec<String> = Vec::new();
            if len <= CYCLE_SHOWN {
                names.extend((0..=len).map(at));
            } else {
                let half = CYCLE_SHOWN / 2;
                names.extend((0..half).map(at));
                names.push(format!("({} more)", len - 2 * half + 1));
                names.extend((len - half + 1..=len).map(at));
            }
            if let Some(p) = problem.get_mut(member) {
                // A cycle says more than an unknown name beside it.
                *p = Some(Problem::Cycle(names));
            }
        }
    }
    // Whatever depends on a refused unit can never start: refuse it too.
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            if let Some(v) = dependants.get_mut(d) {
                v.push(i);
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..nodes.len())
        .filter(|&i| problem.get(i).is_some_and(Option::is_some))
        .collect();
    while let Some(i) = queue.pop_front() {
        for &d in dependants.get(i).map_or(&[][..], Vec::as_slice) {
            if let Some(p @ None) = problem.get_mut(d) {
                *p = Some(Problem::Refused(name(i)));
                queue.push_back(d);
            }
        }
    }
    problem
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p?)))
        .collect()
}

/// The groups of nodes that lie on a cycle (strongly connected components
/// with more than one node, or one node that depends on itself), each
/// sorted; Tarjan's algorithm, iterative so a long chain cannot overflow
/// the stack.
fn cyclic_groups(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = deps.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    let mut low: Vec<usize> = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut groups = Vec::new();
    for root in 0..n {
        if index.get(root).is_some_and(Option::is_some) {
            continue;
        }
        // (node, how many of its edges were followed)
        let mut walk: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut edge)) = walk.last_mut() {
            if *edge == 0 && index.get(v).is_some_and(Option::is_none) {
                if let Some(x) = index.get_mut(v) {
                    *x = Some(next);
                }
                if let Some(x) = low.get_mut(v) {
                    *x = next;
                }
                next += 1;
                stack.push(v);
                if let Some(x) = on_stack.get_mut(v) {
                    *x = true;
                }
            }
            let out = deps.get(v).map_or(&[][..], Vec::as_slice);
            if let Some(&w) = out.get(*edge) {
                *edge += 1;
                match index.get(w).copied().flatten() {
                    None => walk.push((w, 0)),
                    Some(wi) if on_stack.get(w).copied().unwrap_or(false) => {
                        let lv = low.get(v).copied().unwrap_or(0);
                        if let Some(x) = low.get_mut(v) {
                            *x = lv.min(wi);
                        }
                    }
                    Some(_) => {}
                }
                continue;
            }
            // Every edge of v followed.
            walk.pop();
            let lv = low.get(v).copied().unwrap_or(0);
            if let Some(&(parent, _)) = walk.last() {
                let lp = low.get(parent).copied().unwrap_or(0);
                if let Some(x) = low.get_mut(parent) {
                    *x = lp.min(lv);
                }
            }
            if Some(lv) == index.get(v).copied().flatten() {
                let mut group = Vec::new();
                while let Some(w) = stack.pop() {
                    if let Some(x) = on_stack.get_mut(w) {
                        *x = false;
                    }
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                let self_loop = deps.get(v).is_some_and(|d| d.contains(&v));
                if group.len() > 1 || self_loop {
                    group.sort_unstable();
                    groups.push(group);
                }
            }
        }
    }
    groups.sort();
    groups
}

/// A shortest cycle from `start` back to itself within `group`, as the
/// nodes in order (without repeating `start` at the end).
fn cycle_through(deps: &[Vec<usize>], group: &[usize], start: usize) -> Option<Vec<usize>> {
    let mut came_from: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in deps.get(v).map_or(&[][..], Vec::as_slice) {
            if group.binary_search(&w).is_err() {
                continue;
            }
            if w == start {
                let mut path = vec![v];
                let mut at = v;
                while at != start {
                    at = *came_from.get(&at)?;
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = came_from.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// The loaded services' dependencies and dependants by index, built once
/// per load or reload.
///
/// Sparse: only nodes with edges have entries, as most services have no
/// dependencies (three vectors per node were 72 bytes a service).
#[derive(Debug, Default, Clone)]
pub struct Graph {
    n: usize,
    deps: BTreeMap<usize, Vec<usize>>,
    dependants: BTreeMap<usize, Vec<usize>>,
    /// Names a node depends on that no loaded service has (its unit was
    /// refused, or removed while an older definition that names it runs).
    missing: BTreeMap<usize, Vec<String>>,
}

impl Graph {
    /// `n` nodes; `nodes` gives each one's `depends_on` (names), and `find`
    /// the index of a name. Indices `find` gives must be below `n`; a name
    /// listed twice counts once.
    pub fn build<'a>(
        n: usize,
        nodes: impl IntoIterator<Item = (usize, &'a [String])>,
        find: impl Fn(&str) -> Option<usize>,
    ) -> Graph {
        let mut g = Graph {
            n,
            ..Graph::default()
        };
        for (i, names) in nodes {
            if i >= n {
                continue;
            }
            for name in names {
                match find(name).filter(|&j| j < n) {
                    Some(j) => {
                        let d = g.deps.entry(i).or_default();
                        if d.contains(&j) {
                            continue;
                        }
                        d.push(j);
                        g.dependants.entry(j).or_default().push(i);
                    }
                    None => g.missing.entry(i).or_default().push(name.clone()),
                }
            }
        }
        g
    }

    /// What `i` depends on directly.
    pub fn deps(&self, i: usize) -> &[usize] {
        self.deps.get(&i).map_or(&[], Vec::as_slice)
    }

    /// What depends on `i` directly.
    pub fn dependants(&self, i: usize) -> &[usize] {
        self.dependants.get(&i).map_or(&[], Vec::as_slice)
    }

    /// Names `i` depends on that are not loaded.
    pub fn missing(&self, i: usize) -> &[String] {
        self.missing.get(&i).map_or(&[], Vec::as_slice)
    }

    /// Everything `roots` need, directly or not, dependencies before their
    /// dependants (roots themselves left out).
    pub fn needed_by(&self, roots: &[usize]) -> Vec<usize> {
        self.closure(roots, |i| self.deps(i))
    }

    /// Everything that needs `roots`, directly or not, dependants before
    /// their dependencies (roots themselves left out).
    pub fn needing(&self, roots: &[usize]) -> Vec<usize> {
        self.closure(roots, |i| self.dependants(i))
    }

    /// The nodes reachable from `roots` along `next`, farthest first (a
    /// node comes before every node it is reached from), roots left out.
    fn closure<'s>(&'s self, roots: &[usize], next: impl Fn(usize) -> &'s [usize]) -> Vec<usize> {
        // Depth-first post-order: a node is listed once all it reaches is.
        let mut seen = vec![false; self.n];
        for &r in roots {
            if let Some(s) = seen.get_mut(r) {
                *s = true;
            }
        }
        let mut out = Vec::new();
        for &r in roots {
            let mut walk: Vec<(usize, usize)> = vec![(r, 0)];
            while let Some(&mut (v, ref mut edge)) = walk.last_mut() {
                if let Some(&w) = next(v).get(*edge) {
                    *edge += 1;
                    if seen.get(w).is_some_and(|s| !s) {
                        if let Some(s) = seen.get_mut(w) {
                            *s = true;
                        }
                        walk.push((w, 0));
                    }
                    continue;
                }
                walk.pop();
                if !roots.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// Each node's level: 0 without dependencies, else one more than its
    /// deepest dependency: the waves in which shutdown's ordered stop (a
    /// service once its dependants are down) can proceed at the most. Nodes
    /// on a cycle (which a load refuses) get the level after every other.
    pub fn levels(&self) -> Vec<usize> {
        let n = self.n;
        let mut left: Vec<usize> = (0..n).map(|i| self.deps(i).len()).collect();
        let mut level = vec![0usize; n];
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| left.get(i) == Some(&0)).collect();
        let mut done = vec![false; n];
        let mut top = 0;
        while let Some(i) = queue.pop_front() {
            if let Some(d) = done.get_mut(i) {
                *d = true;
            }
            let li = level.get(i).copied().unwrap_or(0);
            top = top.max(li);
            for &d in self.dependants(i) {
                if let Some(l) = level.get_mut(d) {
                    *l = (*l).max(li + 1);
                }
                if let Some(c) = left.get_mut(d) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        queue.push_back(d);
                    }
                }
            }
        }
        for (i, l) in level.iter_mut().enumerate() {
            if done.get(i) == Some(&false) {
                *l = top + 1;
            }
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// (name, depends_on) pairs → refusals rendered as "unit: problem".
    fn refused(units: &[(&str, &[&str])]) -> Vec<String> {
        let deps: Vec<Vec<String>> = units.iter().map(|(_, d)| names(d)).collect();
        let nodes: Vec<(&str, &[String])> = units
            .iter()
            .zip(&deps)
            .map(|((n, _), d)| (*n, d.as_slice()))
            .collect();
        refusals(&nodes, |n| n == "broken")
            .into_iter()
            .map(|(i, p)| format!("{}: {p}", units[i].0))
            .collect()
    }

    #[test]
    fn a_healthy_graph_refuses_nothing() {
        assert!(refused(&[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])]).is_empty());
    }

    #[test]
    fn cycles_of_one_two_three_and_two_disjoint_ones() {
        assert_eq!(refused(&[("a", &["a"])]), ["a: dependency cycle a -> a"]);
        assert_eq!(
            refused(&[("a", &["b"]), ("b", &["a"]), ("ok", &[])]),
            [
                "a: dependency cycle a -> b -> a",
                "b: dependency cycle b -> a -> b"
            ]
        );
        assert_eq!(
            refused(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]),
            [
                "a: dependency cycle a -> b -> c -> a",
                "b: dependency cycle b -> c -> a -> b",
                "c: dependency cycle c -> a -> b -> c"
            ]
        );
        assert_eq!(
            refused(&[("a", &["b"]), ("b", &["a"]), ("x", &["y"]), ("y", &["x"])]),
            [
                "a: dependency cycle a -> b -> a",
                "b: dependency cycle b -> a -> b",
                "x: dependency cycle x -> y -> x",
                "y: dependency cycle y -> x -> y"
            ]
        );
    }

    #[test]
    fn unknown_and_broken_names_and_what_depends_on_them() {
        assert_eq!(
            refused(&[
                ("web", &["db"]),
                ("db", &["dbx"]),
                ("api", &["broken"]),
                ("free", &[])
            ]),
            [
                "web: depends on `db`, which is refused for its own dependencies",
                "db: no unit named `dbx`",
                "api: depends on `broken`, whose unit file has errors"
            ]
        );
        // Dependants of a cycle are refused too, and say which member.
        assert_eq!(
            refused(&[("a", &["b"]), ("b", &["a"]), ("c", &["b"])]),
            [
                "a: dependency cycle a -> b -> a",
                "b: dependency cycle b -> a -> b",
                "c: depends on `b`, which is refused for its own dependencies"
            ]
        );
    }

    #[test]
    fn a_long_chain_is_fine_and_a_long_ring_is_one_cycle() {
        let n = 5_000;
        let deps: Vec<Vec<String>> = (0..n)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![format!("s{}", i - 1)]
                }
            })
            .collect();
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let nodes: Vec<(&str, &[String])> = names
            .iter()
            .zip(&deps)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        assert!(refusals(&nodes, |_| false).is_empty());
        let mut ring = deps.clone();
        ring[0] = vec![format!("s{}", n - 1)];
        let nodes: Vec<(&str, &[String])> = names
            .iter()
            .zip(&ring)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let r = refusals(&nodes, |_| false);
        assert_eq!(r.len(), n);
        let Problem::Cycle(path) = &r[5].1 else {
            panic!("{:?}", r[5])
        };
        assert_eq!(
            path.join(" -> "),
            "s5 -> s4 -> s3 -> s2 -> s1 -> s0 -> (4989 more) -> s10 -> s9 -> s8 -> s7 -> s6 -> s5"
        );
    }

    fn graph(deps: &[&[usize]]) -> Graph {
        let lists: Vec<Vec<String>> = deps
            .iter()
            .map(|d| d.iter().map(|i| i.to_string()).collect())
            .collect();
        Graph::build(
            deps.len(),
            lists.iter().enumerate().map(|(i, d)| (i, d.as_slice())),
            |n| n.parse().ok(),
        )
    }

    #[test]
    fn dependants_closures_and_missing_names() {
        // 0 <- 1 <- 2, 0 <- 3, 4 alone; 2 names 0 twice
        let g = graph(&[&[], &[0], &[1, 0, 0], &[0], &[]]);
        assert_eq!(g.deps(2), [1, 0]);
        assert_eq!(g.dependants(0), [1, 2, 3]);
        assert!(g.dependants(4).is_empty());
        // dependants before what they depend on
        assert_eq!(g.needing(&[0]), [2, 1, 3]);
        assert_eq!(g.needing(&[1]), [2]);
        // dependencies before their dependants
        assert_eq!(g.needed_by(&[2]), [0, 1]);
        assert!(g.needed_by(&[4]).is_empty());
        let g = Graph::build(2, [(0, &names(&["1", "gone"])[..])], |n| n.parse().ok());
        assert_eq!(g.missing(0), ["gone"]);
        assert_eq!(g.deps(0), [1]);
        assert!(g.missing(1).is_empty() && g.missing(7).is_empty() && g.deps(7).is_empty());
    }

    #[test]
    fn levels_for_ordered_shutdown() {
        // a(0) <- b(1) <- c(2); d(0) <- c; e alone
        let g = graph(&[&[], &[0], &[1, 3], &[], &[]]);
        assert_eq!(g.levels(), [0, 1, 2, 0, 0]);
        // a cycle (refused at load) comes after everything else
        let g = graph(&[&[1], &[0], &[]]);
        assert_eq!(g.levels(), [1, 1, 0]);
    }
}
