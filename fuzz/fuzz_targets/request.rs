//! Fuzzes everything that reads a request before any I/O: the API Gateway event itself,
//! routing (method and path), authentication and CORS headers, and the JSON body.
//! Run with `make fuzz`. The property test in tests/api/properties.rs covers the same
//! ground, through the whole handler, on every `make test`.

#![no_main]

use std::sync::OnceLock;

use chat_proxy::config::Callers;
use chat_proxy::body::{Content, Shape};
use chat_proxy::cors::Cors;
use chat_proxy::routes::Route;
use lambda_http::http::{HeaderMap, HeaderValue, Method};
use lambda_http::Body;
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
    Method::HEAD,
];

fn callers() -> &'static Callers {
    static CALLERS: OnceLock<Callers> = OnceLock::new();
    CALLERS.get_or_init(|| Callers::parse("alice:sk-alice-1,bob:sk-bob-2").unwrap_or_default())
}

fuzz_target!(|data: &[u8]| {
    // Whole input as an API Gateway event: must parse or fail, never panic.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(request) = lambda_http::request::from_str(text) {
            let _ = Route::parse(request.method(), request.uri().path());
        }
    }

    // Or as parts: a method byte, then path, header value and body split on NUL bytes.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(selector) % METHODS.len()];
    let mut parts = rest.splitn(3, |byte| *byte == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let _ = Route::parse(method, &path);

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        headers.insert("authorization", value.clone());
        headers.insert("x-api-key", value.clone());
        headers.insert("origin", value);
    }
    let _ = chat_proxy::guard::authenticate(callers(), &headers);
    if let Ok(cors) = Cors::parse(&String::from_utf8_lossy(header)) {
        let mut response = cors.preflight(&headers, "GET, POST");
        cors.decorate(&headers, &mut response);
    }

    let body = Body::from(body.to_vec());
    let _ = Content::parse(&body, Shape::Content, 4096);
    let _ = Content::parse(&body, Shape::Turn, 4096);
    let _ = Content::parse(&body, Shape::ImageTurn, 4096);
});
