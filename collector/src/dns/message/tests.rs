//! Parser tests: real dig ↔ dnsmasq packets captured on lo (see `fixtures/capture.sh`),
//! every truncation and many corruptions of them, and crafted malformed names.

use super::*;

/// The name at `start` and the offset after it (the parser's `read_name`, built).
fn read_name(message: &[u8], start: usize) -> Result<(Name, usize), MessageError> {
    let mut builder = NameBuilder::default();
    let end = super::read_name(message, start, &mut builder)?;
    Ok((builder.to_name(), end))
}

/// A query and the response dnsmasq sent to it, as captured.
struct Exchange {
    what: &'static str,
    protocol: u32,
    query: &'static [u8],
    response: &'static [u8],
    name: &'static str,
    qtype: QType,
    rcode: Rcode,
    answers: u16,
}

macro_rules! fixture {
    ($file:literal) => {
        include_bytes!(concat!("fixtures/", $file, ".bin")).as_slice()
    };
}

/// Expected values come from the capture script's dig commands and dnsmasq's log.
fn exchanges() -> Vec<Exchange> {
    let udp = |what, query, response, name, qtype, rcode, answers| Exchange {
        what,
        protocol: PROTOCOL_UDP,
        query,
        response,
        name,
        qtype,
        rcode,
        answers,
    };
    vec![
        udp(
            "A example.com",
            fixture!("a-example-com.query"),
            fixture!("a-example-com.response"),
            "example.com",
            QType::A,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "AAAA example.com",
            fixture!("aaaa-example-com.query"),
            fixture!("aaaa-example-com.response"),
            "example.com",
            QType::AAAA,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "NXDOMAIN under --local=/cluster.local/",
            fixture!("a-nxdomain.query"),
            fixture!("a-nxdomain.response"),
            "nothere.cluster.local",
            QType::A,
            Rcode::NXDOMAIN,
            0,
        ),
        udp(
            "SRV on a name without SRV (NODATA)",
            fixture!("srv-nodata.query"),
            fixture!("srv-nodata.response"),
            "kubernetes.default.svc.cluster.local",
            QType::SRV,
            Rcode::NOERROR,
            0,
        ),
        udp(
            "SRV",
            fixture!("srv.query"),
            fixture!("srv.response"),
            "_https._tcp.kubernetes.default.svc.cluster.local",
            QType::SRV,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "PTR (dig -x)",
            fixture!("ptr.query"),
            fixture!("ptr.response"),
            "1.0.96.10.in-addr.arpa",
            QType::PTR,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "TXT",
            fixture!("txt.query"),
            fixture!("txt.response"),
            "example.com",
            QType::TXT,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "MX",
            fixture!("mx.query"),
            fixture!("mx.response"),
            "example.com",
            QType::MX,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "HTTPS (TYPE65), refused without upstream",
            fixture!("https.query"),
            fixture!("https-refused.response"),
            "example.com",
            QType::HTTPS,
            Rcode::REFUSED,
            0,
        ),
        udp(
            "outside the local zones, refused without upstream",
            fixture!("a-example-net.query"),
            fixture!("a-example-net-refused.response"),
            "example.net",
            QType::A,
            Rcode::REFUSED,
            0,
        ),
        udp(
            "upper case, no EDNS",
            fixture!("a-uppercase-noedns.query"),
            fixture!("a-uppercase-noedns.response"),
            "example.com",
            QType::A,
            Rcode::NOERROR,
            1,
        ),
        udp(
            "AAAA on an A-only name (NODATA)",
            fixture!("aaaa-nodata.query"),
            fixture!("aaaa-nodata.response"),
            "kubernetes.default.svc.cluster.local",
            QType::AAAA,
            Rcode::NOERROR,
            0,
        ),
        Exchange {
            what: "A over TCP (dig +tcp)",
            protocol: PROTOCOL_TCP,
            query: fixture!("tcp-a.query"),
            response: fixture!("tcp-a.response"),
            name: "kubernetes.default.svc.cluster.local",
            qtype: QType::A,
            rcode: Rcode::NOERROR,
            answers: 1,
        },
    ]
}

