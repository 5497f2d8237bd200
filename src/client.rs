//! A small HTTP client of the admin API with endpoint fail-over, used by the
//! CLI (and handy for programs that drive cairn from outside).
//!
//! Endpoints are tried in order; one that is down, or answers 503 ("no
//! leader here, retry elsewhere"), is skipped. A bearer token, when given,
//! goes with every request; with a CA certificate the client speaks HTTPS
//! and trusts only that CA.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ErrorBody;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint answered.
    #[error("no endpoint reachable ({tried}); is a node running? try --endpoints")]
    Unreachable {
        /// What was tried, with each failure.
        tried: String,
    },
    /// The node answered with an error.
    #[error("{endpoint}: {} ({})", body.message, body.code)]
    Api {
        /// Which node said it.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// The response did not parse.
    #[error("{endpoint}: unexpected response: {reason}")]
    Protocol {
        /// Which node.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The client could not be set up (CA file, token).
    #[error("client setup: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
}

/// Idle pooled connections are dropped after this: well under the node's
/// `api.header_read_timeout_ms` (10 s by default), after which the server
/// closes an idle connection, so a request never goes out on a connection
/// the server is closing.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// Optional client settings.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Bearer token for the admin API.
    pub token: Option<String>,
    /// CA certificate (PEM) to trust; implies HTTPS for endpoints given
    /// without a scheme.
    pub ca_cert: Option<PathBuf>,
}

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

/// Admin API client over a list of endpoints.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
    stream_http: reqwest::Client,
    token: Option<String>,
    /// Client tag for at-most-once writes: a random id per client, and a
    /// sequence that grows with every write (see docs/API.md).
    client_id: u64,
    next_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn normalise(e: &str, https: bool) -> String {
    let e = e.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if https {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    }
}

