use super::*;

fn lanes(version: HttpVersion, max_in_flight: usize) -> Transport {
    let options = HttpOptions {
        timeout: Duration::from_secs(1),
        version,
        max_in_flight,
        streams_per_connection: 100,
        max_response_bytes: 64 * 1024,
    };
    let url = reqwest::Url::parse("http://127.0.0.1:9/v1/email/send").unwrap();
    Transport::new(Provider::MigoSmtp, options, url).unwrap()
}

#[test]
fn http2_gets_a_lane_per_share_of_streams() {
    assert_eq!(lanes(HttpVersion::Http1, 5000).lanes().len(), 0);
    // Plain http has no ALPN: `auto` speaks HTTP/1.1 there.
    assert_eq!(lanes(HttpVersion::Auto, 5000).lanes().len(), 0);
    assert_eq!(lanes(HttpVersion::Http2, 100).lanes().len(), 1);
    assert_eq!(lanes(HttpVersion::Http2, 101).lanes().len(), 2);
    assert_eq!(lanes(HttpVersion::Http2, 5000).lanes().len(), 50);
}

#[test]
fn a_lane_fills_before_the_next_is_used() {
    let c = lanes(HttpVersion::Http2, 300);
    let load = |c: &Transport| -> Vec<usize> {
        c.lanes()
            .iter()
            .map(|l| l.in_flight.load(Ordering::Relaxed))
            .collect()
    };
    let take = || take_lane(c.lanes(), 100);
    let mut held: Vec<_> = (0..150).map(|_| take()).collect();
    assert_eq!(load(&c), vec![100, 50, 0]);
    // Calls ending on the first lane free room there first.
    held.drain(..10);
    assert_eq!(load(&c), vec![90, 50, 0]);
    held.push(take());
    assert_eq!(load(&c), vec![91, 50, 0]);
    // All full: the least busy lane takes the extra call.
    held.extend((0..159).map(|_| take()));
    assert_eq!(load(&c), vec![100, 100, 100]);
    held.push(take());
    assert_eq!(load(&c).iter().sum::<usize>(), 301);
    held.clear();
    assert_eq!(load(&c), vec![0, 0, 0]);
}

/// What reaches the wire from each engine: the request line in origin
/// form, `Host` (proxies and CDNs refuse a request without it), the key,
/// the length, the trace context.
#[tokio::test]
async fn an_http1_request_carries_host_length_key_and_trace_context() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"{\"x\":1}") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        String::from_utf8(got).unwrap()
    });
    let options = HttpOptions {
        timeout: Duration::from_secs(5),
        version: HttpVersion::Http1,
        max_in_flight: 4,
        streams_per_connection: 100,
        max_response_bytes: 64 * 1024,
    };
    let url = reqwest::Url::parse(&format!("http://{addr}/v1/email/send")).unwrap();
    let transport = Transport::new(Provider::MigoSmtp, options, url).unwrap();
    let call = Call {
        authorization: HeaderValue::from_static("Bearer mk_test"),
        idempotency_key: Some(HeaderValue::from_static("job-7")),
        body: Bytes::from_static(b"{\"x\":1}"),
        traceparent: Some(HeaderValue::from_static(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )),
        tracestate: None,
    };
    let reply = transport.call(&call).await.unwrap();
    assert_eq!(reply.status, 200);
    let request = server.await.unwrap().to_ascii_lowercase();
    assert!(
        request.starts_with("post /v1/email/send http/1.1\r\n"),
        "{request}"
    );
    for line in [
        format!("host: {addr}\r\n"),
        "authorization: bearer mk_test\r\n".into(),
        "content-length: 7\r\n".into(),
        "idempotency-key: job-7\r\n".into(),
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n".into(),
    ] {
        assert!(request.contains(&line), "{line:?} missing in:\n{request}");
    }
}

/// Every call in flight holds this future: opening a connection (TCP, TLS,
/// handshake, kilobytes of state) is boxed so it is not inlined in each.
/// 10,000 calls in flight make every 100 bytes here a megabyte.
#[test]
fn a_call_in_flight_stays_small() {
    let t = lanes(HttpVersion::Http2, 100);
    let call = Call {
        authorization: HeaderValue::from_static("Bearer x"),
        idempotency_key: None,
        body: Bytes::new(),
        traceparent: None,
        tracestate: None,
    };
    let size = std::mem::size_of_val(&t.call(&call));
    assert!(size <= 1536, "Transport::call future is {size} bytes");
}

/// A cold pool opens connections a few at a time, not one per call in the
/// same instant: a provider that accepts but never finishes the TLS
/// handshake sees no more than `OPENING_AT_ONCE` connections from 200
/// calls.
#[tokio::test]
async fn a_cold_pool_opens_connections_a_few_at_a_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    let options = HttpOptions {
        timeout: Duration::from_secs(30),
        version: HttpVersion::Http1,
        max_in_flight: 500,
        streams_per_connection: 100,
        max_response_bytes: 64 * 1024,
    };
    let url = reqwest::Url::parse(&format!("https://{addr}/v1/email/send")).unwrap();
    let transport = Transport::new(Provider::MigoSmtp, options, url).unwrap();
    let call = Call {
        authorization: HeaderValue::from_static("Bearer mk_test"),
        idempotency_key: None,
        body: Bytes::from_static(b"{}"),
        traceparent: None,
        tracestate: None,
    };
    let calls = futures_util::future::join_all((0..200).map(|_| transport.call(&call)));
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepted.load(Ordering::SeqCst) < crate::provider::http1::OPENING_AT_ONCE {
            assert!(
                Instant::now() < deadline,
                "the first connections never came"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Time for any more to arrive, were they not held back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        accepted.load(Ordering::SeqCst)
    };
    let seen = tokio::select! {
        _ = calls => panic!("the calls ended, yet the provider never answered"),
        n = watch => n,
    };
    assert_eq!(seen, crate::provider::http1::OPENING_AT_ONCE);
    server.abort();
}