#[test]
fn real_queries_and_responses_parse() {
    for exchange in exchanges() {
        let what = exchange.what;
        let query = parse_transport(exchange.protocol, exchange.query).expect(what);
        let response = parse_transport(exchange.protocol, exchange.response).expect(what);

        assert!(!query.header.response, "{what}: query has QR clear");
        assert!(response.header.response, "{what}: response has QR set");
        assert_eq!(query.header.id, response.header.id, "{what}: same id");
        for message in [&query, &response] {
            assert_eq!(message.header.opcode, 0, "{what}");
            assert_eq!(message.header.qdcount, 1, "{what}");
            assert!(message.header.recursion_desired, "{what}: dig sets RD");
            let question = message.question.as_ref().expect(what);
            assert_eq!(question.name.as_str(), exchange.name, "{what}");
            assert_eq!(question.qtype, exchange.qtype, "{what}");
            assert_eq!(question.qclass, 1, "{what}: class IN");
        }
        assert_eq!(query.header.rcode, Rcode::NOERROR, "{what}");
        assert_eq!(query.header.ancount, 0, "{what}");
        assert_eq!(response.header.rcode, exchange.rcode, "{what}");
        assert_eq!(response.header.ancount, exchange.answers, "{what}");
    }
}

#[test]
fn edns_shows_as_an_additional_record_and_its_absence_does_not() {
    let with = parse(fixture!("a-example-com.query")).unwrap();
    let without = parse(fixture!("a-uppercase-noedns.query")).unwrap();
    assert_eq!(with.header.arcount, 1);
    assert_eq!(without.header.arcount, 0);
}

#[test]
fn tcp_payloads_carry_a_length_prefix_that_udp_ones_do_not() {
    let tcp = fixture!("tcp-a.query");
    let declared = usize::from(u16::from_be_bytes([tcp[0], tcp[1]]));
    assert_eq!(
        declared,
        tcp.len() - 2,
        "the capture holds the whole message"
    );
    assert_eq!(
        parse_transport(PROTOCOL_TCP, tcp).unwrap(),
        parse(&tcp[2..]).unwrap(),
    );
    // Read as UDP, the length prefix shifts every field.
    let misread = parse_transport(PROTOCOL_UDP, tcp);
    assert!(
        misread.map_or(true, |m| m.question.is_none_or(
            |q| q.name.as_str() != "kubernetes.default.svc.cluster.local"
        ))
    );
}

#[test]
fn tcp_framing_errors() {
    assert_eq!(
        parse_transport(PROTOCOL_TCP, &[0]),
        Err(MessageError::TcpShort { len: 1 })
    );
    assert_eq!(
        parse_transport(PROTOCOL_TCP, &[0, 11, 0, 0]),
        Err(MessageError::TcpLength { declared: 11 })
    );
    assert_eq!(
        parse_transport(1, fixture!("a-example-com.query")),
        Err(MessageError::Protocol { protocol: 1 })
    );
    // A declared length shorter than the capture bounds the message.
    let mut tcp = fixture!("tcp-a.query").to_vec();
    tcp[1] = 20;
    assert!(matches!(
        parse_transport(PROTOCOL_TCP, &tcp),
        Err(MessageError::Truncated { len: 20, .. })
    ));
}

/// Where the question ends in a UDP message whose question name is uncompressed.
fn question_end(message: &[u8]) -> usize {
    let mut at = HEADER_LEN;
    while message[at] != 0 {
        at += 1 + usize::from(message[at]);
    }
    at + 1 + 4
}

