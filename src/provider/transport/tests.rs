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
