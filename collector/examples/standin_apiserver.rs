//! The loopback stand-in API server the kernel tests use (TLS, HTTP/1.1 and HTTP/2,
//! enough of the Kubernetes API for kubectl), as a program for `cargo xtask demo`.
//!
//! Prints one line `addr=<ADDR> kubeconfig=<PATH> ca=<PATH>` when it is ready, then
//! serves until its standard input closes, and prints what it really served:
//! `served requests=<N> connections=<N> read_bytes=<N> written_bytes=<N>`.
#![expect(clippy::print_stdout, reason = "the demo reads these lines")]

#[path = "../tests/support/apiserver.rs"]
mod apiserver;

use std::io::Read as _;

fn main() {
    let server = apiserver::ApiServer::start(apiserver::ServerConfig {
        pods: 40,
        ..apiserver::ServerConfig::default()
    });
    println!(
        "addr={} kubeconfig={} ca={}",
        server.addr(),
        server.kubeconfig_path().display(),
        server.ca_path().display()
    );
    // Serve until the demo closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    println!(
        "served requests={} connections={} read_bytes={} written_bytes={}",
        server.requests_total(),
        server.connections_accepted(),
        server.bytes_read(),
        server.bytes_written()
    );
}
