//! The most queried names of one owner, in fixed memory: the space-saving algorithm
//! (Metwally, Agrawal, El Abbadi 2005). A table of `capacity` candidates; a name not in
//! a full table replaces the one with the lowest count and inherits that count as its
//! possible overestimate. Every name queried more than `total / capacity` times is in
//! the table, and each count is at most `error` above the truth.

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

#[derive(Clone, Debug)]
struct Candidate {
    name: Name,
    count: u64,
    error: u64,
}

/// A bounded heavy-hitters table of names.
#[derive(Clone, Debug)]
pub struct TopNames {
    candidates: Vec<Candidate>,
    /// [`fingerprint`] of each candidate's name, in the same order: a name is looked up
    /// by scanning these words and comparing names only where they agree, which keeps a
    /// query for a name not in the table (the usual case under many names) cheap.
    fingerprints: Vec<u64>,
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
            fingerprints: Vec::with_capacity(capacity),
            capacity,
            total: 0,
        }
    }

    /// Counts one query for `name`. Linear in the capacity, which is small (tens): a
    /// scan of fingerprints beats a hash table of names and allocates nothing.
    pub fn record(&mut self, name: &Name) {
        self.total += 1;
        let print = fingerprint(name);
        let found = self
            .fingerprints
            .iter()
            .zip(&mut self.candidates)
            .find(|(p, c)| **p == print && c.name == *name);
        if let Some((_, candidate)) = found {
            candidate.count += 1;
            return;
        }
        if self.candidates.len() < self.capacity {
            self.candidates.push(Candidate {
                name: name.clone(),
                count: 1,
                error: 0,
            });
            self.fingerprints.push(print);
            return;
        }
        // Full: a least counted candidate gives way; the newcomer may have been counted
        // before under it, so it inherits that count and marks it as possible error.
        if let Some((weakest, weakest_print)) = self
            .candidates
            .iter_mut()
            .zip(&mut self.fingerprints)
            .rev()
            .min_by_key(|(candidate, _)| candidate.count)
        {
            *weakest_print = print;
            weakest.name.clone_from(name);
            weakest.error = weakest.count;
            weakest.count += 1;
        }
    }

    /// The `k` names with the highest counts, highest first (ties by name).
    pub fn top(&self, k: usize) -> Vec<TopName> {
        let mut sorted: Vec<&Candidate> = self.candidates.iter().collect();
        sorted.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        sorted
            .into_iter()
            .take(k)
            .map(|candidate| TopName {
                name: candidate.name.to_string(),
                count: candidate.count,
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

    /// Heap bytes held (for the memory bound).
    pub fn heap_bytes(&self) -> usize {
        self.candidates.capacity() * size_of::<Candidate>()
            + self.fingerprints.capacity() * size_of::<u64>()
            + self
                .candidates
                .iter()
                .map(|c| c.name.heap_bytes())
                .sum::<usize>()
    }
}

/// A 64-bit FNV-1a hash of the name's text. Only a filter before comparing names (equal
/// names have equal fingerprints), so a crafted collision costs a comparison, no more.
fn fingerprint(name: &Name) -> u64 {
    name.as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
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
        assert!(
            bytes < 16 * (size_of::<Candidate>() + size_of::<u64>() + 32),
            "{bytes}"
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
