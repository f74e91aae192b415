//! A hasher for the per-event maps keyed by ids the kernel hands out (cgroup ids,
//! process ids): SipHash, the standard maps' default, costs more per event than the
//! rest of the lookup. These keys are small integers chosen by the kernel, not by a
//! pod, and the maps are bounded, so collisions cannot be forced to any effect; keys a
//! pod chooses (query names) keep the standard, keyed hasher.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// A `HashMap` keyed by kernel-assigned ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Multiply-rotate over the key's integers (the words a derived `Hash` writes).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

/// An odd constant with bits spread evenly (2^64 / φ).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(SEED);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and its tag from the top seven;
        // fold the well-mixed high half into the low.
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn hash_of(key: impl std::hash::Hash) -> u64 {
        let mut h = IdHasher::default();
        key.hash(&mut h);
        h.finish()
    }

    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        // cgroup ids are inode numbers handed out in sequence.
        let ids = 10_000u64..11_024;
        let buckets: HashSet<u64> = ids.clone().map(|id| hash_of(id) & 1023).collect();
        let tags: HashSet<u64> = ids.map(|id| hash_of(id) >> 57).collect();
        assert!(buckets.len() > 600, "{} of 1024 buckets", buckets.len());
        assert_eq!(tags.len(), 128, "every 7-bit tag used");
    }

    #[test]
    fn fields_of_a_key_all_count() {
        assert_ne!(hash_of((1u64, 2u32)), hash_of((2u64, 1u32)));
        assert_ne!(hash_of((1u64, 2u32)), hash_of((1u64, 3u32)));
        let mut map: IdMap<(u64, u32), u32> = IdMap::default();
        for i in 0..1000u32 {
            map.insert((u64::from(i / 10), i % 10), i);
        }
        assert_eq!(map.len(), 1000);
        assert_eq!(map[&(42, 7)], 427);
    }
}
