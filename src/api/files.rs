//! The files built into the binary, served without a key and with an ETag:
//! - `GET /playground` and its script, style and icon: a page to try the proxy in a browser,
//!   kept in `playground/`. It holds no data (it asks for the caller's key when the API
//!   wants one) and calls the API relative to its own URL, so it works whatever the stage or
//!   domain. Served with a strict CSP.
//! - `GET /openapi.json`: the API's contract, `openapi.json`.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Request, Response};

use crate::http::ResponseBody;
use crate::routes::BuiltIn;

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: u64,
}

const fn asset(body: &'static str, content_type: &'static str) -> Asset {
    Asset {
        body,
        content_type,
        etag: fnv(body.as_bytes()),
    }
}

const PAGE: Asset = asset(
    include_str!("../../playground/index.html"),
    "text/html; charset=utf-8",
);
const SCRIPT: Asset = asset(
    include_str!("../../playground/app.js"),
    "text/javascript; charset=utf-8",
);
const ICON: Asset = asset(include_str!("../../playground/icon.svg"), "image/svg+xml");
// Vendored, as their npm packages publish them (playground/vendor/README.md).
const MARKDOWN: Asset = asset(
    include_str!("../../playground/vendor/markdown-it.min.js"),
    "text/javascript; charset=utf-8",
);
const SANITIZER: Asset = asset(
    include_str!("../../playground/vendor/purify.min.js"),
    "text/javascript; charset=utf-8",
);
const HIGHLIGHTER: Asset = asset(
    include_str!("../../playground/vendor/highlight.min.js"),
    "text/javascript; charset=utf-8",
);
const HIGHLIGHT_LIGHT: Asset = asset(
    include_str!("../../playground/vendor/highlight-github.min.css"),
    "text/css; charset=utf-8",
);
const HIGHLIGHT_DARK: Asset = asset(
    include_str!("../../playground/vendor/highlight-github-dark.min.css"),
    "text/css; charset=utf-8",
);
const OPENAPI: Asset = asset(include_str!("../../openapi.json"), "application/json");
const STYLE: Asset = asset(
    include_str!("../../playground/style.css"),
    "text/css; charset=utf-8",
);

/// Nothing but the page's own files, and requests to its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Serves a built-in file; a 304 when the client has it already.
pub fn serve(which: BuiltIn, request: &Request) -> Response<ResponseBody> {
    let asset = match which {
        BuiltIn::PlaygroundPage => &PAGE,
        BuiltIn::PlaygroundScript => &SCRIPT,
        BuiltIn::PlaygroundStyle => &STYLE,
        BuiltIn::PlaygroundIcon => &ICON,
        BuiltIn::PlaygroundMarkdown => &MARKDOWN,
        BuiltIn::PlaygroundSanitizer => &SANITIZER,
        BuiltIn::PlaygroundHighlighter => &HIGHLIGHTER,
        BuiltIn::PlaygroundHighlightLight => &HIGHLIGHT_LIGHT,
        BuiltIn::PlaygroundHighlightDark => &HIGHLIGHT_DARK,
        BuiltIn::OpenApi => &OPENAPI,
    };
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(ResponseBody::from(asset.body))
    };
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    // Revalidate every time: a reload is a 304, and a new deploy shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// FNV-1a over the file, at compile time: the ETag changes exactly when the file does.
const fn fnv(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}