#[test]
fn every_truncation_of_a_real_message_is_an_error_until_the_question_is_whole() {
    for exchange in exchanges()
        .into_iter()
        .filter(|e| e.protocol == PROTOCOL_UDP)
    {
        for message in [exchange.query, exchange.response] {
            let end = question_end(message);
            for len in 0..message.len() {
                let result = parse(&message[..len]);
                match len {
                    0..HEADER_LEN => {
                        assert_eq!(result, Err(MessageError::ShortHeader { len }), "{len}")
                    }
                    _ if len < end => assert!(
                        matches!(result, Err(MessageError::Truncated { len: l, needed }) if l == len && needed >= len),
                        "{}: {len}: {result:?}",
                        exchange.what
                    ),
                    _ => assert_eq!(result, parse(message), "{len}: the rest is not read"),
                }
            }
        }
    }
}

#[test]
fn corrupting_any_early_byte_never_panics() {
    // Every value in every position of the header and question of each real message:
    // the parser returns (Ok or a typed error) and a name it returns keeps the limits.
    for exchange in exchanges() {
        for message in [exchange.query, exchange.response] {
            let mut copy = message.to_vec();
            for at in 0..copy.len().min(80) {
                let original = copy[at];
                for value in 0..=u8::MAX {
                    copy[at] = value;
                    if let Ok(Message {
                        question: Some(question),
                        ..
                    }) = parse_transport(exchange.protocol, &copy)
                    {
                        assert!(question.name.label_count() <= 127);
                        assert!(question.name.labels().all(|l| !l.is_empty()));
                    }
                }
                copy[at] = original;
            }
        }
    }
}

/// A 12-byte header with one question and the given flags.
fn header(flags: u16) -> Vec<u8> {
    let mut bytes = vec![0x12, 0x34];
    bytes.extend(flags.to_be_bytes());
    bytes.extend([0, 1, 0, 0, 0, 0, 0, 0]);
    bytes
}

/// A query whose question name is `name_wire` (raw bytes, terminator included).
fn query_with_name(name_wire: &[u8]) -> Vec<u8> {
    let mut bytes = header(0x0100);
    bytes.extend(name_wire);
    bytes.extend([0, 1, 0, 1]);
    bytes
}

#[test]
fn header_flags_are_decoded() {
    let mut bytes = header(0xffff);
    bytes[4..6].copy_from_slice(&0u16.to_be_bytes());
    bytes[6..12].copy_from_slice(&[0, 2, 0, 3, 0, 4]);
    let message = parse(&bytes).unwrap();
    let h = message.header;
    assert_eq!(h.id, 0x1234);
    assert!(h.response && h.authoritative && h.truncated);
    assert!(h.recursion_desired && h.recursion_available);
    assert_eq!(h.opcode, 15);
    assert_eq!(h.rcode, Rcode(15));
    assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (0, 2, 3, 4));
    assert_eq!(message.question, None, "QDCOUNT 0: no question");

    let h = parse(&header(0x2803)).unwrap_err();
    assert!(matches!(
        h,
        MessageError::Truncated {
            len: 12,
            needed: 12
        }
    ));
    let h = parse(&query_with_name(&[0])).unwrap().header;
    assert!(!h.response && !h.authoritative && !h.truncated && !h.recursion_available);
    assert!(h.recursion_desired);
    assert_eq!(h.rcode, Rcode::NOERROR);
}

#[test]
fn the_root_name_and_escaped_bytes() {
    let root = parse(&query_with_name(&[0])).unwrap().question.unwrap();
    assert!(root.name.is_root());
    let odd = parse(&query_with_name(b"\x03a.B\x01\x00\x00"))
        .unwrap()
        .question
        .unwrap();
    assert_eq!(odd.name.as_str(), "a\\046b.\\000");
}

#[test]
fn reserved_label_types_are_rejected() {
    for byte in [0x40, 0x41, 0x80, 0xbf] {
        assert_eq!(
            parse(&query_with_name(&[byte, b'a', 0])),
            Err(MessageError::LabelType { offset: 12, byte })
        );
    }
}

