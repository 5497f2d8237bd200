//! Tests of the telemetry hub.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::queue::DropOldest;
use super::queue::RateMeter;
use super::queue::TokenBucket;
use super::*;
use cairn_raft::sync::lock;

fn hub(settings: TelemetrySettings) -> Telemetry {
    Telemetry::new(1, settings).unwrap()
}

fn fast() -> TelemetrySettings {
    TelemetrySettings {
        rate_hz: 1000,
        burst: 1000,
        ..TelemetrySettings::default()
    }
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts() {
    let mut q = DropOldest::new(3);
    for i in 1..=5 {
        q.push(i);
    }
    assert_eq!(q.dropped(), 2);
    assert_eq!(q.drain_up_to(10), vec![3, 4, 5]);
    assert_eq!(q.pop(), None);
    assert_eq!(q.push(6), None);
    assert_eq!(q.len(), 1);
}

#[test]
fn token_bucket_allows_the_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(10, 3, t0);
    let first: Vec<bool> = (0..5).map(|_| b.try_take(t0)).collect();
    assert_eq!(first, [true, true, true, false, false]);
    // 10 Hz: one token per 100 ms.
    assert!(!b.try_take(t0 + Duration::from_millis(50)));
    assert!(b.try_take(t0 + Duration::from_millis(105)));
    assert!(!b.try_take(t0 + Duration::from_millis(110)));
    // A long pause saves up at most the burst.
    let later = t0 + Duration::from_secs(60);
    let taken = (0..10).filter(|_| b.try_take(later)).count();
    assert_eq!(taken, 3);
}

#[test]
fn rate_meter_reports_the_last_window_and_decays_when_quiet() {
    let t0 = Instant::now();
    let mut m = RateMeter::new(t0);
    for i in 0..10 {
        m.record(t0 + Duration::from_millis(100 * i));
    }
    m.record(t0 + Duration::from_millis(1000));
    let r = m.rate_hz(t0 + Duration::from_millis(1100));
    assert!((r - 10.0).abs() < 0.01, "{r}");
    let quiet = m.rate_hz(t0 + Duration::from_secs(10));
    assert!(quiet < 0.2, "{quiet}");
}

