//! `cairn topic list|echo|hz`: the best-effort telemetry topics
//! (`/v1/telemetry`), as `ros2 topic` shows ROS topics.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn::client::Client;
use cairn::telemetry::TelemetryMessage;
use cairn::telemetry::TelemetryOverview;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::out::float;
use super::out::json_text;
use super::out::print_json;
use super::out::table;
use super::out::typed;
use super::out::when;
use super::NONE;

#[derive(Subcommand)]
pub enum TopicCmd {
    /// Topics the node knows: per publishing node, the latest seq, when it
    /// was published and the observed rate.
    List,
    /// Print a topic's messages as they arrive (the latest one first).
    Echo {
        /// Topic, e.g. `rover.pose`.
        topic: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print a topic's message rate, once per window.
    Hz {
        /// Topic, e.g. `rover.pose`.
        topic: String,
        /// Window length, seconds.
        #[arg(long, default_value_t = 2.0)]
        window: f64,
        /// Exit after this many windows.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// The stream path for one topic, its name query-encoded.
fn topic_path(topic: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("topic", topic)
        .finish();
    format!("/v1/telemetry?{q}")
}

/// Skips a message already delivered: a reopened stream starts with the
/// latest message of each node again. Keyed by publishing node, its `seq`.
#[derive(Default)]
struct Seen(HashMap<(String, u64), u64>);

impl Seen {
    /// Whether `m` is new (and remembers it).
    fn fresh(&mut self, m: &TelemetryMessage) -> bool {
        let last = self.0.insert((m.topic.clone(), m.node_id), m.seq);
        last != Some(m.seq)
    }
}

/// Runs `cmd`.
pub async fn run(client: &Client, out_json: bool, cmd: TopicCmd) -> anyhow::Result<()> {
    match cmd {
        TopicCmd::List => {
            let r: Value = client
                .call(Method::GET, "/v1/telemetry/topics", NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let o: TelemetryOverview = typed(r, "the telemetry topics")?;
            let mut rows = Vec::new();
            for t in &o.topics {
                if t.sources.is_empty() {
                    rows.push(vec![t.topic.clone(), "-".into(), "-".into(), "-".into(), "-".into()]);
                }
                for s in &t.sources {
                    rows.push(vec![
                        t.topic.clone(),
                        s.node_id.to_string(),
                        s.seq.to_string(),
                        format!("{:.1}", s.rate_hz),
                        when(s.wall_time_ms),
                    ]);
                }
            }
            table(&["TOPIC", "NODE", "SEQ", "RATE HZ", "LAST PUBLISHED"], &rows);
        }
        TopicCmd::Echo { topic, count } => echo(client, out_json, &topic, count).await?,
        TopicCmd::Hz { topic, window, count } => hz(client, out_json, &topic, window, count).await?,
    }
    Ok(())
}

async fn echo(client: &Client, out_json: bool, topic: &str, count: Option<u64>) -> anyhow::Result<()> {
    use std::io::Write;
    if count == Some(0) {
        return Ok(());
    }
    let mut seen = Seen::default();
    let mut printed = 0u64;
    client
        .stream(&topic_path(topic), |ev| {
            match ev.event.as_str() {
                "telemetry" => {
                    let Ok(m) = serde_json::from_str::<TelemetryMessage>(&ev.data) else {
                        return true;
                    };
                    if !seen.fresh(&m) {
                        return true;
                    }
                    if out_json {
                        println!("{}", ev.data);
                    } else {
                        println!(
                            "{} node {} seq {} at {}: {}",
                            m.topic,
                            m.node_id,
                            m.seq,
                            when(m.wall_time_ms),
                            json_text(&m.payload)
                        );
                    }
                    printed += 1;
                }
                "dropped" => eprintln!("cairn: this reader fell behind; the node dropped messages: {}", ev.data),
                _ => {}
            }
            let _ = std::io::stdout().flush();
            count.is_none_or(|c| printed < c)
        })
        .await?;
    Ok(())
}

async fn hz(client: &Client, out_json: bool, topic: &str, window: f64, count: Option<u64>) -> anyhow::Result<()> {
    use std::io::Write;
    if !(window.is_finite() && window > 0.0) {
        anyhow::bail!("--window {window}: give a positive number of seconds");
    }
    if count == Some(0) {
        return Ok(());
    }
    let arrived = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&arrived);
    // A stream starts with the latest message of each node, published
    // before now: seeded with those, `seen` does not count them.
    let mut seen = Seen::default();
    if let Ok(Some(o)) = client
        .call::<(), TelemetryOverview>(Method::GET, "/v1/telemetry/topics", NONE)
        .await
    {
        for t in o.topics.iter().filter(|t| t.topic == topic) {
            for s in &t.sources {
                seen.0.insert((t.topic.clone(), s.node_id), s.seq);
            }
        }
    }
    let path = topic_path(topic);
    let stream = client.stream(&path, move |ev| {
        if ev.event == "telemetry" {
            if let Ok(m) = serde_json::from_str::<TelemetryMessage>(&ev.data) {
                if seen.fresh(&m) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        true
    });
    tokio::pin!(stream);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(window));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the window starts now.
    tick.tick().await;
    let mut windows = 0u64;
    loop {
        tokio::select! {
            r = &mut stream => {
                r?;
                anyhow::bail!("the telemetry stream ended");
            }
            _ = tick.tick() => {
                let n = arrived.swap(0, Ordering::Relaxed);
                let rate = n as f64 / window;
                if out_json {
                    println!("{}", serde_json::json!({"topic": topic, "rate_hz": rate, "messages": n, "window_s": window}));
                } else {
                    println!("{topic}: {} Hz ({n} messages in {}s)", float((rate * 100.0).round() / 100.0), float(window));
                }
                let _ = std::io::stdout().flush();
                windows += 1;
                if count.is_some_and(|c| windows >= c) {
                    return Ok(());
                }
            }
        }
    }
}
