//! DNS query types and response codes, named the way Prometheus users expect them in
//! labels (`A`, `AAAA`, `NXDOMAIN`, ...; `TYPE65` and `RCODE12` for the ones without a
//! mnemonic, as RFC 3597 writes unknown types).

use std::{borrow::Cow, fmt};

/// A query type (QTYPE), e.g. 1 = `A`, 28 = `AAAA`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QType(pub u16);

impl QType {
    pub const A: Self = Self(1);
    pub const NS: Self = Self(2);
    pub const CNAME: Self = Self(5);
    pub const SOA: Self = Self(6);
    pub const PTR: Self = Self(12);
    pub const MX: Self = Self(15);
    pub const TXT: Self = Self(16);
    pub const AAAA: Self = Self(28);
    pub const SRV: Self = Self(33);
    pub const NAPTR: Self = Self(35);
    pub const OPT: Self = Self(41);
    pub const DS: Self = Self(43);
    pub const RRSIG: Self = Self(46);
    pub const DNSKEY: Self = Self(48);
    pub const SVCB: Self = Self(64);
    pub const HTTPS: Self = Self(65);
    pub const AXFR: Self = Self(252);
    pub const ANY: Self = Self(255);
    pub const CAA: Self = Self(257);

    /// The mnemonic, if this type has one we name.
    pub const fn mnemonic(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "A",
            2 => "NS",
            5 => "CNAME",
            6 => "SOA",
            12 => "PTR",
            15 => "MX",
            16 => "TXT",
            28 => "AAAA",
            33 => "SRV",
            35 => "NAPTR",
            41 => "OPT",
            43 => "DS",
            46 => "RRSIG",
            48 => "DNSKEY",
            64 => "SVCB",
            65 => "HTTPS",
            251 => "IXFR",
            252 => "AXFR",
            255 => "ANY",
            257 => "CAA",
            _ => return None,
        })
    }

    /// The label value: the mnemonic, or `TYPE<n>` (RFC 3597) for the rest.
    pub fn name(self) -> Cow<'static, str> {
        match self.mnemonic() {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("TYPE{}", self.0)),
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(name) => f.write_str(name),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

/// A response code from the header's 4-bit RCODE field (extended RCODEs in an OPT
/// record are not read: they only matter for DNSSEC/EDNS errors, not for load).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rcode(pub u8);

impl Rcode {
    pub const NOERROR: Self = Self(0);
    pub const FORMERR: Self = Self(1);
    pub const SERVFAIL: Self = Self(2);
    pub const NXDOMAIN: Self = Self(3);
    pub const NOTIMP: Self = Self(4);
    pub const REFUSED: Self = Self(5);

    /// The mnemonic (RFC 1035, 2136), if this code has one.
    pub const fn mnemonic(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            _ => return None,
        })
    }

    /// The label value: the mnemonic, or `RCODE<n>`.
    pub fn name(self) -> Cow<'static, str> {
        match self.mnemonic() {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("RCODE{}", self.0)),
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(name) => f.write_str(name),
            None => write!(f, "RCODE{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qtypes_have_prometheus_friendly_names() {
        assert_eq!(QType::A.name(), "A");
        assert_eq!(QType::AAAA.name(), "AAAA");
        assert_eq!(QType::SRV.name(), "SRV");
        assert_eq!(QType::PTR.name(), "PTR");
        assert_eq!(QType::TXT.name(), "TXT");
        assert_eq!(QType::HTTPS.name(), "HTTPS");
        assert_eq!(QType(99).name(), "TYPE99");
        assert_eq!(QType(65_535).to_string(), "TYPE65535");
        assert_eq!(QType::MX.to_string(), "MX");
    }

    #[test]
    fn rcodes_have_prometheus_friendly_names() {
        assert_eq!(Rcode::NOERROR.name(), "NOERROR");
        assert_eq!(Rcode::NXDOMAIN.name(), "NXDOMAIN");
        assert_eq!(Rcode::SERVFAIL.name(), "SERVFAIL");
        assert_eq!(Rcode::REFUSED.name(), "REFUSED");
        assert_eq!(Rcode(15).name(), "RCODE15");
        assert_eq!(Rcode::FORMERR.to_string(), "FORMERR");
    }
}
