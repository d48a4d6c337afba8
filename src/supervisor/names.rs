//! Services by name: slot numbers in a hash table that hashes and compares
//! the name each slot's unit holds, so every name is stored once (pure).
//!
//! A `HashMap<String, usize>` kept its own copy of every name beside the
//! unit's: with its 32-byte buckets that was ~86 bytes a service, 0.86 MB
//! at 10,000 (issue 22). Here a bucket is a `u32` slot number and a control
//! byte, ~8 bytes a service at 10,000 (16,384 buckets).
//!
//! The one rule: a slot's name must not change while the slot is indexed
//! (the table finds it again by that name's hash). The supervisor inserts
//! a slot only once its unit is in place and removes it before the slot is
//! reused for another unit.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};

/// Where the index reads the names of the slots it holds.
pub(super) trait Names {
    /// The name slot `slot` holds, if there is such a slot.
    fn name_at(&self, slot: usize) -> Option<&str>;
}

impl Names for [super::Slot] {
    fn name_at(&self, slot: usize) -> Option<&str> {
        self.get(slot).map(|s| s.service.name())
    }
}

/// A slot number the index cannot hold (above `u32::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("service slot {0} is beyond the 4,294,967,296 services zurg can index by name; split the units among several zurg instances")]
pub(super) struct SlotOutOfRange(pub usize);

#[derive(Debug, Default)]
pub(super) struct NameIndex {
    table: HashTable<u32>,
    hasher: RandomState,
}

impl NameIndex {
    /// Whether `slot` can be indexed: checked before a slot is made, so
    /// that `insert` cannot fail after it.
    pub(super) fn fits(slot: usize) -> Result<u32, SlotOutOfRange> {
        u32::try_from(slot).map_err(|_| SlotOutOfRange(slot))
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The slot indexed under `name`.
    pub(super) fn get<N: Names + ?Sized>(&self, names: &N, name: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |&s| names.name_at(s as usize) == Some(name))
            .map(|&s| s as usize)
    }

    pub(super) fn contains<N: Names + ?Sized>(&self, names: &N, name: &str) -> bool {
        self.get(names, name).is_some()
    }

    /// Indexes `slot` under the name it holds now, in place of another
    /// slot indexed under that name. A slot without a name is not indexed.
    pub(super) fn insert<N: Names + ?Sized>(
        &mut self,
        names: &N,
        slot: usize,
    ) -> Result<(), SlotOutOfRange> {
        let value = Self::fits(slot)?;
        let Some(name) = names.name_at(slot) else {
            return Ok(());
        };
        let hasher = &self.hasher;
        let rehash = |&s: &u32| hasher.hash_one(names.name_at(s as usize).unwrap_or_default());
        match self.table.entry(
            hasher.hash_one(name),
            |&s| names.name_at(s as usize) == Some(name),
            rehash,
        ) {
            Entry::Occupied(mut e) => *e.get_mut() = value,
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
        Ok(())
    }

    /// Takes `name` out of the index; the slot it was under.
    pub(super) fn remove<N: Names + ?Sized>(&mut self, names: &N, name: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        let (slot, _) = self
            .table
            .find_entry(hash, |&s| names.name_at(s as usize) == Some(name))
            .ok()?
            .remove();
        Some(slot as usize)
    }

    /// Every indexed slot, in no particular order.
    pub(super) fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().map(|&s| s as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Names for [String] {
        fn name_at(&self, slot: usize) -> Option<&str> {
            self.get(slot).map(String::as_str)
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("svc{i}")).collect()
    }

    #[test]
    fn finds_every_name_it_was_given_after_growing() {
        let slots = names(5_000);
        let mut index = NameIndex::default();
        for i in 0..slots.len() {
            index.insert(slots.as_slice(), i).unwrap();
        }
        assert_eq!(index.len(), 5_000);
        for (i, name) in slots.iter().enumerate() {
            assert_eq!(index.get(slots.as_slice(), name), Some(i), "{name}");
        }
        assert_eq!(index.get(slots.as_slice(), "svc5000"), None);
        assert_eq!(index.get(slots.as_slice(), ""), None);
        let mut all: Vec<usize> = index.slots().collect();
        all.sort_unstable();
        assert_eq!(all, (0..5_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_removed_name_is_gone_and_its_slot_can_take_another() {
        let mut slots = names(3);
        let mut index = NameIndex::default();
        for i in 0..3 {
            index.insert(slots.as_slice(), i).unwrap();
        }
        assert_eq!(index.remove(slots.as_slice(), "svc1"), Some(1));
        assert_eq!(index.remove(slots.as_slice(), "svc1"), None);
        assert!(!index.contains(slots.as_slice(), "svc1"));
        assert_eq!(index.len(), 2);
        // The slot is reused for another unit once it is out of the index.
        slots[1] = "web".to_string();
        index.insert(slots.as_slice(), 1).unwrap();
        assert_eq!(index.get(slots.as_slice(), "web"), Some(1));
        assert_eq!(index.get(slots.as_slice(), "svc0"), Some(0));
        assert_eq!(index.get(slots.as_slice(), "svc2"), Some(2));
    }

    #[test]
    fn a_second_slot_with_a_name_takes_its_place() {
        let slots = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        let mut index = NameIndex::default();
        for i in 0..3 {
            index.insert(slots.as_slice(), i).unwrap();
        }
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(slots.as_slice(), "a"), Some(2));
    }

    #[test]
    fn a_slot_number_beyond_u32_is_refused_not_truncated() {
        let slots = names(1);
        let mut index = NameIndex::default();
        let big = usize::try_from(u64::from(u32::MAX) + 1);
        if let Ok(big) = big {
            assert_eq!(
                index.insert(slots.as_slice(), big),
                Err(SlotOutOfRange(big))
            );
            assert_eq!(index.len(), 0);
        }
    }

    /// What the index is for: at 10,000 services it takes a fraction of
    /// what a map of name copies took (its buckets, without the names).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn ten_thousand_names_take_under_ten_bytes_each() {
        let slots = names(10_000);
        let mut index = NameIndex::default();
        for i in 0..slots.len() {
            index.insert(slots.as_slice(), i).unwrap();
        }
        let bytes = index.table.allocation_size();
        assert!(bytes <= 10 * 10_000, "{bytes} bytes for 10,000 names");
    }
}
