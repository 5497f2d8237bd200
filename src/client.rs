//! A small HTTP client of the admin API with endpoint fail-over, used by the
//! CLI (and handy for programs that drive cairn from outside).
//!
//! Endpoints are tried in order; one that is down, or answers 503 ("no
//! leader here, retry elsewhere"), is skipped. A bearer token, when given,
//! goes with every request; with a CA certificate the client speaks HTTPS
//! and trusts only that CA.
//!
//! Two timeouts, like etcdctl's `--dial-timeout` and `--command-timeout`:
//! before its first request an endpoint must answer `GET /version` as a
//! cairn node within the dial timeout (a frozen process, whose kernel still
//! accepts the TCP connection, or some other HTTP server is skipped after
//! that, not after the command timeout); each request then has the
//! command timeout.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use cairn_raft::RetryClass;

use crate::wire::ErrorBody;

/// Why no endpoint gave an answer, the worst case over the endpoints
/// tried (ordered: a timeout beats "unavailable", which beats "down").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unanswered {
    /// Not reachable: nothing listens, it did not answer within the dial
    /// timeout, or it is not a cairn node.
    Down,
    /// Reachable, but it cannot serve this now (503: no leader, no quorum).
    Unavailable,
    /// The request was sent but no answer came in time, or the connection
    /// broke before one, or the node said "outcome unknown" (504): a write
    /// may or may not have been applied.
    Unknown,
}

