//! Reading an AdmissionReview body with a size limit that answers 413 the same way over
//! HTTP/1.1 and HTTP/2.
//!
//! A server that answers before reading the whole request must, in HTTP/2, reset the stream
//! (RST_STREAM NO_ERROR). Clients that are still sending take that as a stream error (curl:
//! "Stream error in the HTTP/2 framing layer") instead of reading the 413. So the rest of an
//! oversized body is read and thrown away after the answer, up to a bound.

use std::time::Duration;

use axum::body::{Body, Bytes};
use bytes::BytesMut;
use http_body_util::BodyExt;

/// How much of an oversized body is read and discarded after the 413, and for how long;
/// beyond that the stream is reset (a client sending that much is not an API server).
const DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Over `limit` bytes; the rest is being drained.
    TooLarge,
    /// The client went away or the stream failed.
    Read(axum::Error),
}

/// Reads `body` up to `limit` bytes. Over HTTP/2 (`drain`), an oversized body is drained in
/// the background so that the 413 reaches the client; over HTTP/1.1 hyper reads what it can
/// of the rest and otherwise closes the connection after the answer.
pub async fn read_limited(mut body: Body, limit: usize, drain: bool) -> Result<Bytes, BodyError> {
    let too_large = |body: Body, already: usize| {
        if drain {
            drain_in_background(body, already);
        }
        Err(BodyError::TooLarge)
    };
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return too_large(body, buf.len() + data.len());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn drain_in_background(mut body: Body, already: usize) {
    tokio::spawn(async move {
        let mut seen = already;
        let reading = async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, reading).await;
    });
}
