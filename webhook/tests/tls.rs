//! The admission port speaks TLS 1.2 and 1.3 only: a TLS 1.1 client and a plaintext HTTP
//! client are refused there, and the plain-HTTP port (metrics, probes) does not take
//! AdmissionReviews. TLS 1.2 and 1.3 being served is in `admission.rs`.

mod support;

use std::time::Duration;

use hyper::StatusCode;
use support::{Profiles, Review, start_server, web_deployment};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Everything the server sends until it closes the connection (or 5 s pass: a server
/// that keeps a refused client waiting fails the assertions on what it sent).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    answer
}

/// A TLS 1.1 ClientHello (RFC 4346 7.4.1.2): record version and client_version 3.2, two
/// TLS 1.1 cipher suites (RSA with AES-CBC), no compression, no extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null only
    let mut handshake = vec![0x01]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02]; // handshake record, TLS 1.1
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls_1_1_client_gets_a_fatal_alert_and_no_server_hello() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let answer = exchange(server.running.https, &tls11_client_hello()).await;
    // One fatal (2) alert record (content type 21) — rustls says handshake_failure (40)
    // where RFC 5246 E.1 suggests protocol_version (70) — and never a handshake record
    // (22) carrying a ServerHello.
    assert!(answer.len() >= 7, "no alert: {answer:?}");
    assert_eq!(answer[0], 21, "not an alert record: {answer:?}");
    assert!(
        matches!(answer[5..7], [2, 40 | 70]),
        "not a fatal handshake_failure or protocol_version alert: {answer:?}"
    );
    assert!(
        !answer.contains(&22),
        "a handshake record came back: {answer:?}"
    );
}

#[tokio::test]
async fn plaintext_http_on_the_admission_port_gets_no_http_answer() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let review =
        serde_json::to_vec(&Review::create(web_deployment("web", 3)).build()).expect("review JSON");
    let mut request = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        review.len()
    )
    .into_bytes();
    request.extend_from_slice(&review);
    let answer = exchange(server.running.https, &request).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "the admission port answered plaintext HTTP: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("AdmissionReview"),
        "an admission answer went out in plaintext"
    );
}

#[tokio::test]
async fn the_plain_http_port_does_not_take_admission_reviews() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let review =
        serde_json::to_vec(&Review::create(web_deployment("web", 3)).build()).expect("review JSON");
    for path in ["/validate", "/"] {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            review.len()
        )
        .into_bytes();
        request.extend_from_slice(&review);
        let answer =
            String::from_utf8_lossy(&exchange(server.running.metrics, &request).await).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok());
        assert!(
            matches!(
                status,
                Some(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
            ),
            "POST {path} on the metrics port: {answer}"
        );
        assert!(!answer.contains("AdmissionReview"), "{answer}");
    }
}
