//! A request id that follows a client request across nodes.
//!
//! The facade runs each API request inside [`with_request_id`]; when the
//! request has to be forwarded to the leader, the id travels with it and the
//! leader handles it inside a `forwarded` span carrying the same
//! `request_id`, so one grep finds the request in both nodes' logs.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Run `f` with `request_id` as the current request id.
pub async fn with_request_id<F: Future>(request_id: String, f: F) -> F::Output {
    REQUEST_ID.scope(request_id, f).await
}

/// The request id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}
