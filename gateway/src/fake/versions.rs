//! Older versions of objects whose newest version is not on disk yet.
//!
//! Readers see an object once the batch that made it is durable. A later
//! change (a refund of a payment, a refund that fails) must not hide it
//! meanwhile: readers keep the newest version on disk, as a database's
//! readers keep the last committed row, so an object never vanishes from a
//! look-up or a list while it changes.

use std::collections::{HashMap, VecDeque};

/// An object version: the journal batch that wrote it.
pub trait Versioned {
    fn seq(&self) -> u64;
}

pub struct Superseded<T> {
    /// Per id, the versions replaced, oldest first.
    by_id: HashMap<String, Vec<T>>,
    /// `(seq of the replacing version, id)`, in commit order: once that seq
    /// is durable, the versions it replaced are never read again.
    replacements: VecDeque<(u64, String)>,
}

impl<T: Versioned> Superseded<T> {
    pub fn new() -> Self {
        Self { by_id: HashMap::new(), replacements: VecDeque::new() }
    }

    /// `old` was replaced by a version written at `seq`.
    pub fn push(&mut self, id: &str, old: T, seq: u64) {
        self.by_id.entry(id.to_owned()).or_default().push(old);
        self.replacements.push_back((seq, id.to_owned()));
    }

    /// The version of `newest` readers see: the newest one on disk, if any.
    pub fn visible<'a>(&'a self, id: &str, newest: &'a T, durable: u64) -> Option<&'a T> {
        if newest.seq() <= durable {
            return Some(newest);
        }
        self.by_id.get(id)?.iter().rev().find(|v| v.seq() <= durable)
    }

    /// Drops the versions that durable ones replaced.
    pub fn forget(&mut self, durable: u64) {
        while self.replacements.front().is_some_and(|(seq, _)| *seq <= durable) {
            let (seq, id) = self.replacements.pop_front().expect("checked");
            if let Some(older) = self.by_id.get_mut(&id) {
                older.retain(|v| v.seq() >= seq);
                if older.is_empty() {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    /// How many replaced versions are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct V(u64);

    impl Versioned for V {
        fn seq(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn readers_see_the_newest_version_on_disk_and_old_ones_are_dropped() {
        let mut versions = Superseded::new();
        // Written at 5, then at 10 and 11 before either is on disk.
        versions.push("a", V(5), 10);
        versions.push("a", V(10), 11);
        let newest = V(11);
        assert_eq!(versions.visible("a", &newest, 4), None);
        assert_eq!(versions.visible("a", &newest, 9), Some(&V(5)));
        assert_eq!(versions.visible("a", &newest, 10), Some(&V(10)));
        assert_eq!(versions.visible("a", &newest, 11), Some(&V(11)));

        versions.forget(9);
        assert_eq!(versions.len(), 2);
        versions.forget(10);
        assert_eq!((versions.len(), versions.visible("a", &newest, 10)), (1, Some(&V(10))));
        versions.forget(11);
        assert_eq!(versions.len(), 0);
        assert_eq!(versions.visible("a", &newest, 11), Some(&V(11)));
        assert_eq!(versions.visible("b", &V(3), 2), None);
    }
}
