//! How many requests an HTTP/2 record carries when the client coalesces HEADERS (hyper's
//! h2, so kube-rs): see step 6 of the model in [`super`].
//!
//! hyper flushes the HEADERS of every request queued since its last write in one TLS
//! record. Identical requests compress (HPACK) to identical HEADERS of some size R — h2
//! never indexes `:path`, so a repeat is never smaller than its path — and the first
//! request of a connection carries d more bytes (the literals it adds to the dynamic
//! table, `:authority` at least). So a connection's records are `k·R`, and its first
//! `k·R + d`. Sizes alone tell R only when some record carried one request: if every
//! record carried an even number (under load hyper answers a whole window of responses
//! with a whole window of requests), `2R` fits as well as R. The server's responses then
//! decide: one response per request.

/// A request-carrying record of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Headers {
    pub plaintext: u32,
    /// The first request record of the connection: may carry d bytes of new HPACK
    /// literals on top of its requests.
    pub first: bool,
}

/// The smallest HEADERS frame of a request: 9-byte frame header and the four
/// pseudo-headers, each a one-byte HPACK index.
const MIN_HEADERS: u32 = 9 + 4;

/// Requests a record of `plaintext` bytes carries if requests are `unit` bytes each.
/// The first record may carry up to a unit of new literals besides (d < R: a request's
/// new literals are a part of it); later records round, so that a control frame written
/// in the same record (a 9-byte SETTINGS ack, a 13-byte WINDOW_UPDATE) adds nothing.
pub(crate) fn requests_in(record: Headers, unit: u32) -> u64 {
    let n = if record.first {
        record.plaintext / unit
    } else {
        (record.plaintext + unit / 2) / unit
    };
    u64::from(n.max(1))
}

fn total(records: &[Headers], unit: u32) -> u64 {
    records.iter().map(|&r| requests_in(r, unit)).sum()
}

/// The unit to split a batch's records by, or None (one request per record).
///
/// `responses`: the sizes of the server's data records since the batch's first record.
/// First what the sizes of the records other than the connection's first show
/// ([`coalescing_unit`]; the first is no witness: its new literals may make it a multiple
/// of some other size by chance). Then, when the records form a family (multiples of one
/// size), the responses may show a smaller unit: a divisor of that size whose count is
/// within 10 % of the number of responses, when the responses look alike (identical
/// requests get alike responses, one record each; a server that spreads a response over
/// records of different sizes gives no such evidence).
pub(crate) fn batch_unit(records: &[Headers], responses: &[u32]) -> Option<u32> {
    let later: Vec<u32> = records
        .iter()
        .filter(|r| !r.first)
        .map(|r| r.plaintext)
        .collect();
    let shown = coalescing_unit(&later);
    let families = [shown, family_unit(records)];
    answered_unit(records, families.iter().flatten().copied(), responses).or(shown)
}

/// The gcd of the records other than the connection's first, when there are two or more
/// and it is a plausible HEADERS size.
fn family_unit(records: &[Headers]) -> Option<u32> {
    let mut later = records.iter().filter(|r| !r.first).map(|r| r.plaintext);
    let first = later.next()?;
    let mut n = 1;
    let mut g = first;
    for p in later {
        g = gcd(g, p);
        n += 1;
    }
    (n >= 2 && g >= MIN_HEADERS).then_some(g)
}

/// Fewest responses worth going by.
const MIN_RESPONSES: usize = 4;

/// The divisor of a family's size whose request count is nearest the responses, if
/// within 10 %.
fn answered_unit(
    records: &[Headers],
    families: impl Iterator<Item = u32>,
    responses: &[u32],
) -> Option<u32> {
    let answered = responses.len() as u64;
    if responses.len() < MIN_RESPONSES || !alike(responses) {
        return None;
    }
    let (unit, off) = families
        .flat_map(|family| {
            (1..=family / MIN_HEADERS)
                .filter(move |&j| family.is_multiple_of(j))
                .map(move |j| family / j)
        })
        .map(|unit| (unit, total(records, unit).abs_diff(answered)))
        .min_by_key(|&(unit, off)| (off, std::cmp::Reverse(unit)))?;
    (off * 10 <= answered).then_some(unit)
}

/// Three quarters of the sizes within an eighth of their median.
fn alike(sizes: &[u32]) -> bool {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let near = sorted
        .iter()
        .filter(|&&s| s.abs_diff(median) <= median / 8)
        .count();
    4 * near >= 3 * sorted.len()
}

/// What record sizes alone show. Candidates: sizes seen twice (lone requests) and the
/// common divisors of pairs of records (when no request went alone), at least
/// [`MIN_HEADERS`]. A candidate holds when at least half of the records twice its size or
/// more are exact multiples, and there are two such witnesses beside a repeated size,
/// three beside a divisor (a pair's divisor has two by construction). The smallest that
/// holds wins.
pub(crate) fn coalescing_unit(sizes: &[u32]) -> Option<u32> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let mut candidates: Vec<(u32, usize)> = sorted
        .chunk_by(|a, b| a == b)
        .filter(|run| run.len() >= 2)
        .map(|run| (run[0], 2))
        .collect();
    sorted.dedup();
    for (i, &a) in sorted.iter().enumerate() {
        for &b in &sorted[i + 1..] {
            candidates.push((gcd(a, b), 3));
        }
    }
    candidates.retain(|&(unit, _)| unit >= MIN_HEADERS);
    candidates.sort_unstable();
    candidates.into_iter().find_map(|(unit, needed)| {
        let larger = sizes.iter().filter(|&&p| p >= 2 * unit).count();
        let witnesses = sizes
            .iter()
            .filter(|&&p| p >= 2 * unit && p.is_multiple_of(unit))
            .count();
        (witnesses >= needed && 2 * witnesses >= larger).then_some(unit)
    })
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