/// The message of [`ClientError::Unreachable`].
fn unanswered_text(why: &Unanswered, tried: &str) -> String {
    match why {
        Unanswered::Down => format!("no endpoint reachable ({tried}); is a node running? try --endpoints"),
        Unanswered::Unavailable => format!("no endpoint could serve the request now ({tried})"),
        Unanswered::Unknown => {
            format!("no answer in time ({tried}); if this was a write, its outcome is unknown: read before retrying")
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint answered (`why` says how it went).
    #[error("{}", unanswered_text(.why, .tried))]
    Unreachable {
        /// What was tried, with each failure.
        tried: String,
        /// The worst failure among them.
        why: Unanswered,
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

/// The dial timeout unless told otherwise (etcdctl's default too), capped
/// by the request timeout.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A client's two timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting to an endpoint and its first answer (`GET /version`).
    pub dial: Duration,
    /// One request, once the endpoint answered.
    pub command: Duration,
}

impl Timeouts {
    /// `command` per request, and the default dial timeout (at most `command`).
    pub fn with_command(command: Duration) -> Self {
        Self {
            dial: DEFAULT_DIAL_TIMEOUT.min(command),
            command,
        }
    }
}

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
    timeouts: Timeouts,
    /// Endpoints that answered as a cairn node (shared by clones).
    dialled: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
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
    /// (`host:port` or URLs), `timeout` per request (and the default dial
    /// timeout, at most `timeout`).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        let timeouts = Timeouts::with_command(timeout);
        let endpoints = endpoints.iter().map(|e| normalise(e, false)).collect();
        let http = reqwest::Client::builder()
            .timeout(timeouts.command)
            .connect_timeout(timeouts.dial)
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let stream_http = reqwest::Client::builder()
            .connect_timeout(timeouts.dial)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            endpoints,
            http,
            stream_http,
            token: None,
            client_id: rand::random(),
            next_seq: Default::default(),
            timeouts,
            dialled: Default::default(),
        }
    }

    /// A client with a token and/or a CA to trust; `timeout` per request
    /// (and the default dial timeout, at most `timeout`).
    pub fn with_options(endpoints: Vec<String>, timeout: Duration, opts: ClientOptions) -> Result<Self, ClientError> {
        Self::with_timeouts(endpoints, Timeouts::with_command(timeout), opts)
    }

    /// A client with both timeouts given.
    pub fn with_timeouts(endpoints: Vec<String>, timeouts: Timeouts, opts: ClientOptions) -> Result<Self, ClientError> {
        let https = opts.ca_cert.is_some();
        let endpoints = endpoints.iter().map(|e| normalise(e, https)).collect();
        let setup = |e: reqwest::Error| ClientError::Setup { reason: e.to_string() };
        let mut b = reqwest::Client::builder()
            .timeout(timeouts.command)
            .connect_timeout(timeouts.dial)
            .pool_idle_timeout(POOL_IDLE);
        let mut sb = reqwest::Client::builder().connect_timeout(timeouts.dial);
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
            timeouts,
            dialled: Default::default(),
        })
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The dial and command timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Checks, once per endpoint, that it is a cairn node that answers:
    /// `GET /version` within the dial timeout. A frozen process (SIGSTOP:
    /// its kernel still completes the TCP handshake) or another HTTP
    /// server is then skipped after the dial timeout instead of holding
    /// every request for the command timeout. No token goes with it.
    async fn dial(&self, endpoint: &str) -> Result<(), ClientError> {
        if self.dialled.lock().is_ok_and(|d| d.contains(endpoint)) {
            return Ok(());
        }
        let down = |reason: String| ClientError::Unreachable {
            tried: format!("{endpoint}: {reason}"),
            why: Unanswered::Down,
        };
        let dial_ms = self.timeouts.dial.as_millis();
        let resp = self
            .http
            .get(format!("{endpoint}/version"))
            .timeout(self.timeouts.dial)
            .send()
            .await
            .map_err(|e| {
                down(if e.is_timeout() {
                    format!("no answer within the dial timeout ({dial_ms} ms; frozen or overloaded?)")
                } else {
                    format!("cannot connect ({})", root_cause(&e))
                })
            })?;
        let status = resp.status();
        let content_type = content_type(&resp);
        let text = resp.text().await.map_err(|e| {
            down(if e.is_timeout() {
                format!("no answer within the dial timeout ({dial_ms} ms; frozen or overloaded?)")
            } else {
                format!("the answer broke off ({})", root_cause(&e))
            })
        })?;
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let cairn = match &json {
            // This build's and newer: the build info.
            Some(v) if status.is_success() => v.get("version").is_some(),
            // An older node without /version: a cairn error body.
            Some(v) => serde_json::from_value::<ErrorBody>(v.clone()).is_ok(),
            None => status == reqwest::StatusCode::NOT_FOUND && text.is_empty(),
        };
        if !cairn {
            return Err(down(not_cairn(status, &content_type)));
        }
        if let Ok(mut d) = self.dialled.lock() {
            d.insert(endpoint.to_string());
        }
        Ok(())
    }

    /// A failed send as [`ClientError::Unreachable`] for `endpoint`.
    fn send_error(&self, endpoint: &str, e: &reqwest::Error) -> ClientError {
        let (reason, why) = if e.is_connect() {
            (format!("cannot connect ({})", root_cause(e)), Unanswered::Down)
        } else if e.is_timeout() {
            (
                format!(
                    "no answer within the command timeout ({} ms)",
                    self.timeouts.command.as_millis()
                ),
                Unanswered::Unknown,
            )
        } else {
            (
                format!("the connection broke before an answer ({})", root_cause(e)),
                Unanswered::Unknown,
            )
        };
        ClientError::Unreachable {
            tried: format!("{endpoint}: {reason}"),
            why,
        }
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
        self.dial(endpoint).await?;
        let mut req = self.request(&self.http, method, format!("{endpoint}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some((client_id, seq)) = tag {
            req = req
                .header(crate::wire::CLIENT_ID_HEADER, client_id)
                .header(crate::wire::CLIENT_SEQ_HEADER, seq);
        }
        let resp = req.send().await.map_err(|e| self.send_error(endpoint, &e))?;
        let status = resp.status();
        let content_type = content_type(&resp);
        let text = resp.text().await.map_err(|e| self.send_error(endpoint, &e))?;
        if !status.is_success() {
            return Err(api_error(endpoint, status, &content_type, text));
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
        let mut why = Unanswered::Down;
        // The first endpoint that was reached but could not serve.
        let mut reached = None;
        // The one retry policy's rule (cairn_raft::retry): after an unknown
        // outcome only a tagged write, or a read, goes to the next endpoint.
        // One attempt per endpoint bounds the loop.
        let idempotent = tag.is_some() || !is_write;
        for ep in &self.endpoints {
            let (class, w, message) = match self.call_one_tagged(ep, method.clone(), path, body, tag).await {
                Err(ClientError::Unreachable { tried: t, why: w }) => {
                    let class = match w {
                        Unanswered::Unknown => RetryClass::Unknown,
                        Unanswered::Down | Unanswered::Unavailable => RetryClass::Safe,
                    };
                    (class, w, t)
                }
                Err(ClientError::Api { status: 503, body, .. }) => (
                    RetryClass::Safe,
                    Unanswered::Unavailable,
                    format!("{ep}: {}", body.message),
                ),
                // An untagged request's 504 is an answer (e.g. a state hash
                // not reached in time): given back as it is.
                Err(ClientError::Api { status: 504, body, .. }) if tag.is_some() => (
                    RetryClass::Unknown,
                    Unanswered::Unknown,
                    format!("{ep}: {}", body.message),
                ),
                other => return other,
            };
            if !class.may_retry(idempotent) {
                return Err(ClientError::Unreachable { tried: message, why: w });
            }
            tried.push(message);
            why = why.max(w);
            if w != Unanswered::Down {
                reached.get_or_insert(ep);
            }
        }
        if let Some(ep) = reached {
            if self.uninitialised(ep).await {
                tried.push(format!(
                    "{ep} is part of no cluster yet: bootstrap one with `cairn cluster init`"
                ));
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
            why,
        })
    }

    /// Whether `endpoint` says it is part of no cluster (no members): the
    /// reason for its 503s before `cluster init`.
    async fn uninitialised(&self, endpoint: &str) -> bool {
        matches!(
            self.call_one::<(), cairn_raft::Status>(endpoint, reqwest::Method::GET, "/v1/status", None)
                .await,
            Ok(Some(s)) if s.members.is_empty()
        )
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
        let mut why = Unanswered::Down;
        for ep in &self.endpoints {
            let sent = match self.dial(ep).await {
                Ok(()) => self
                    .request(&self.http, reqwest::Method::GET, format!("{ep}{path}"))
                    .send()
                    .await
                    .map_err(|e| self.send_error(ep, &e)),
                Err(e) => Err(e),
            };
            let resp = match sent {
                Ok(r) => r,
                Err(ClientError::Unreachable { tried: t, why: w }) => {
                    tried.push(t);
                    why = why.max(w);
                    continue;
                }
                Err(other) => return Err(other),
            };
            let status = resp.status();
            let content_type = content_type(&resp);
            if status.is_success() {
                return resp
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| self.send_error(ep, &e));
            }
            let text = resp.text().await.map_err(|e| self.send_error(ep, &e))?;
            match api_error(ep, status, &content_type, text) {
                ClientError::Api { status: 503, body, .. } => {
                    tried.push(format!("{ep}: {}", body.message));
                    why = why.max(Unanswered::Unavailable);
                }
                ClientError::Protocol { reason, .. } => tried.push(format!("{ep}: {reason}")),
                other => return Err(other),
            }
        }
        Err(ClientError::Unreachable {
            tried: tried.join("; "),
            why,
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

/// A response's content type, for saying what a non-cairn answer was.
fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default()
}

/// What a non-cairn answer was, without its body (an HTML page says
/// nothing useful on a terminal).
fn not_cairn(status: reqwest::StatusCode, content_type: &str) -> String {
    let what = if content_type.is_empty() {
        String::new()
    } else {
        format!(" ({content_type})")
    };
    format!("answered HTTP {status}{what}, not as a cairn node: is this a cairn admin API address?")
}

/// The innermost cause of a reqwest error, once: reqwest's own message
/// repeats the URL (the endpoint is named already) and some layers repeat
/// their cause in their own message.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

/// A cairn error answer, or, if the body is not one, a protocol error
/// saying what came instead (not the body).
fn api_error(endpoint: &str, status: reqwest::StatusCode, content_type: &str, text: String) -> ClientError {
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            body,
        },
        Err(_) => ClientError::Protocol {
            endpoint: endpoint.to_string(),
            reason: not_cairn(status, content_type),
        },
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
