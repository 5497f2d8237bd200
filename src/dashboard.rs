//! The operator dashboard every node serves at `/`: one page of vanilla JS
//! and CSS embedded in the binary (no build step, no CDN, ~40 KB), which
//! reads the admin API like any other client.
//!
//! The page polls `/v1/status` of every member it knows (it learns their API
//! addresses from the members list), follows `/v1/watch` for replicated
//! changes and `/v1/telemetry` for the rover's pose, the simulated world and
//! node load. When the node it reads from stops answering it says so and
//! moves to another member, so the page keeps working when the node that
//! served it dies — which is why the API sends CORS headers to pages served
//! by other members (see `api::cors`).
//!
//! The assets are public (they hold no data); every request the page makes
//! is an ordinary API request, with the token when the operator gives one.

use axum::http::header;
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const FAVICON_SVG: &str = include_str!("dashboard/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Assets change only with the binary; a short cache keeps an
            // upgraded node's page fresh.
            (header::CACHE_CONTROL, HeaderValue::from_static("max-age=60")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let mut resp = asset("text/html; charset=utf-8", INDEX_HTML);
    // Only our own script and style; connections to the other members are
    // allowed because the page fails over to them.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src *; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

/// Routes of the page and its assets (`/`, `/ui/…`), all public.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/ui/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

/// Whether `path` is one of the page's public assets.
pub(crate) fn is_asset(path: &str) -> bool {
    matches!(path, "/" | "/favicon.ico") || path.starts_with("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_only_embedded_assets() {
        for needle in ["/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
            assert!(INDEX_HTML.contains(needle), "index.html lacks {needle}");
        }
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "no external URLs"
            );
        }
        let total = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len() + FAVICON_SVG.len();
        assert!(total < 96 * 1024, "the page stays small: {total} bytes");
        assert!(is_asset("/") && is_asset("/ui/app.js") && !is_asset("/v1/status"));
    }

    #[test]
    fn the_script_never_parses_markup() {
        // Data (node names, task kinds, reasons, telemetry) must never reach
        // an HTML or SVG parser: the page builds every element with
        // createElement(NS), textContent and setAttribute.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "createContextualFragment",
            "DOMParser",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
