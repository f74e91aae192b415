//! A minimal HTTP/1.1 GET for polling collectors and Prometheus (plain HTTP inside the
//! cluster network). Bounded in time and size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;

use crate::error::Error;

/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub async fn get(url: &str, timeout: Duration) -> Result<Bytes, Error> {
    tokio::time::timeout(timeout, get_inner(url))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Fetch {
                url: url.to_owned(),
                message: format!("timed out after {}s", timeout.as_secs_f64()),
            })
        })
}

async fn get_inner(url: &str) -> Result<Bytes, Error> {
    let fail = |message: String| Error::Fetch {
        url: url.to_owned(),
        message,
    };
    let uri: Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail("only http:// URLs are supported".to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| fail("URL has no host".to_owned()))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| fail(format!("connect: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(format!("handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP client connection ended");
        }
    });
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(host)
        .to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| fail(format!("request: {e}")))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| fail(format!("body: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(fail(format!("HTTP {status}: {text}")));
    }
    Ok(body)
}

/// Percent-encodes a query-string value.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            encode_query_value("headroom:cluster_dns_queries:rate5m"),
            "headroom%3Acluster_dns_queries%3Arate5m"
        );
        assert_eq!(encode_query_value("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }

    #[tokio::test]
    async fn rejects_https_and_unreachable_hosts() {
        let err = get("https://127.0.0.1:1/x", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("only http://"), "{err}");
        let err = get("http://127.0.0.1:1/x", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("GET http://127.0.0.1:1/x: connect"),
            "{err}"
        );
    }
}
