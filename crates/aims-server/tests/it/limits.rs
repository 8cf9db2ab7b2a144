//! Connection-level limits: huge headers are refused, slow headers time out, and neither
//! reaches a handler.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::kit::{Backend, TestServer};

#[tokio::test]
async fn a_huge_header_is_refused_before_any_handler() {
    let server = TestServer::start(Backend::Sqlite).await;
    let before = server.records().await.len();
    let resp = server
        .http
        .get(format!("{}/v1/agents", server.base))
        .header("x-padding", "a".repeat(1024 * 1024))
        .send()
        .await;
    // hyper answers 431 or closes the connection; either way nothing was processed.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    assert_eq!(server.records().await.len(), before);
    assert_eq!(
        server
            .call(reqwest::Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let server = TestServer::start(Backend::Sqlite).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // A client that sends nothing, and one that opens HTTP/2 (preface and settings) and then
    // no stream — nor answers the server's pings — are closed too (the second by the
    // keep-alive ping's timeout, within 30 s), checked while the rest runs.
    let idle = |opening: &'static [u8]| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(opening).await.unwrap();
            let mut buf = Vec::new();
            tokio::time::timeout(Duration::from_secs(45), stream.read_to_end(&mut buf))
                .await
                .is_ok()
        })
    };
    let silent = idle(b"");
    let idle_h2 = idle(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server must close the connection on its own, well before our 30 s guard.
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server kept a connection with unfinished headers open"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "cut off too early: {:?}",
        started.elapsed()
    );
    assert!(silent.await.unwrap(), "a silent connection was kept open");
    assert!(
        idle_h2.await.unwrap(),
        "an idle HTTP/2 connection was kept open"
    );
}