impl Client {
    /// A plain-HTTP client without a token trying `endpoints` in order
    /// (`host:port` or URLs).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        let endpoints = endpoints.iter().map(|e| normalise(e, false)).collect();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let stream_http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            endpoints,
            http,
            stream_http,
            token: None,
            client_id: rand::random(),
            next_seq: Default::default(),
        }
    }

    /// A client with a token and/or a CA to trust.
    pub fn with_options(endpoints: Vec<String>, timeout: Duration, opts: ClientOptions) -> Result<Self, ClientError> {
        let https = opts.ca_cert.is_some();
        let endpoints = endpoints.iter().map(|e| normalise(e, https)).collect();
        let setup = |e: reqwest::Error| ClientError::Setup { reason: e.to_string() };
        let mut b = reqwest::Client::builder().timeout(timeout).pool_idle_timeout(POOL_IDLE);
        let mut sb = reqwest::Client::builder().connect_timeout(timeout);
        if let Some(ca) = &opts.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| ClientError::Setup {
                reason: format!("cannot read ca certificate {}: {e}", ca.display()),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError::Setup {
                reason: format!("{} is not a pem certificate: {e}", ca.display()),
            })?;
            b = b.add_root_certificate(cert.clone()).tls_built_in_root_certs(false);
            sb = sb.add_root_certificate(cert).tls_built_in_root_certs(false);
        }
        Ok(Self {
            endpoints,
            http: b.build().map_err(setup)?,
            stream_http: sb.build().map_err(setup)?,
            token: opts.token.filter(|t| !t.is_empty()),
            client_id: rand::random(),
            next_seq: Default::default(),
        })
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn request(&self, http: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let req = http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Call one endpoint only.
    pub async fn call_one<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        self.call_one_tagged(endpoint, method, path, body, None).await
    }

    async fn call_one_tagged<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        tag: Option<(u64, u64)>,
    ) -> Result<Option<T>, ClientError> {
        let mut req = self.request(&self.http, method, format!("{endpoint}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some((client_id, seq)) = tag {
            req = req
                .header(crate::api::CLIENT_ID_HEADER, client_id)
                .header(crate::api::CLIENT_SEQ_HEADER, seq);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            tried: format!("{endpoint}: {e}"),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Protocol {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(api_error(endpoint, status, text));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ClientError::Protocol {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })
    }

    /// Call the first endpoint that answers; an endpoint that is down or
    /// says "retry elsewhere" (503) is skipped. Writes carry a client tag,
    /// so one answered "outcome unknown" (504) is retried on the next
    /// endpoint with the same tag: it applies at most once.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        let is_write = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let tag = is_write.then(|| {
            let seq = self.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            (self.client_id, seq)
        });
        let mut tried = Vec::new();
        for ep in &self.endpoints {
            match self.call_one_tagged(ep, method.clone(), path, body, tag).await {
                Err(ClientError::Unreachable { tried: t }) => tried.push(t),
                Err(ClientError::Api { status: 503, body, .. }) => tried.push(format!("{ep}: {}", body.message)),
                Err(ClientError::Api { status: 504, body, .. }) if tag.is_some() => {
                    tried.push(format!("{ep}: {}", body.message))
                }
                other => return other,
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
        })
    }

    /// This client with the leader's API endpoint tried first: asks the
    /// endpoints for `/v1/status` in turn and, from the first that knows a
    /// leader, puts that leader's API address (from the member list) ahead
    /// of the configured endpoints, and the other members' after them. For
    /// requests only the leader serves (membership changes): the others
    /// answer 503, which [`Client::call`] skips. Unchanged if no endpoint
    /// answers or none knows a leader.
    pub async fn leader_first(&self) -> Self {
        let mut known: Option<(String, cairn_raft::Status)> = None;
        for ep in &self.endpoints {
            if let Ok(Some(s)) = self
                .call_one::<(), cairn_raft::Status>(ep, reqwest::Method::GET, "/v1/status", None)
                .await
            {
                let has_leader = s.leader.is_some();
                known = Some((ep.clone(), s));
                if has_leader {
                    break;
                }
            }
        }
        let Some((ep, status)) = known else {
            return self.clone();
        };
        let https = ep.starts_with("https://");
        let url = |addr: &str| normalise(addr, https);
        let mut endpoints: Vec<String> = Vec::new();
        let leader = status
            .leader
            .and_then(|l| status.members.iter().find(|m| m.id == l))
            .map(|m| url(&m.member.api_addr));
        let members = status.members.iter().map(|m| url(&m.member.api_addr));
        for e in leader.into_iter().chain(self.endpoints.iter().cloned()).chain(members) {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        Self {
            endpoints,
            ..self.clone()
        }
    }

    /// `GET path` as raw bytes (e.g. `/v1/backup`) from the first endpoint
    /// that answers; one that is down or answers 503 is skipped.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut tried = Vec::new();
        for ep in &self.endpoints {
            let resp = match self
                .request(&self.http, reqwest::Method::GET, format!("{ep}{path}"))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tried.push(format!("{ep}: {e}"));
                    continue;
                }
            };
            let status = resp.status();
            let protocol = |e: reqwest::Error| ClientError::Protocol {
                endpoint: ep.clone(),
                reason: e.to_string(),
            };
            if status.is_success() {
                return resp.bytes().await.map(|b| b.to_vec()).map_err(protocol);
            }
            let text = resp.text().await.map_err(protocol)?;
            match api_error(ep, status, text) {
                ClientError::Api { status: 503, body, .. } => tried.push(format!("{ep}: {}", body.message)),
                other => return Err(other),
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
        })
    }

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
            let resp = match self.request(&self.stream_http, reqwest::Method::GET, path).send().await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{ep}: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                let err = api_error(ep, status, text);
                if status.as_u16() == 503 {
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
                        failures.push(format!("{ep}: {e}"));
                        break;
                    }
                }
            }
        }
        Err(ClientError::Unreachable {
            tried: failures.into_iter().rev().take(3).collect::<Vec<_>>().join("; "),
        })
    }
}

fn api_error(endpoint: &str, status: reqwest::StatusCode, text: String) -> ClientError {
    let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
        code: status.as_str().to_string(),
        message: text,
        field: None,
        retryable: status.is_server_error(),
    });
    ClientError::Api {
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        body,
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
