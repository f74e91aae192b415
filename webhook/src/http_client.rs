//! The GET for polling collectors and Prometheus (plain HTTP inside the cluster network):
//! hyper-util's client, bounded in time and size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

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
    // One client per fetch: a refresh every 15 s needs no pool, and a pooled connection
    // would outlive the runtime of a test that made it.
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::get(uri)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("request: {e}")))?;
    let response = client.request(request).await.map_err(|e| {
        // The connector's error says what failed to connect (refused, no route, …).
        let cause = std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
        if e.is_connect() {
            fail(format!("connect{cause}"))
        } else {
            fail(format!("request: {e}{cause}"))
        }
    })?;
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

    /// `http://[fd00::5]:9090`-style URLs: the brackets are the URL's, not the address's.
    #[tokio::test]
    async fn fetches_from_an_ipv6_address() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get(axum::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let body = get(
            &format!("http://[::1]:{port}/api/v1/query"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(body, format!("[::1]:{port}").as_bytes(), "the Host header");
    }

    #[tokio::test]
    async fn a_failing_status_names_itself() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/err",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "rule evaluation failed",
                )
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let err = get(&format!("http://{addr}/err"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "GET http://{addr}/err: HTTP 500 Internal Server Error: rule evaluation failed"
            )
        );
    }
}
