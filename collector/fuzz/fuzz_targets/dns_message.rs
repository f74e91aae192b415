//! DNS message decode as the kernel hands messages over: a ring-buffer record of each size
//! class, the message cut to the class, read as UDP and as TCP (length-prefixed). Input:
//! the message bytes (seeds: `collector/src/dns/message/fixtures/*.bin`).
//!
//! Properties beyond "no panic":
//! - the decoded payload is exactly the captured bytes: never past `captured` or the class;
//! - bytes past the capture in the record never change the outcome;
//! - a message that parsed parses the same with bytes appended (the parser read only
//!   what it needed), and so does any error that is not about a short message;
//! - a question's name fits 255 wire bytes (escaped text ≤ 4 × 255) and is printable ASCII.
#![no_main]

use collector::{
    dns::{
        message::{self, MessageError, PROTOCOL_TCP, PROTOCOL_UDP},
        name::MAX_WIRE_LEN,
    },
    events::Event,
};
use collector_ebpf::event;
use libfuzzer_sys::fuzz_target;

const PAYLOAD: usize = std::mem::offset_of!(event::Dns, payload);

fuzz_target!(|message: &[u8]| {
    for class in event::DNS_CLASSES {
        for protocol in [PROTOCOL_UDP, PROTOCOL_TCP] {
            check_record(message, class, protocol);
        }
    }
});

/// The record the kernel writes for `message` in a `class`-byte slot, the slot's bytes
/// past the capture set to `fill`.
fn record(message: &[u8], class: usize, protocol: u32, fill: u8) -> Vec<u8> {
    let captured = message.len().min(class);
    let mut bytes = vec![fill; PAYLOAD + class];
    let fixed = [
        (std::mem::offset_of!(event::Header, kind), event::DNS),
        (std::mem::offset_of!(event::Dns, protocol), protocol),
        (
            std::mem::offset_of!(event::Dns, payload_len),
            u32::try_from(message.len()).unwrap_or(u32::MAX),
        ),
        (std::mem::offset_of!(event::Dns, captured), captured as u32),
    ];
    bytes[..PAYLOAD].fill(0);
    for (at, value) in fixed {
        bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }
    bytes[PAYLOAD..PAYLOAD + captured].copy_from_slice(&message[..captured]);
    bytes
}

fn check_record(message: &[u8], class: usize, protocol: u32) {
    let captured = message.len().min(class);
    let mut outcomes = Vec::new();
    for fill in [0x00, 0xc0, 0x3f] {
        let bytes = record(message, class, protocol, fill);
        let Ok(Event::Dns(dns)) = Event::decode(&bytes) else {
            panic!("a well-formed DNS record of class {class} did not decode");
        };
        assert_eq!(
            dns.payload,
            &message[..captured],
            "payload is not the capture"
        );
        outcomes.push(message::parse_transport(dns.protocol, dns.payload));
    }
    assert!(
        outcomes.windows(2).all(|w| w[0] == w[1]),
        "bytes past the capture changed the outcome: {outcomes:?}"
    );
    let outcome = &outcomes[0];
    let mut longer = message[..captured].to_vec();
    longer.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    let appended = message::parse_transport(protocol, &longer);
    match outcome {
        Err(
            MessageError::Truncated { .. }
            | MessageError::ShortHeader { .. }
            | MessageError::TcpShort { .. },
        ) => {}
        _ => assert_eq!(&appended, outcome, "appended bytes changed the outcome"),
    }
    if let Ok(parsed) = outcome
        && let Some(question) = &parsed.question
    {
        let text = question.name.as_str();
        assert!(
            text.bytes().all(|b| b.is_ascii_graphic()),
            "name is not printable ASCII: {text:?}"
        );
        // Each wire byte prints as at most 4 (`\DDD`); each label takes 2 wire bytes at least.
        assert!(
            text.len() <= 4 * MAX_WIRE_LEN && question.name.label_count() <= MAX_WIRE_LEN / 2,
            "name {text:?} is longer than any wire name"
        );
    }
}