#[test]
fn topic_names_are_checked() {
    for ok in ["rover.pose", "a", "node.stats", "sim.world-2", "x_y.z9"] {
        assert!(validate_topic(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        ".a",
        "a.",
        "a..b",
        "Rover.pose",
        "a b",
        "a/b",
        "topics",
        &"a".repeat(129),
    ] {
        assert!(validate_topic(bad).is_err(), "{bad}");
    }
}

#[test]
fn filters_match_exact_topics_and_prefixes() {
    let f = TopicFilter::new(["sim.world"], ["lab."]).unwrap();
    assert!(f.matches("sim.world") && f.matches("lab.pose"));
    assert!(!f.matches("sim.worlds") && !f.matches("node.stats"));
    assert!(TopicFilter::all().matches("anything"));
    assert!(TopicFilter::new(["Bad"], Vec::<String>::new()).is_err());
    assert!(TopicFilter::new(Vec::<String>::new(), ["a b"]).is_err());
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    assert!(TopicFilter::new(many, Vec::<String>::new()).is_err());
}

#[tokio::test]
async fn subscriber_gets_latest_first_then_live_in_order() {
    let t = hub(fast());
    t.publish("lab.pose", json!({"x_m": 1})).unwrap();
    t.publish("lab.pose", json!({"x_m": 2})).unwrap();
    t.publish("node.stats", json!({"load1": 0.5})).unwrap();
    let mut sub = t
        .subscribe(TopicFilter::new(["lab.pose"], Vec::<String>::new()).unwrap())
        .unwrap();
    let first = sub.recv().await.unwrap();
    assert_eq!((first.seq, first.payload["x_m"].as_i64()), (2, Some(2)));
    assert!(sub.try_recv().is_none(), "only the latest value, only matching topics");
    for x in 3..=5 {
        t.publish("lab.pose", json!({"x_m": x})).unwrap();
    }
    let seqs: Vec<u64> = [sub.recv().await, sub.recv().await, sub.recv().await]
        .into_iter()
        .map(|m| m.unwrap().seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(first.node_id, 1);
}

#[test]
fn a_slow_subscriber_loses_its_oldest_messages_and_counts_them() {
    let t = hub(TelemetrySettings {
        subscriber_queue: 4,
        ..fast()
    });
    let mut sub = t.subscribe(TopicFilter::all()).unwrap();
    for i in 1..=10 {
        t.publish("lab.pose", json!(i)).unwrap();
    }
    assert_eq!(sub.dropped(), 6);
    let got: Vec<u64> = std::iter::from_fn(|| sub.try_recv()).map(|m| m.seq).collect();
    assert_eq!(got, [7, 8, 9, 10]);
    let o = t.overview();
    assert_eq!(o.topics[0].subscriber_dropped, 6);
    assert_eq!(o.topics[0].published, 10);
}

#[test]
fn publishes_over_the_rate_are_dropped_and_counted() {
    let t = hub(TelemetrySettings {
        rate_hz: 5,
        burst: 2,
        topic_rate_hz: [("lab.world".to_owned(), 1)].into(),
        ..TelemetrySettings::default()
    });
    let results: Vec<bool> = (0..6).map(|i| t.publish("lab.pose", json!(i)).is_ok()).collect();
    assert_eq!(results, [true, true, false, false, false, false]);
    let err = t.publish("lab.pose", json!(0)).unwrap_err();
    assert!(matches!(err, TelemetryError::RateLimited { rate_hz: 5, .. }), "{err}");
    let o = t.overview();
    let pose = o.topics.iter().find(|x| x.topic == "lab.pose").unwrap();
    assert_eq!((pose.published, pose.rate_limited, pose.rate_limit_hz), (2, 5, 5));
    t.publish("lab.world", json!({})).unwrap();
    let o = t.overview();
    assert_eq!(
        o.topics.iter().find(|x| x.topic == "lab.world").unwrap().rate_limit_hz,
        1
    );
}

#[test]
fn oversized_payloads_and_too_many_topics_are_refused() {
    let t = hub(TelemetrySettings {
        max_payload_bytes: 64,
        max_topics: 2,
        ..fast()
    });
    let err = t.publish("a", json!("x".repeat(100))).unwrap_err();
    assert!(
        matches!(err, TelemetryError::PayloadTooLarge { limit_bytes: 64, .. }),
        "{err}"
    );
    t.publish("a", json!(1)).unwrap();
    t.publish("b", json!(1)).unwrap();
    assert_eq!(
        t.publish("c", json!(1)).unwrap_err(),
        TelemetryError::TooManyTopics { limit: 2 }
    );
    assert!(t.overview().topics.iter().all(|x| x.topic != "c"));
}

#[test]
fn remote_messages_are_delivered_once_and_never_forwarded() {
    let t = hub(fast());
    let peer_queues = t.set_peers(&[2, 3].into());
    assert_eq!(peer_queues.len(), 2);
    let mut sub = t.subscribe(TopicFilter::all()).unwrap();
    let m = |node_id, seq| TelemetryMessage {
        topic: "lab.pose".into(),
        node_id,
        seq,
        wall_time_ms: 0,
        payload: json!(seq),
    };
    t.deliver_remote(2, 7, vec![m(2, 1), m(2, 2), m(2, 2), m(2, 1), m(3, 9), m(1, 4)]);
    let got: Vec<(u64, u64)> = std::iter::from_fn(|| sub.try_recv())
        .map(|m| (m.node_id, m.seq))
        .collect();
    assert_eq!(got, [(2, 1), (2, 2)], "repeats and foreign origins are dropped");
    assert_eq!(t.overview().received_refused, 2);
    for (_, q) in &peer_queues {
        assert_eq!(lock(&q.queue).len(), 0, "a received message is not forwarded");
    }
    tracing::info!("a restarted publisher (new incarnation) starts again at seq 1");
    t.deliver_remote(2, 8, vec![m(2, 1)]);
    assert_eq!(sub.try_recv().map(|m| m.seq), Some(1));
    tracing::info!("local publishes go to every peer queue");
    t.publish("lab.pose", json!(1)).unwrap();
    for (_, q) in &peer_queues {
        assert_eq!(lock(&q.queue).len(), 1);
    }
}

#[test]
fn latest_value_is_kept_per_source() {
    let t = hub(fast());
    t.publish("node.stats", json!({"n": 1})).unwrap();
    let remote = TelemetryMessage {
        topic: "node.stats".into(),
        node_id: 2,
        seq: 5,
        wall_time_ms: 0,
        payload: json!({"n": 2}),
    };
    t.deliver_remote(2, 1, vec![remote]);
    let mut sub = t.subscribe(TopicFilter::all()).unwrap();
    let got: Vec<u64> = std::iter::from_fn(|| sub.try_recv()).map(|m| m.node_id).collect();
    assert_eq!(got, [1, 2]);
}

#[test]
fn subscribers_are_bounded_and_removed_on_drop() {
    let t = hub(fast());
    let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
        .map(|_| t.subscribe(TopicFilter::all()).unwrap())
        .collect();
    assert!(matches!(
        t.subscribe(TopicFilter::all()),
        Err(TelemetryError::TooManySubscribers { .. })
    ));
    drop(subs);
    assert!(t.subscribe(TopicFilter::all()).is_ok());
}

#[test]
fn settings_are_validated() {
    assert!(TelemetrySettings::default().validate().is_ok());
    let bad = TelemetrySettings {
        rate_hz: 0,
        ..TelemetrySettings::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(TelemetryError::Config {
            key: "telemetry.rate_hz",
            ..
        })
    ));
    let bad = TelemetrySettings {
        topic_rate_hz: [("Bad Topic".to_owned(), 3)].into(),
        ..TelemetrySettings::default()
    };
    assert!(bad.validate().is_err());
}