#[test]
fn names_longer_than_255_bytes_are_rejected() {
    // Four labels of 63 bytes: 4 × 64 + 1 = 257 wire bytes.
    let mut wire = Vec::new();
    for _ in 0..4 {
        wire.push(63);
        wire.extend([b'x'; 63]);
    }
    wire.push(0);
    assert_eq!(
        parse(&query_with_name(&wire)),
        Err(MessageError::NameTooLong { offset: 12 })
    );
    // Three of 63 and one of 61: 255 exactly, allowed.
    wire.truncate(3 * 64);
    wire.push(61);
    wire.extend([b'y'; 61]);
    wire.push(0);
    assert_eq!(
        parse(&query_with_name(&wire))
            .unwrap()
            .question
            .unwrap()
            .name
            .label_count(),
        4
    );
}

#[test]
fn pointers_in_the_first_question_cannot_point_anywhere_valid() {
    // To itself: the classic loop.
    assert_eq!(
        parse(&query_with_name(&[0xc0, 12])),
        Err(MessageError::PointerNotBackwards {
            offset: 12,
            target: 12
        })
    );
    // Forward, to a later byte of the message.
    assert_eq!(
        parse(&query_with_name(&[1, b'a', 0xc0, 20, 0])),
        Err(MessageError::PointerNotBackwards {
            offset: 14,
            target: 20
        })
    );
    // Back into its own labels: would loop too.
    assert_eq!(
        parse(&query_with_name(&[1, b'a', 1, b'b', 0xc0, 14])),
        Err(MessageError::PointerNotBackwards {
            offset: 16,
            target: 14
        })
    );
    // Into the header.
    assert_eq!(
        parse(&query_with_name(&[0xc0, 2])),
        Err(MessageError::PointerIntoHeader {
            offset: 12,
            target: 2
        })
    );
    // A pointer whose second byte was cut off.
    assert_eq!(
        parse(&header(0x0100).into_iter().chain([0xc0]).collect::<Vec<_>>()),
        Err(MessageError::Truncated {
            len: 13,
            needed: 13
        })
    );
}

#[test]
fn a_real_compressed_answer_name_is_followed() {
    // dnsmasq's answer repeats the question name as a pointer to byte 12 (0xc00c).
    let response = fixture!("a-example-com.response");
    let answer = question_end(response);
    assert_eq!(&response[answer..answer + 2], &[0xc0, 12]);
    let (name, end) = read_name(response, answer).unwrap();
    assert_eq!(name.as_str(), "example.com");
    assert_eq!(
        end,
        answer + 2,
        "the name ends after the pointer, not where it led"
    );
}

#[test]
fn pointer_chains_are_bounded() {
    // A root name at 12, then pointers each to the one before: 13→12, 15→13, ...
    let chain = |links: usize| {
        let mut bytes = header(0x8180);
        bytes.push(0);
        let mut previous = 12u16;
        for _ in 0..links {
            let here = bytes.len() as u16;
            bytes.extend((0xc000 | previous).to_be_bytes());
            previous = here;
        }
        (bytes, usize::from(previous))
    };
    let (bytes, last) = chain(MAX_POINTERS);
    assert_eq!(read_name(&bytes, last), Ok((Name::root(), last + 2)));
    let (bytes, last) = chain(MAX_POINTERS + 1);
    assert_eq!(
        read_name(&bytes, last),
        Err(MessageError::TooManyPointers { offset: last })
    );
}

#[test]
fn a_label_running_past_the_end_is_truncation() {
    assert_eq!(
        parse(
            &header(0x0100)
                .into_iter()
                .chain([5, b'a', b'b'])
                .collect::<Vec<_>>()
        ),
        Err(MessageError::Truncated {
            len: 15,
            needed: 17
        })
    );
    // Name whole, qtype/qclass cut.
    assert_eq!(
        parse(
            &header(0x0100)
                .into_iter()
                .chain([0, 0, 1])
                .collect::<Vec<_>>()
        ),
        Err(MessageError::Truncated {
            len: 15,
            needed: 16
        })
    );
}
