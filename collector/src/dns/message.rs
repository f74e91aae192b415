//! The DNS message parser: the header and the first question (RFC 1035 4.1), from the
//! bytes the kernel captured (the first [`collector_ebpf::event::DNS_CAPTURE`] of each
//! message). It never panics and allocates only the name; anything malformed or cut
//! short is a [`MessageError`].

use super::{
    code::{QType, Rcode},
    name::{Name, NameBuilder},
};

pub const HEADER_LEN: usize = 12;
/// Compression pointers followed in one name at most. Each must also point strictly
/// before the previous one, which alone rules out loops; this caps the work.
pub const MAX_POINTERS: usize = 32;

/// IP protocol numbers as the kernel reports them in `event::Dns::protocol`.
pub const PROTOCOL_TCP: u32 = 6;
pub const PROTOCOL_UDP: u32 = 17;

/// The fixed 12-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR: false for a query, true for a response.
    pub response: bool,
    /// 0 QUERY, 1 IQUERY, 2 STATUS, 4 NOTIFY, 5 UPDATE.
    pub opcode: u8,
    pub authoritative: bool,
    /// TC: the response did not fit (a UDP client retries over TCP).
    pub truncated: bool,
    pub recursion_desired: bool,
    pub recursion_available: bool,
    pub rcode: Rcode,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

/// A question: what is asked about which name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: QType,
    /// 1 IN for all real traffic; kept for completeness.
    pub qclass: u16,
}

/// What the tracker needs from a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    /// The first question; `None` when QDCOUNT is 0 (some error responses).
    pub question: Option<Question>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message is {len} bytes, shorter than the {HEADER_LEN}-byte DNS header")]
    ShortHeader { len: usize },
    #[error("message ends at byte {len}, inside the question (byte {needed} is needed)")]
    Truncated { len: usize, needed: usize },
    #[error("label length byte {byte:#04x} at byte {offset} uses a reserved label type")]
    LabelType { offset: usize, byte: u8 },
    #[error(
        "compression pointer at byte {offset} points to byte {target}, which is not before \
         the name it continues"
    )]
    PointerNotBackwards { offset: usize, target: usize },
    #[error("compression pointer at byte {offset} points into the header (byte {target})")]
    PointerIntoHeader { offset: usize, target: usize },
    #[error("name at byte {offset} follows more than {MAX_POINTERS} compression pointers")]
    TooManyPointers { offset: usize },
    #[error("name at byte {offset} is longer than 255 bytes on the wire")]
    NameTooLong { offset: usize },
    #[error("TCP payload of {len} bytes is too short for the 2-byte DNS length prefix")]
    TcpShort { len: usize },
    #[error("TCP length prefix says {declared} bytes, less than a DNS header")]
    TcpLength { declared: usize },
    #[error("transport protocol {protocol} is neither TCP (6) nor UDP (17)")]
    Protocol { protocol: u32 },
}

/// Parses a message as carried by `protocol`: UDP payloads are the message, TCP payloads
/// start with its 2-byte length (RFC 1035 4.2.2). A TCP segment is assumed to start at a
/// message boundary, which holds for the one-message-per-write clients and servers use.
pub fn parse_transport(protocol: u32, payload: &[u8]) -> Result<Message, MessageError> {
    let mut name = NameBuilder::default();
    let (header, fixed) = parse_transport_into(protocol, payload, &mut name)?;
    Ok(message_of(header, fixed, &name))
}

/// Parses a message's header and first question.
pub fn parse(message: &[u8]) -> Result<Message, MessageError> {
    let mut name = NameBuilder::default();
    let (header, fixed) = parse_into(message, &mut name)?;
    Ok(message_of(header, fixed, &name))
}

fn message_of(header: Header, fixed: Option<(QType, u16)>, name: &NameBuilder) -> Message {
    Message {
        header,
        question: fixed.map(|(qtype, qclass)| Question {
            name: name.to_name(),
            qtype,
            qclass,
        }),
    }
}

