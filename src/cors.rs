//! CORS for browser callers (`CORS_ALLOW_ORIGINS`): preflights answered, and the allowed
//! origin echoed on every answer. Off unless origins are configured.

use lambda_http::http::{header, HeaderMap, HeaderValue, StatusCode};
use lambda_http::Response;

use crate::http::ResponseBody;

/// The origins allowed to call from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all (the default): browsers refuse cross-origin calls.
    #[default]
    Off,
    /// `*`: any origin (credentials are sent by header, not cookies, so this is allowed).
    AnyOrigin,
    /// Exactly these origins, e.g. `https://app.example.com`.
    Origins(Vec<String>),
}

const ALLOWED_HEADERS: &str =
    "authorization, content-type, x-api-key, accept, x-chat-id, idempotency-key";
const PREFLIGHT_MAX_AGE: &str = "600";

impl Cors {
    /// Parses `CORS_ALLOW_ORIGINS`: a comma-separated list of origins, or `*`.
    pub fn parse(raw: &str) -> Result<Cors, String> {
        let origins: Vec<String> = raw
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            return if origins.len() == 1 {
                Ok(Cors::AnyOrigin)
            } else {
                Err("CORS_ALLOW_ORIGINS is either * or a list of origins, not both".to_owned())
            };
        }
        if let Some(bad) = origins.iter().find(|o| {
            !(o.starts_with("https://") || o.starts_with("http://"))
                || HeaderValue::from_str(o).is_err()
        }) {
            return Err(format!(
                "CORS_ALLOW_ORIGINS: {bad:?} is not an origin like https://app.example.com"
            ));
        }
        Ok(if origins.is_empty() {
            Cors::Off
        } else {
            Cors::Origins(origins)
        })
    }

    pub fn is_on(&self) -> bool {
        *self != Cors::Off
    }

    /// The `Access-Control-Allow-Origin` value for this request's `Origin`, if allowed.
    fn allowed_origin(&self, request_headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = request_headers.get(header::ORIGIN)?;
        match self {
            Cors::Off => None,
            Cors::AnyOrigin => Some(HeaderValue::from_static("*")),
            Cors::Origins(origins) => {
                let origin_text = origin.to_str().ok()?;
                origins
                    .iter()
                    .any(|o| o == origin_text)
                    .then(|| origin.clone())
            }
        }
    }

    /// The answer to a preflight `OPTIONS` for a path that accepts `allow`.
    pub fn preflight(
        &self,
        request_headers: &HeaderMap,
        allow: &'static str,
    ) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(allow),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        self.decorate(request_headers, &mut response);
        response
    }

    /// Adds the CORS headers an allowed origin needs to read `response`.
    pub fn decorate<B>(&self, request_headers: &HeaderMap, response: &mut Response<B>) {
        if !self.is_on() {
            return;
        }
        let headers = response.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = self.allowed_origin(request_headers) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(
                    "retry-after, www-authenticate, x-chat-stored, x-chat-live, x-chat-temporary, \
                     idempotent-replayed",
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse() {
        assert_eq!(Cors::parse("").unwrap(), Cors::Off);
        assert_eq!(Cors::parse("*").unwrap(), Cors::AnyOrigin);
        assert_eq!(
            Cors::parse("https://a.example, http://localhost:3000/").unwrap(),
            Cors::Origins(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ])
        );
        assert!(Cors::parse("a.example").is_err());
        assert!(Cors::parse("*, https://a.example").is_err());
    }
}
