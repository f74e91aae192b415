use super::*;

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn names(texts: &[&str]) -> Vec<Name> {
    texts.iter().map(|t| name(t)).collect()
}

const MS: u64 = 1_000_000;
const WINDOWS: Windows = Windows {
    expansion_ns: 1_000 * MS,
    retry_ns: 10_000 * MS,
};
const K8S_SEARCH: [&str; 3] = [
    "ns1.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];

/// Plays queries and responses against one owner's open lookups, 1 ms apart.
struct Resolver {
    lookups: OpenLookups,
    search: Vec<Name>,
    now: u64,
    roles: Vec<(QType, String, QueryRole)>,
}

impl Resolver {
    fn new(search: &[&str]) -> Self {
        Self {
            lookups: OpenLookups::new(8),
            search: names(search),
            now: 0,
            roles: Vec::new(),
        }
    }

    fn query(&mut self, qtype: QType, text: &str) -> QueryRole {
        self.now += MS;
        let role = self
            .lookups
            .on_query(qtype, &name(text), self.now, &self.search, WINDOWS);
        self.roles.push((qtype, text.to_owned(), role));
        role
    }

    fn respond(&mut self, qtype: QType, text: &str, outcome: TryOutcome) {
        self.now += MS;
        self.lookups
            .on_response(qtype, &name(text), self.now, outcome);
    }

    fn wait(&mut self, ms: u64) {
        self.now += ms * MS;
    }

    /// glibc's getaddrinfo(AF_UNSPEC): A and AAAA side by side for each try, until one
    /// of them is answered. `answered_at` is the index of the try that gets an answer.
    fn getaddrinfo(&mut self, tries: &[&str], answered_at: usize) {
        for (i, text) in tries.iter().enumerate() {
            self.query(QType::A, text);
            self.query(QType::AAAA, text);
            let outcome = if i == answered_at {
                TryOutcome::Answered
            } else {
                TryOutcome::Failed
            };
            self.respond(QType::A, text, outcome);
            self.respond(QType::AAAA, text, outcome);
            if i == answered_at {
                break;
            }
        }
    }

    fn count(&self, wanted: QueryRole) -> usize {
        self.roles
            .iter()
            .filter(|(_, _, role)| *role == wanted)
            .count()
    }
}

const EXAMPLE_TRIES: [&str; 4] = [
    "example.com.ns1.svc.cluster.local",
    "example.com.svc.cluster.local",
    "example.com.cluster.local",
    "example.com",
];

#[test]
fn example_com_under_ndots_5_is_one_lookup_and_three_expansions_per_qtype() {
    for search in [&K8S_SEARCH[..], &[]] {
        let mut resolver = Resolver::new(search);
        resolver.getaddrinfo(&EXAMPLE_TRIES, 3);
        assert_eq!(resolver.roles.len(), 8);
        for qtype in [QType::A, QType::AAAA] {
            let roles: Vec<_> = resolver
                .roles
                .iter()
                .filter(|(t, _, _)| *t == qtype)
                .map(|(_, _, role)| *role)
                .collect();
            assert_eq!(
                roles,
                [
                    QueryRole::Lookup,
                    QueryRole::Expansion,
                    QueryRole::Expansion,
                    QueryRole::Expansion
                ],
                "{qtype} with search list {search:?}"
            );
        }
    }
}

#[test]
fn kubernetes_default_is_found_at_the_second_try() {
    let mut resolver = Resolver::new(&[]);
    // A answered under svc.cluster.local; AAAA is empty there (NODATA), and glibc
    // stops anyway because A got an answer.
    resolver.query(QType::A, "kubernetes.default.ns1.svc.cluster.local");
    resolver.query(QType::AAAA, "kubernetes.default.ns1.svc.cluster.local");
    resolver.respond(
        QType::A,
        "kubernetes.default.ns1.svc.cluster.local",
        TryOutcome::Failed,
    );
    resolver.respond(
        QType::AAAA,
        "kubernetes.default.ns1.svc.cluster.local",
        TryOutcome::Failed,
    );
    resolver.query(QType::A, "kubernetes.default.svc.cluster.local");
    resolver.query(QType::AAAA, "kubernetes.default.svc.cluster.local");
    resolver.respond(
        QType::A,
        "kubernetes.default.svc.cluster.local",
        TryOutcome::Answered,
    );
    resolver.respond(
        QType::AAAA,
        "kubernetes.default.svc.cluster.local",
        TryOutcome::Failed,
    );
    assert_eq!(resolver.count(QueryRole::Lookup), 2, "one per qtype");
    assert_eq!(resolver.count(QueryRole::Expansion), 2, "one per qtype");

    // The same name again: it starts over from the longest try, a new lookup.
    resolver.getaddrinfo(
        &[
            "kubernetes.default.ns1.svc.cluster.local",
            "kubernetes.default.svc.cluster.local",
        ],
        1,
    );
    assert_eq!(resolver.count(QueryRole::Lookup), 4);
    assert_eq!(resolver.count(QueryRole::Expansion), 4);
}

#[test]
fn a_name_found_at_the_first_try_is_one_lookup_without_expansions() {
    let mut resolver = Resolver::new(&K8S_SEARCH);
    resolver.getaddrinfo(&["example.com"], 0);
    resolver.getaddrinfo(&["example.com"], 0);
    assert_eq!(resolver.count(QueryRole::Lookup), 4);
    assert_eq!(resolver.count(QueryRole::Expansion), 0);
}

#[test]
fn interleaved_independent_lookups_do_not_merge() {
    let mut resolver = Resolver::new(&[]);
    // Two threads of one process resolving different names at the same time.
    for suffix in [
        "ns1.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ] {
        resolver.query(QType::A, &format!("foo.{suffix}"));
        resolver.query(QType::A, &format!("bar.{suffix}"));
        resolver.respond(QType::A, &format!("bar.{suffix}"), TryOutcome::Failed);
        resolver.respond(QType::A, &format!("foo.{suffix}"), TryOutcome::Failed);
    }
    assert_eq!(resolver.count(QueryRole::Lookup), 2);
    assert_eq!(resolver.count(QueryRole::Expansion), 4);
}

#[test]
fn a_lookup_after_an_answer_does_not_merge_even_when_the_names_nest() {
    let mut resolver = Resolver::new(&[]);
    resolver.query(QType::A, "web.svc.cluster.local");
    resolver.respond(QType::A, "web.svc.cluster.local", TryOutcome::Answered);
    assert_eq!(
        resolver.query(QType::A, "web.cluster.local"),
        QueryRole::Lookup
    );
}

#[test]
fn a_lookup_after_the_window_does_not_merge() {
    let mut resolver = Resolver::new(&[]);
    resolver.query(QType::A, "example.com.svc.cluster.local");
    resolver.respond(
        QType::A,
        "example.com.svc.cluster.local",
        TryOutcome::Failed,
    );
    resolver.wait(2_000);
    assert_eq!(
        resolver.query(QType::A, "example.com.cluster.local"),
        QueryRole::Lookup
    );
}

#[test]
fn an_other_qtype_does_not_continue_a_lookup() {
    let mut resolver = Resolver::new(&[]);
    resolver.query(QType::A, "example.com.svc.cluster.local");
    resolver.respond(
        QType::A,
        "example.com.svc.cluster.local",
        TryOutcome::Failed,
    );
    assert_eq!(
        resolver.query(QType::SRV, "example.com.cluster.local"),
        QueryRole::Lookup
    );
}

#[test]
fn an_unanswered_try_can_still_be_followed() {
    // The response was lost (or never captured): timing and names decide.
    let mut resolver = Resolver::new(&[]);
    resolver.query(QType::A, "example.com.svc.cluster.local");
    assert_eq!(
        resolver.query(QType::A, "example.com.cluster.local"),
        QueryRole::Expansion
    );
}

#[test]
fn retransmissions_and_tcp_retries_are_retries() {
    let mut resolver = Resolver::new(&[]);
    resolver.query(QType::A, "example.com");
    resolver.wait(5_000);
    assert_eq!(
        resolver.query(QType::A, "example.com"),
        QueryRole::Retry,
        "after a timeout"
    );
    resolver.respond(QType::A, "example.com", TryOutcome::Truncated);
    assert_eq!(
        resolver.query(QType::A, "example.com"),
        QueryRole::Retry,
        "over TCP"
    );
    resolver.respond(QType::A, "example.com", TryOutcome::ServerError);
    assert_eq!(
        resolver.query(QType::A, "example.com"),
        QueryRole::Retry,
        "after REFUSED"
    );
    resolver.respond(QType::A, "example.com", TryOutcome::Answered);
    assert_eq!(
        resolver.query(QType::A, "example.com"),
        QueryRole::Lookup,
        "asked again"
    );
}

#[test]
fn a_name_not_found_anywhere_and_refused_as_is() {
    // What glibc sends for `nothere` when the server refuses names outside its zones:
    // three NXDOMAIN tries, then the bare name twice (REFUSED, attempts:2).
    let mut resolver = Resolver::new(&[]);
    let tries = [
        "nothere.ns1.svc.cluster.local",
        "nothere.svc.cluster.local",
        "nothere.cluster.local",
    ];
    for qtype in [QType::A, QType::AAAA] {
        for name in tries {
            resolver.query(qtype, name);
            resolver.respond(qtype, name, TryOutcome::Failed);
        }
        for _ in 0..2 {
            resolver.query(qtype, "nothere");
            resolver.respond(qtype, "nothere", TryOutcome::ServerError);
        }
    }
    assert_eq!(resolver.count(QueryRole::Lookup), 2);
    assert_eq!(resolver.count(QueryRole::Expansion), 6);
    assert_eq!(resolver.count(QueryRole::Retry), 2);
}

#[test]
fn a_known_search_list_admits_suffixes_that_do_not_nest() {
    let search = ["svc.cluster.local", "eu-west-1.compute.internal"];
    for (list, expected) in [
        (&search[..], QueryRole::Expansion),
        (&[], QueryRole::Lookup),
    ] {
        let mut resolver = Resolver::new(list);
        resolver.query(QType::A, "db.svc.cluster.local");
        resolver.respond(QType::A, "db.svc.cluster.local", TryOutcome::Failed);
        assert_eq!(
            resolver.query(QType::A, "db.eu-west-1.compute.internal"),
            expected
        );
    }
}

#[test]
fn a_known_search_list_admits_the_as_is_first_order() {
    // Six dots ≥ ndots:5: glibc tries the name as is, then under the suffixes.
    let intended = "a.b.c.d.e.example.com";
    for (list, expected) in [
        (&K8S_SEARCH[..], QueryRole::Expansion),
        (&[], QueryRole::Lookup),
    ] {
        let mut resolver = Resolver::new(list);
        resolver.query(QType::A, intended);
        resolver.respond(QType::A, intended, TryOutcome::Failed);
        let next = format!("{intended}.ns1.svc.cluster.local");
        assert_eq!(resolver.query(QType::A, &next), expected);
    }
}

#[test]
fn open_lookups_are_bounded() {
    let mut lookups = OpenLookups::new(4);
    for i in 0..100 {
        let role = lookups.on_query(
            QType::A,
            &name(&format!("n{i}.cluster.local")),
            i,
            &[],
            WINDOWS,
        );
        assert_eq!(role, QueryRole::Lookup);
        assert!(lookups.len() <= 4);
    }
    // The most recent lookups are the ones kept.
    let role = lookups.on_query(QType::A, &name("n99"), 100, &[], WINDOWS);
    assert_eq!(role, QueryRole::Expansion);
    let role = lookups.on_query(QType::A, &name("n0"), 101, &[], WINDOWS);
    assert_eq!(role, QueryRole::Lookup);
}

#[test]
fn next_try_relation() {
    let search = names(&K8S_SEARCH);
    let cases = [
        (
            "example.com.ns1.svc.cluster.local",
            "example.com.svc.cluster.local",
            true,
        ),
        (
            "example.com.svc.cluster.local",
            "example.com.cluster.local",
            true,
        ),
        ("example.com.cluster.local", "example.com", true),
        (
            "example.com.ns1.svc.cluster.local",
            "example.com.cluster.local",
            true,
        ),
        ("example.com.ns1.svc.cluster.local", "example.com", true),
        // Longer, equal, unrelated, or losing the first label.
        (
            "example.com.svc.cluster.local",
            "example.com.ns1.svc.cluster.local",
            false,
        ),
        ("example.com", "example.com", false),
        ("foo.svc.cluster.local", "bar.cluster.local", false),
        ("foo.svc.cluster.local", "svc.cluster.local", false),
        ("foo.svc.cluster.local", "cluster.local", false),
        ("a.b.c", "a.x", false),
        ("foo.cluster.local", ".", false),
    ];
    for (previous, next, expected) in cases {
        assert_eq!(
            is_next_try(&name(previous), &name(next), &[]),
            expected,
            "{previous} → {next}"
        );
        assert_eq!(
            is_next_try(&name(previous), &name(next), &search),
            expected,
            "{previous} → {next} (hint)"
        );
    }
}
