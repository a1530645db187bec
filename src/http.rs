//! Response helpers shared by every route: JSON bodies and their headers.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

/// A JSON response. Serialising the proxy's own types cannot fail; if it ever did, the
/// client still gets a JSON error rather than a panic.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":{"message":"something went wrong","type":"api_error","param":null,"code":"internal_error"}}"#
                .to_vec(),
        ),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{}`, the answer of every route that only writes.
pub fn empty_object() -> Response<Body> {
    json_response(StatusCode::OK, &serde_json::json!({}))
}
