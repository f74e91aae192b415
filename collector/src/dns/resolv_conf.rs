//! The search list of a resolv.conf, as a hint for the expansion detector (user space
//! can read a process's at `/proc/<tgid>/root/etc/resolv.conf`).

use super::name::Name;

/// Search-list entries kept at most (glibc kept 6 until 2.26; real lists are short).
pub const MAX_SEARCH: usize = 8;

/// The search list a stub resolver would use: the last `search` or `domain` line wins
/// (as in glibc); entries that are not valid names are skipped; at most [`MAX_SEARCH`].
pub fn search_list(resolv_conf: &str) -> Vec<Name> {
    let mut list = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            list = words
                .take_while(|word| !word.starts_with(['#', ';']))
                .filter_map(|word| Name::parse(word).ok())
                .filter(|name| !name.is_root())
                .take(MAX_SEARCH)
                .collect();
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_search_or_domain_line_wins() {
        let conf = "# generated\nnameserver 10.96.0.10\ndomain corp.example\n\
                    search ns1.svc.cluster.local svc.cluster.local Cluster.Local. # k8s\n\
                    options ndots:5\n";
        let list: Vec<String> = search_list(conf).iter().map(|n| n.to_string()).collect();
        assert_eq!(
            list,
            [
                "ns1.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(search_list("search a b\ndomain c\n").len(), 1);
        assert!(search_list("nameserver 127.0.0.1\n").is_empty());
    }

    #[test]
    fn the_list_is_bounded_and_skips_bad_entries() {
        let many = (0..20)
            .map(|i| format!("s{i}.example"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(search_list(&format!("search {many}")).len(), MAX_SEARCH);
        assert_eq!(search_list("search a..b good.example .").len(), 1);
    }
}