/// [`parse_transport`] without building the question's name: it is left in `name`
/// (cleared first), and the question's type and class are returned. The tracker reads
/// every message this way, so that a response (whose name only finds its query) costs
/// no allocation.
pub(crate) fn parse_transport_into(
    protocol: u32,
    payload: &[u8],
    name: &mut NameBuilder,
) -> Result<(Header, Option<(QType, u16)>), MessageError> {
    match protocol {
        PROTOCOL_UDP => parse_into(payload, name),
        PROTOCOL_TCP => {
            let Some((prefix, message)) = payload.split_first_chunk::<2>() else {
                return Err(MessageError::TcpShort { len: payload.len() });
            };
            let declared = usize::from(u16::from_be_bytes(*prefix));
            if declared < HEADER_LEN {
                return Err(MessageError::TcpLength { declared });
            }
            // The capture may hold less than the declared length, or (coalesced writes)
            // more; the header and question come first either way.
            parse_into(&message[..message.len().min(declared)], name)
        }
        protocol => Err(MessageError::Protocol { protocol }),
    }
}

fn parse_into(
    message: &[u8],
    name: &mut NameBuilder,
) -> Result<(Header, Option<(QType, u16)>), MessageError> {
    name.clear();
    let Some(head) = message.first_chunk::<HEADER_LEN>() else {
        return Err(MessageError::ShortHeader { len: message.len() });
    };
    let word = |at: usize| u16::from_be_bytes([head[at], head[at + 1]]);
    let flags = word(2);
    let header = Header {
        id: word(0),
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        authoritative: flags & 0x0400 != 0,
        truncated: flags & 0x0200 != 0,
        recursion_desired: flags & 0x0100 != 0,
        recursion_available: flags & 0x0080 != 0,
        rcode: Rcode((flags & 0xf) as u8),
        qdcount: word(4),
        ancount: word(6),
        nscount: word(8),
        arcount: word(10),
    };
    if header.qdcount == 0 {
        return Ok((header, None));
    }
    let after_name = read_name(message, HEADER_LEN, name)?;
    let Some(fixed) = message.get(after_name..after_name + 4) else {
        return Err(MessageError::Truncated {
            len: message.len(),
            needed: after_name + 3,
        });
    };
    let qtype = QType(u16::from_be_bytes([fixed[0], fixed[1]]));
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    Ok((header, Some((qtype, qclass))))
}

/// Reads the name starting at `start` into `builder`; returns the offset just after it
/// in the original sequence (after the first pointer, if any).
fn read_name(
    message: &[u8],
    start: usize,
    builder: &mut NameBuilder,
) -> Result<usize, MessageError> {
    let byte_at = |at: usize| {
        message.get(at).copied().ok_or(MessageError::Truncated {
            len: message.len(),
            needed: at,
        })
    };
    let mut at = start;
    // Every pointer must land before `floor`, the start of the run of labels it
    // continues; `floor` only decreases, so no pointer can lead back into a loop.
    let mut floor = start;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let length = byte_at(at)?;
        match length & 0xc0 {
            0x00 => {
                if length == 0 {
                    return Ok(end.unwrap_or(at + 1));
                }
                // Two clear top bits: a label of at most 63 bytes.
                let length = usize::from(length);
                let Some(label) = message.get(at + 1..at + 1 + length) else {
                    return Err(MessageError::Truncated {
                        len: message.len(),
                        needed: at + length,
                    });
                };
                if !builder.push_label(label) {
                    return Err(MessageError::NameTooLong { offset: start });
                }
                at += 1 + length;
            }
            0xc0 => {
                let target = usize::from(u16::from_be_bytes([length, byte_at(at + 1)?]) & 0x3fff);
                if target < HEADER_LEN {
                    return Err(MessageError::PointerIntoHeader { offset: at, target });
                }
                if target >= floor {
                    return Err(MessageError::PointerNotBackwards { offset: at, target });
                }
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(MessageError::TooManyPointers { offset: start });
                }
                end.get_or_insert(at + 2);
                floor = target;
                at = target;
            }
            _ => {
                return Err(MessageError::LabelType {
                    offset: at,
                    byte: length,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
