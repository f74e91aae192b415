//! The most queried names of one owner, in fixed memory: the space-saving algorithm
//! (Metwally, Agrawal, El Abbadi 2005). A table of `capacity` candidates; a name not in
//! a full table replaces the one with the lowest count and inherits that count as its
//! possible overestimate. Every name queried more than `total / capacity` times is in
//! the table, and each count is at most `error` above the truth.
//!
//! Kept as their "stream-summary": candidates hang in buckets of equal count, the
//! buckets in a list ordered by count, so a query costs O(1) whatever the capacity — a
//! hash lookup of the name, then moving it to the next bucket; the least counted
//! candidate is the first bucket's. (A scan for the minimum cost ~10% of the collector's
//! CPU under many distinct names.) The index hashes names with foldhash, seeded at
//! random per process: pods choose the names, so their hashes must not be predictable.

use std::collections::HashMap;

use super::name::Name;

/// A name with its estimated count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopName {
    pub name: String,
    /// Estimated queries for the name: at least the true count, at most `error` more.
    pub count: u64,
    /// How much of `count` may belong to names this entry replaced.
    pub error: u64,
}

/// No slot or bucket.
const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Candidate {
    name: Name,
    error: u64,
    bucket: u32,
    /// Neighbours among the candidates of the same bucket.
    prev: u32,
    next: u32,
}

#[derive(Clone, Debug)]
struct Bucket {
    count: u64,
    /// A candidate of this count (the head of their list).
    first: u32,
    /// Neighbouring buckets, by count.
    prev: u32,
    next: u32,
}

/// A bounded heavy-hitters table of names.
#[derive(Clone, Debug)]
pub struct TopNames {
    candidates: Vec<Candidate>,
    index: HashMap<Name, u32, foldhash::fast::RandomState>,
    buckets: Vec<Bucket>,
    free_buckets: Vec<u32>,
    /// The bucket of the lowest count.
    min: u32,
    capacity: usize,
    /// Names recorded, repeats included.
    total: u64,
}

