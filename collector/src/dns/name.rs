//! Domain names as the tracker keeps them: lowercase presentation text without the
//! trailing dot (`example.com`, the root as `.`), where every byte that is not a letter,
//! digit, `-`, `_` or `*` is written `\DDD`, so a `.` always separates labels.

use std::fmt;

/// Longest name on the wire, length bytes and the root label included (RFC 1035 3.1).
pub const MAX_WIRE_LEN: usize = 255;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A domain name in canonical presentation form (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Clone for Name {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }

    /// Reuses this name's buffer when it is large enough: the tracker overwrites names
    /// in its bounded tables on every query, which then costs no allocation.
    fn clone_from(&mut self, source: &Self) {
        self.0.clone_from(&source.0);
    }
}

/// Why a name written as text (a search-list entry, a test) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name {name:?} has an empty label; write labels separated by single dots")]
    EmptyLabel { name: String },
    #[error("name {name:?} has a label longer than {MAX_LABEL_LEN} bytes")]
    LabelTooLong { name: String },
    #[error("name {name:?} is longer than {MAX_WIRE_LEN} bytes on the wire")]
    TooLong { name: String },
}

impl Name {
    /// The root name, `.`.
    pub fn root() -> Self {
        Self(".".to_owned())
    }

    /// Parses a name written as text, e.g. a search-list entry from resolv.conf. Case is
    /// folded, one trailing dot is dropped; bytes outside the plain set are escaped.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        let mut builder = NameBuilder::default();
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel {
                    name: text.to_owned(),
                });
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong {
                    name: text.to_owned(),
                });
            }
            if !builder.push_label(label.as_bytes()) {
                return Err(NameError::TooLong {
                    name: text.to_owned(),
                });
            }
        }
        Ok(builder.finish())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "."
    }

    /// The labels, leftmost first (none for the root).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        let text = if self.is_root() { "" } else { self.0.as_str() };
        text.split('.').filter(|label| !label.is_empty())
    }

    /// The labels, last first.
    pub fn labels_rev(&self) -> impl Iterator<Item = &str> {
        let text = if self.is_root() { "" } else { self.0.as_str() };
        text.rsplit('.').filter(|label| !label.is_empty())
    }

    pub fn label_count(&self) -> usize {
        // Labels are never empty, so the dots separate exactly this many.
        if self.is_root() {
            0
        } else {
            1 + self.0.bytes().filter(|&b| b == b'.').count()
        }
    }

    /// Whether `self` is `suffix` or ends with `.suffix` (label-wise).
    pub fn ends_with(&self, suffix: &Self) -> bool {
        if suffix.is_root() {
            return true;
        }
        self.0 == suffix.0
            || (self.0.len() > suffix.0.len()
                && self.0.ends_with(&suffix.0)
                && self.0.as_bytes()[self.0.len() - suffix.0.len() - 1] == b'.')
    }

    /// `self` without the trailing `suffix` labels, or `None` if it does not end with them
    /// or nothing would be left.
    pub fn strip_suffix(&self, suffix: &Self) -> Option<&str> {
        if suffix.is_root() || !self.ends_with(suffix) || self.0 == suffix.0 {
            return None;
        }
        Some(&self.0[..self.0.len() - suffix.0.len() - 1])
    }

    /// Heap bytes this name holds (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a [`Name`] label by label, enforcing the wire length limit.
/// Longest presentation text of a name: every byte of its labels escaped as `\DDD`.
const MAX_TEXT_LEN: usize = 4 * MAX_WIRE_LEN;

/// Builds a [`Name`] label by label from wire bytes (see the module docs for the form),
/// in a buffer on the stack: the name allocates once, at its exact length.
#[derive(Debug)]
pub(crate) struct NameBuilder {
    text: [u8; MAX_TEXT_LEN],
    len: usize,
    wire_len: usize,
}

impl Default for NameBuilder {
    fn default() -> Self {
        Self {
            text: [0; MAX_TEXT_LEN],
            len: 0,
            wire_len: 0,
        }
    }
}

impl NameBuilder {
    /// Appends one label (1..=63 raw bytes). Returns false once the name would exceed
    /// [`MAX_WIRE_LEN`]; the builder is then unusable.
    pub(crate) fn push_label(&mut self, label: &[u8]) -> bool {
        self.wire_len += 1 + label.len();
        // The final root label takes one more byte.
        if self.wire_len + 1 > MAX_WIRE_LEN {
            return false;
        }
        // Within MAX_WIRE_LEN, the text (a dot and at most 4 bytes per label byte) fits.
        let mut at = self.len;
        if at > 0 {
            self.text[at] = b'.';
            at += 1;
        }
        for &byte in label {
            let byte = byte.to_ascii_lowercase();
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'*') {
                self.text[at] = byte;
                at += 1;
            } else {
                self.text[at..at + 4].copy_from_slice(&[
                    b'\\',
                    b'0' + byte / 100,
                    b'0' + byte / 10 % 10,
                    b'0' + byte % 10,
                ]);
                at += 4;
            }
        }
        self.len = at;
        true
    }

    pub(crate) fn finish(&self) -> Name {
        // Only ASCII was written (plain bytes and `\DDD` escapes): the check passes.
        match std::str::from_utf8(&self.text[..self.len]) {
            Ok(text) if !text.is_empty() => Name(text.to_owned()),
            _ => Name::root(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn parse_folds_case_and_drops_the_trailing_dot() {
        assert_eq!(name("Example.COM.").as_str(), "example.com");
        assert_eq!(name(".").as_str(), ".");
        assert_eq!(name("").as_str(), ".");
        assert!(name(".").is_root());
    }

    #[test]
    fn bytes_outside_the_plain_set_are_escaped_so_dots_only_separate_labels() {
        let mut builder = NameBuilder::default();
        assert!(builder.push_label(b"a.b"));
        assert!(builder.push_label(b"C\\ \xff"));
        let built = builder.finish();
        assert_eq!(built.as_str(), "a\\046b.c\\092\\032\\255");
        assert_eq!(built.label_count(), 2);
    }

    #[test]
    fn parse_rejects_bad_names() {
        assert!(matches!(
            Name::parse("a..b"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            Name::parse(&"x".repeat(64)),
            Err(NameError::LabelTooLong { .. })
        ));
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(matches!(Name::parse(&long), Err(NameError::TooLong { .. })));
        // 25 labels of 9 bytes: 250 wire bytes + root = 251, allowed.
        assert!(Name::parse(&vec!["abcdefghi"; 25].join(".")).is_ok());
    }

    #[test]
    fn suffixes_are_compared_label_wise() {
        let full = name("example.com.svc.cluster.local");
        assert!(full.ends_with(&name("cluster.local")));
        assert!(full.ends_with(&name("example.com.svc.cluster.local")));
        assert!(!full.ends_with(&name("uster.local")));
        assert!(full.ends_with(&Name::root()));
        assert_eq!(
            full.strip_suffix(&name("svc.cluster.local")),
            Some("example.com")
        );
        assert_eq!(full.strip_suffix(&name("uster.local")), None);
        assert_eq!(full.strip_suffix(&full.clone()), None);
        assert_eq!(
            full.labels().collect::<Vec<_>>(),
            ["example", "com", "svc", "cluster", "local"]
        );
        assert_eq!(Name::root().label_count(), 0);
    }
}
