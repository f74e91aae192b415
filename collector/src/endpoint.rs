//! Endpoints the collector measures, as given on the command line.
use std::net::{IpAddr, SocketAddr};

use collector_ebpf::EndpointKey;

use crate::error::{Error, Result};

/// Parses `ADDRESS:PORT` (IPv6 in brackets) into the kernel's endpoint key.
pub fn parse(value: &str) -> Result<EndpointKey> {
    let addr: SocketAddr =
        value
            .parse()
            .map_err(|e: std::net::AddrParseError| Error::Endpoint {
                value: value.into(),
                reason: e.to_string(),
            })?;
    if addr.port() == 0 {
        return Err(Error::Endpoint {
            value: value.into(),
            reason: "port 0 is not a real endpoint".into(),
        });
    }
    Ok(key_of(addr))
}

/// The kernel's key for a socket address (IPv4 as IPv4-mapped IPv6).
pub fn key_of(addr: SocketAddr) -> EndpointKey {
    match addr.ip() {
        IpAddr::V4(ip) => EndpointKey::v4(ip.octets(), addr.port()),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => EndpointKey::v4(v4.octets(), addr.port()),
            None => EndpointKey::v6(ip.octets(), addr.port()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_mapped() {
        let key = parse("10.96.0.1:443").expect("valid");
        assert_eq!(key, EndpointKey::v4([10, 96, 0, 1], 443));
        assert_eq!(&key.addr[10..], &[0xff, 0xff, 10, 96, 0, 1]);
    }

    #[test]
    fn ipv6_in_brackets() {
        let key = parse("[fd00::1]:6443").expect("valid");
        let mut addr = [0u8; 16];
        addr[0] = 0xfd;
        addr[15] = 1;
        assert_eq!(key, EndpointKey::v6(addr, 6443));
    }

    #[test]
    fn mapped_ipv6_equals_ipv4() {
        assert_eq!(
            parse("[::ffff:127.0.0.1]:53").ok(),
            parse("127.0.0.1:53").ok()
        );
    }

    #[test]
    fn rejects_missing_port_and_port_zero() {
        for bad in ["10.0.0.1", "10.0.0.1:0", "apiserver:443", ""] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains("ADDRESS:PORT"), "{bad}: {err}");
        }
    }
}