impl TopNames {
    /// A table of at most `capacity` candidates (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            candidates: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            min: NIL,
            capacity,
            total: 0,
        }
    }

    /// Counts one query for `name`, in constant time.
    pub fn record(&mut self, name: &Name) {
        self.total += 1;
        if let Some(&slot) = self.index.get(name) {
            self.increment(slot);
            return;
        }
        if self.candidates.len() < self.capacity {
            let slot = self.candidates.len() as u32;
            self.candidates.push(Candidate {
                name: name.clone(),
                error: 0,
                bucket: NIL,
                prev: NIL,
                next: NIL,
            });
            self.index.insert(name.clone(), slot);
            let bucket = if self.min != NIL && self.buckets[self.min as usize].count == 1 {
                self.min
            } else {
                self.new_bucket(1, NIL, self.min)
            };
            self.link(slot, bucket);
            return;
        }
        // Full: a least counted candidate gives way; the newcomer may have been counted
        // before under it, so it inherits that count and marks it as possible error.
        let slot = self.buckets[self.min as usize].first;
        let count = self.buckets[self.min as usize].count;
        let candidate = &mut self.candidates[slot as usize];
        self.index.remove(&candidate.name);
        candidate.name.clone_from(name);
        candidate.error = count;
        self.index.insert(name.clone(), slot);
        self.increment(slot);
    }

    /// Moves a candidate to the bucket of its count plus one.
    fn increment(&mut self, slot: u32) {
        let from = self.candidates[slot as usize].bucket;
        let Bucket { count, next, .. } = self.buckets[from as usize];
        let to = if next != NIL && self.buckets[next as usize].count == count + 1 {
            next
        } else {
            self.new_bucket(count + 1, from, next)
        };
        self.unlink(slot);
        self.link(slot, to);
    }

    /// A bucket of `count` between `prev` and `next` (either may be NIL).
    fn new_bucket(&mut self, count: u64, prev: u32, next: u32) -> u32 {
        let bucket = Bucket {
            count,
            first: NIL,
            prev,
            next,
        };
        let id = match self.free_buckets.pop() {
            Some(id) => {
                self.buckets[id as usize] = bucket;
                id
            }
            None => {
                self.buckets.push(bucket);
                (self.buckets.len() - 1) as u32
            }
        };
        match prev {
            NIL => self.min = id,
            prev => self.buckets[prev as usize].next = id,
        }
        if next != NIL {
            self.buckets[next as usize].prev = id;
        }
        id
    }

    /// Puts a candidate at the head of a bucket's list.
    fn link(&mut self, slot: u32, bucket: u32) {
        let first = self.buckets[bucket as usize].first;
        let candidate = &mut self.candidates[slot as usize];
        candidate.bucket = bucket;
        candidate.prev = NIL;
        candidate.next = first;
        if first != NIL {
            self.candidates[first as usize].prev = slot;
        }
        self.buckets[bucket as usize].first = slot;
    }

    /// Takes a candidate out of its bucket, and drops the bucket if it is left empty.
    fn unlink(&mut self, slot: u32) {
        let Candidate {
            bucket, prev, next, ..
        } = self.candidates[slot as usize];
        match prev {
            NIL => self.buckets[bucket as usize].first = next,
            prev => self.candidates[prev as usize].next = next,
        }
        if next != NIL {
            self.candidates[next as usize].prev = prev;
        }
        if self.buckets[bucket as usize].first != NIL {
            return;
        }
        let Bucket { prev, next, .. } = self.buckets[bucket as usize];
        match prev {
            NIL => self.min = next,
            prev => self.buckets[prev as usize].next = next,
        }
        if next != NIL {
            self.buckets[next as usize].prev = prev;
        }
        self.free_buckets.push(bucket);
    }

    /// The `k` names with the highest counts, highest first (ties by name).
    pub fn top(&self, k: usize) -> Vec<TopName> {
        let mut sorted: Vec<(&Candidate, u64)> = self
            .candidates
            .iter()
            .map(|c| (c, self.buckets[c.bucket as usize].count))
            .collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.name.cmp(&b.0.name)));
        sorted
            .into_iter()
            .take(k)
            .map(|(candidate, count)| TopName {
                name: candidate.name.to_string(),
                count,
                error: candidate.error,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Names recorded, repeats included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Heap bytes held (for the memory bound): the candidates, their buckets and the
    /// index, each name twice (in its candidate and as the index's key).
    pub fn heap_bytes(&self) -> usize {
        let names: usize = self.candidates.iter().map(|c| c.name.heap_bytes()).sum();
        self.candidates.capacity() * size_of::<Candidate>()
            + (self.buckets.capacity() + self.free_buckets.capacity()) * size_of::<Bucket>()
            + self.index.capacity() * (size_of::<Name>() + size_of::<u32>() + 1)
            + 2 * names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn exact_while_the_table_has_room() {
        let mut top = TopNames::new(4);
        for (text, times) in [("a.example", 5), ("b.example", 2), ("c.example", 9)] {
            for _ in 0..times {
                top.record(&name(text));
            }
        }
        let listed: Vec<_> = top
            .top(2)
            .into_iter()
            .map(|t| (t.name, t.count, t.error))
            .collect();
        assert_eq!(
            listed,
            [
                ("c.example".to_owned(), 9, 0),
                ("a.example".to_owned(), 5, 0)
            ]
        );
        assert_eq!(top.total(), 16);
        assert_eq!(top.top(10).len(), 3);
    }

    #[test]
    fn heavy_hitters_survive_a_flood_of_one_off_names_in_fixed_memory() {
        // 10,000 one-off names, one name 1,000 times and one 834 times: N = 11,834.
        // With 16 candidates, every name seen more than N / 16 = 739 times is kept.
        let mut top = TopNames::new(16);
        let heavy = [name("api.example"), name("db.example")];
        for i in 0..10_000 {
            top.record(&name(&format!("noise-{i}.example")));
            if i % 10 == 0 {
                top.record(&heavy[0]);
            }
            if i % 12 == 0 {
                top.record(&heavy[1]);
            }
        }
        assert_eq!(top.total(), 11_834);
        assert_eq!(top.len(), 16, "never more candidates than the capacity");
        let listed = top.top(2);
        assert_eq!(listed[0].name, "api.example");
        assert_eq!(listed[1].name, "db.example");
        // Counts never underestimate, and overestimate by at most `error`.
        assert!(listed[0].count >= 1_000 && listed[0].count - listed[0].error <= 1_000);
        assert!(listed[1].count >= 834 && listed[1].count - listed[1].error <= 834);
        let bytes = top.heap_bytes();
        let per_candidate = size_of::<Candidate>() + 2 * size_of::<Bucket>() + 2 * 32;
        assert!(bytes < 2 * 16 * per_candidate, "{bytes}");
    }

    /// The stream-summary against the plain definition (a scan for the least counted
    /// candidate, the last one in table order on ties, as the table replaces): the same
    /// counts and errors for a pseudo-random stream over more names than it holds.
    #[test]
    fn agrees_with_a_scan_for_the_minimum() {
        let names: Vec<Name> = (0..40).map(|i| name(&format!("n{i}.example"))).collect();
        let mut top = TopNames::new(8);
        let mut plain: Vec<(usize, u64, u64)> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..5_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Skewed: low indices far more often.
            let i = ((rng % 40) * (rng % 40) / 40) as usize;
            top.record(&names[i]);
            if let Some(entry) = plain.iter_mut().find(|e| e.0 == i) {
                entry.1 += 1;
            } else if plain.len() < 8 {
                plain.push((i, 1, 0));
            } else {
                let least = plain.iter().map(|e| e.1).min().unwrap_or(0);
                let weakest = plain
                    .iter_mut()
                    .find(|e| e.1 == least)
                    .expect("a least counted entry");
                *weakest = (i, least + 1, least);
            }
        }
        let mut ours: Vec<u64> = top.top(8).iter().map(|t| t.count).collect();
        let mut theirs: Vec<u64> = plain.iter().map(|e| e.1).collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "the same multiset of counts");
        assert_eq!(top.total(), 5_000);
        let sum: u64 = top.top(8).iter().map(|t| t.count).sum();
        assert_eq!(
            sum, 5_000,
            "space-saving's counts sum to the stream's length"
        );
    }

    #[test]
    fn a_replacement_inherits_the_count_it_replaces_as_error() {
        let mut top = TopNames::new(2);
        top.record(&name("a"));
        top.record(&name("a"));
        top.record(&name("b"));
        top.record(&name("c"));
        let listed = top.top(2);
        assert_eq!(
            listed[0],
            TopName {
                name: "a".into(),
                count: 2,
                error: 0
            }
        );
        assert_eq!(
            listed[1],
            TopName {
                name: "c".into(),
                count: 2,
                error: 1
            }
        );
    }
}
