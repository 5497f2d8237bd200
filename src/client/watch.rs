//! Following `GET /v1/watch` as server-sent events, resumed on the next
//! endpoint when a stream drops.

use std::time::Duration;

use super::error::api_error;
use super::error::content_type;
use super::error::root_cause;
use super::error::ClientError;
use super::error::Unanswered;
use super::Client;
use crate::wire::ErrorBody;

/// One server-sent event of `GET /v1/watch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// `change` or `error`.
    pub event: String,
    /// The event id (a log index for changes).
    pub id: Option<String>,
    /// The JSON data.
    pub data: String,
}

impl Client {
    /// Follow `GET /v1/watch` from index `from`, calling `on_event` for each
    /// event until it returns `false`. A dropped stream is resumed from the
    /// last delivered index + 1 on the next endpoint, so no change is missed
    /// or repeated; an `error` event or an API error ends the watch.
    pub async fn watch(
        &self,
        from: Option<u64>,
        mut on_event: impl FnMut(&SseEvent) -> bool,
    ) -> Result<(), ClientError> {
        // Bounded: a cluster that keeps dropping the stream is reported,
        // not retried forever.
        const MAX_RESUMES: usize = 100;
        let mut next = from;
        let mut failures = Vec::new();
        let mut i = 0usize;
        while failures.len() < MAX_RESUMES {
            let Some(ep) = self.endpoints.get(i % self.endpoints.len().max(1)) else {
                break;
            };
            i += 1;
            let path = match next {
                Some(n) => format!("{ep}/v1/watch?from={n}"),
                None => format!("{ep}/v1/watch"),
            };
            if let Err(e) = self.dial(ep).await {
                failures.push(match e {
                    ClientError::Unreachable { tried, .. } => tried,
                    other => other.to_string(),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let resp = match self.request(&self.stream_http, reqwest::Method::GET, path).send().await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{ep}: {}", root_cause(&e)));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let content_type = content_type(&resp);
                let text = resp.text().await.unwrap_or_default();
                let err = api_error(ep, status, &content_type, text);
                if status.as_u16() == 503 || matches!(err, ClientError::Protocol { .. }) {
                    failures.push(err.to_string());
                    continue;
                }
                return Err(err);
            }
            let mut resp = resp;
            let mut buf = String::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => {
                        buf.push_str(&String::from_utf8_lossy(&bytes));
                        while let Some(end) = buf.find("\n\n") {
                            let block: String = buf.drain(..end + 2).collect();
                            let Some(ev) = parse_sse(&block) else { continue };
                            if ev.event == "error" {
                                let body = serde_json::from_str::<ErrorBody>(&ev.data).unwrap_or(ErrorBody {
                                    code: "error".into(),
                                    message: ev.data.clone(),
                                    field: None,
                                    retryable: false,
                                });
                                return Err(ClientError::Api {
                                    endpoint: ep.clone(),
                                    status: 200,
                                    body,
                                });
                            }
                            if let Some(id) = ev.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                                next = Some(id + 1);
                            }
                            if !on_event(&ev) {
                                return Ok(());
                            }
                        }
                    }
                    Ok(None) => {
                        failures.push(format!("{ep}: stream closed"));
                        break;
                    }
                    Err(e) => {
                        failures.push(format!("{ep}: {}", root_cause(&e)));
                        break;
                    }
                }
            }
        }
        Err(ClientError::Unreachable {
            tried: failures.into_iter().rev().take(3).collect::<Vec<_>>().join("; "),
            why: Unanswered::Down,
        })
    }
}

impl Client {
    /// Follow a server-sent event stream at `path` (e.g.
    /// `/v1/telemetry?topic=rover.pose`), calling `on_event` for each event
    /// until it returns `false`. Unlike [`Client::watch`] the stream has no
    /// position to resume from: a dropped stream is reopened on the next
    /// endpoint and starts over as that node starts it (telemetry sends the
    /// latest message of each topic first). An API error ends it.
    pub async fn stream(&self, path: &str, mut on_event: impl FnMut(&SseEvent) -> bool) -> Result<(), ClientError> {
        // Bounded: a cluster that keeps dropping the stream is reported,
        // not retried forever.
        const MAX_REOPENS: usize = 100;
        let mut failures = Vec::new();
        let mut i = 0usize;
        while failures.len() < MAX_REOPENS {
            let Some(ep) = self.endpoints.get(i % self.endpoints.len().max(1)) else {
                break;
            };
            i += 1;
            if let Err(e) = self.dial(ep).await {
                failures.push(match e {
                    ClientError::Unreachable { tried, .. } => tried,
                    other => other.to_string(),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let url = format!("{ep}{path}");
            let mut resp = match self.request(&self.stream_http, reqwest::Method::GET, url).send().await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{ep}: {}", root_cause(&e)));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let content_type = content_type(&resp);
                let text = resp.text().await.unwrap_or_default();
                let err = api_error(ep, status, &content_type, text);
                if status.as_u16() == 503 || matches!(err, ClientError::Protocol { .. }) {
                    failures.push(err.to_string());
                    continue;
                }
                return Err(err);
            }
            let mut buf = String::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => {
                        buf.push_str(&String::from_utf8_lossy(&bytes));
                        while let Some(end) = buf.find("\n\n") {
                            let block: String = buf.drain(..end + 2).collect();
                            let Some(ev) = parse_sse(&block) else { continue };
                            if !on_event(&ev) {
                                return Ok(());
                            }
                        }
                    }
                    Ok(None) => {
                        failures.push(format!("{ep}: stream closed"));
                        break;
                    }
                    Err(e) => {
                        failures.push(format!("{ep}: {}", root_cause(&e)));
                        break;
                    }
                }
            }
        }
        Err(ClientError::Unreachable {
            tried: failures.into_iter().rev().take(3).collect::<Vec<_>>().join("; "),
            why: Unanswered::Down,
        })
    }
}

/// Parse one SSE block (lines up to a blank line); comments and keep-alives
/// give `None`.
pub fn parse_sse(block: &str) -> Option<SseEvent> {
    let mut event = String::from("message");
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        let v = v.strip_prefix(' ').unwrap_or(v);
        match k {
            "event" => event = v.to_string(),
            "id" => id = Some(v.to_string()),
            "data" => data.push(v),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event,
        id,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_and_keepalives_are_skipped() {
        assert_eq!(parse_sse(":\n\n"), None);
        let ev = parse_sse("event: change\nid: 7\ndata: {\"index\":7}\n\n").unwrap();
        assert_eq!(ev.event, "change");
        assert_eq!(ev.id.as_deref(), Some("7"));
        assert_eq!(ev.data, "{\"index\":7}");
    }
}
