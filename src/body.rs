//! Request bodies: size, encoding and shape checked once, with messages that say what to fix.
//! One room, over 400 lines only by its tests (the lower half): every door reads its body
//! through these few checks.

use lambda_http::Body;
use serde_json::{Map, Value};

use crate::config::AllowedModels;
use crate::error::ApiError;

/// `{"content": string}`, the body of every seed route that takes one, plus `url` on `/img`
/// and `stream` on the turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub content: String,
    pub url: Option<String>,
    /// The caller asked for the answer as server-sent events.
    pub stream: bool,
    /// `/edit`'s place of the message to edit in the chat's transcript.
    pub index: Option<usize>,
    /// A turn's `model`, as sent: checked against `ALLOWED_MODELS` by [`model_of`].
    pub model: Option<Value>,
}

/// Which fields a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"content": string}`: the prompts and moderation.
    Content,
    /// `{"content": string, "stream"?: bool, "model"?: string}`: `/chat`.
    Turn,
    /// `{"content": string, "url": string, "stream"?: bool, "model"?: string}`: `/img`.
    ImageTurn,
    /// `{"stream"?: bool, "model"?: string}`, or no body at all: `/regenerate` (`content`
    /// is empty).
    Regenerate,
    /// `{"index": integer, "content": string, "stream"?: bool, "model"?: string}`: `/edit`.
    Edit,
}

impl Content {
    /// Parses a body of the given shape; any other field is refused, so a typo such as
    /// `"contents"` is an error rather than a silently empty message.
    pub fn parse(body: &Body, shape: Shape, limit: usize) -> Result<Content, ApiError> {
        let empty = body.as_ref().iter().all(u8::is_ascii_whitespace);
        let mut fields = match shape {
            Shape::Regenerate if empty && body.as_ref().len() <= limit => Map::new(),
            _ => json_object(body, limit)?,
        };
        let allowed: &[&str] = match shape {
            Shape::Content => &["content"],
            Shape::Turn => &["content", "stream", "model"],
            Shape::ImageTurn => &["content", "url", "stream", "model"],
            Shape::Regenerate => &["stream", "model"],
            Shape::Edit => &["index", "content", "stream", "model"],
        };
        if let Some(unknown) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(ApiError::bad_request(
                "unknown_field",
                format!(
                    "unknown field `{unknown}`; this route takes {}",
                    field_list(allowed)
                ),
            ));
        }
        let index = match (shape, fields.remove("index")) {
            (Shape::Edit, Some(index)) => match whole_number(&index) {
                Some(index) => Some(usize::try_from(index).unwrap_or(usize::MAX)),
                None => return Err(invalid_index()),
            },
            (Shape::Edit, None) => return Err(invalid_index()),
            _ => None,
        };
        let content = match shape {
            Shape::Regenerate => String::new(),
            _ => required_text(&mut fields, "content", "invalid_content")?,
        };
        let url = match shape {
            Shape::Content | Shape::Turn | Shape::Regenerate | Shape::Edit => None,
            Shape::ImageTurn => Some(image_url(required_text(
                &mut fields,
                "url",
                "invalid_url",
            )?)?),
        };
        let stream = match fields.remove("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => stream,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_stream",
                    "`stream` must be true or false",
                ))
            }
        };
        Ok(Content {
            content,
            url,
            stream,
            index,
            model: fields.remove("model"),
        })
    }
}

/// A JSON number that is a whole number from 0, as JSON Schema's `integer` takes it: `3`
/// and `3.0` alike (JSON has one kind of number).
pub fn whole_number(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(n) = n.as_u64() {
        return Some(n);
    }
    // A whole float past u64's range (an index far out of any chat's range) saturates.
    let f = n.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0).then_some(f as u64)
}

/// Writes every whole number of `value` that JSON spelled as a float (`3.0`) as an
/// integer, so that a field typed as an integer reads it.
pub fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        // Only within u64's range: a larger one stays a float, and out of an integer's range.
        Value::Number(n) if n.as_f64().is_some_and(|f| f < 18_446_744_073_709_551_616.0) => {
            if let (true, Some(whole)) = (n.is_f64(), whole_number(value)) {
                *value = Value::from(whole);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

fn invalid_index() -> ApiError {
    ApiError::BadParam {
        code: "invalid_index",
        param: "index",
        message: "`index` is required: the place of a user message in GET /<chat_id>/chat, \
                  an integer from 0"
            .to_owned(),
    }
}

/// The longest image URL a turn takes. Every later turn of the chat sends it again, so a
/// large `data:` URL would grow every request and the stored chat with it.
pub const MAX_IMAGE_URL_BYTES: usize = 4096;

/// An image URL as upstream fetches it: `http` or `https` with a host, at most
/// [`MAX_IMAGE_URL_BYTES`].
pub fn image_url(raw: String) -> Result<String, ApiError> {
    let invalid = |why: &str| {
        ApiError::bad_request(
            "invalid_url",
            format!(
                "`url` must be an http or https URL of at most {MAX_IMAGE_URL_BYTES} bytes; {why}"
            ),
        )
    };
    if raw.len() > MAX_IMAGE_URL_BYTES {
        return Err(invalid(&format!("this one has {} bytes", raw.len())));
    }
    match url::Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(raw),
        Ok(url) => Err(invalid(&format!("this one is a {}: URL", url.scheme()))),
        Err(e) => Err(invalid(&format!("this one does not parse ({e})"))),
    }
}

fn field_list(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// The body as a JSON object, within `limit` bytes.
pub fn json_object(
    body: &(impl AsRef<[u8]> + ?Sized),
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    let bytes: &[u8] = body.as_ref();
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; send a JSON object such as {\"content\": \"...\"}",
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ApiError::bad_request("invalid_encoding", "request body is not valid UTF-8")
    })?;
    match serde_json::from_str(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::bad_request(
            "invalid_json",
            "request body must be a JSON object such as {\"content\": \"...\"}",
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

fn required_text(
    fields: &mut Map<String, Value>,
    name: &str,
    code: &'static str,
) -> Result<String, ApiError> {
    match fields.remove(name) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(Value::String(_)) => Err(ApiError::bad_request(
            code,
            format!("`{name}` must not be empty"),
        )),
        Some(_) => Err(ApiError::bad_request(
            code,
            format!("`{name}` must be a string"),
        )),
        None => Err(ApiError::bad_request(code, format!("`{name}` is required"))),
    }
}

/// The model to ask: the caller's, when `ALLOWED_MODELS` allows it, else `CHAT_MODEL`.
pub fn model(
    params: &mut Map<String, Value>,
    allowed: &AllowedModels,
    default: &str,
) -> Result<String, ApiError> {
    model_of(params.remove("model"), allowed, default)
}

/// A `model` field as sent (`None`: absent), as [`model`] reads it.
pub fn model_of(
    model: Option<Value>,
    allowed: &AllowedModels,
    default: &str,
) -> Result<String, ApiError> {
    match model {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(model)) if allowed.allows(&model) => Ok(model),
        Some(Value::String(model)) => Err(ApiError::bad_request(
            "model_not_allowed",
            format!("model `{model}` is not allowed here; GET /v1/models lists the ones that are"),
        )),
        Some(_) => Err(ApiError::bad_request(
            "invalid_model",
            "`model` must be a string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, shape: Shape) -> Result<Content, ApiError> {
        Content::parse(&Body::from(raw), shape, 1024)
    }

    fn code_of(result: Result<Content, ApiError>) -> String {
        result.unwrap_err().code().to_owned()
    }

    #[test]
    fn content_is_read() {
        let parsed = parse(r#"{"content": "hi"}"#, Shape::Content).unwrap();
        assert_eq!(parsed.content, "hi");
        assert_eq!(parsed.url, None);
    }

    #[test]
    fn url_is_read_for_images() {
        let parsed = parse(
            r#"{"content": "what?", "url": "https://x/y.png"}"#,
            Shape::ImageTurn,
        )
        .unwrap();
        assert_eq!(parsed.url.as_deref(), Some("https://x/y.png"));
    }

    #[test]
    fn each_bad_body_has_its_code() {
        let cases = [
            ("", "invalid_json"),
            ("not json", "invalid_json"),
            ("[1]", "invalid_json"),
            ("{}", "invalid_content"),
            (r#"{"content": 5}"#, "invalid_content"),
            (r#"{"content": "  "}"#, "invalid_content"),
            (r#"{"content": null}"#, "invalid_content"),
            (r#"{"content": "x", "extra": 1}"#, "unknown_field"),
        ];
        for (raw, code) in cases {
            assert_eq!(code_of(parse(raw, Shape::Content)), code, "{raw}");
        }
        assert_eq!(
            code_of(parse(r#"{"content": "x"}"#, Shape::ImageTurn)),
            "invalid_url"
        );
        assert_eq!(
            code_of(parse(r#"{"content": "x", "url": 3}"#, Shape::ImageTurn)),
            "invalid_url"
        );
    }

    #[test]
    fn image_urls_are_http_or_https_and_bounded() {
        let longest = format!("https://x.example/{}", "a".repeat(MAX_IMAGE_URL_BYTES - 18));
        assert_eq!(longest.len(), MAX_IMAGE_URL_BYTES);
        for good in [
            "https://upload.wikimedia.org/cat.jpg",
            "http://localhost:8080/x.png?sig=a%2Fb",
            longest.as_str(),
        ] {
            assert_eq!(image_url(good.to_owned()).unwrap(), good);
        }
        let too_long = format!("{longest}b");
        let data = format!("data:image/png;base64,{}", "A".repeat(100));
        for bad in [
            too_long.as_str(),
            data.as_str(),
            "ftp://x.example/a.png",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://",
            "not a url",
            "/relative.png",
        ] {
            assert_eq!(
                image_url(bad.to_owned()).unwrap_err().code(),
                "invalid_url",
                "{bad}"
            );
        }
    }

    #[test]
    fn turns_take_stream_as_a_boolean() {
        assert!(
            parse(r#"{"content": "x", "stream": true}"#, Shape::Turn)
                .unwrap()
                .stream
        );
        assert!(
            !parse(r#"{"content": "x", "stream": false}"#, Shape::Turn)
                .unwrap()
                .stream
        );
        assert!(!parse(r#"{"content": "x"}"#, Shape::Turn).unwrap().stream);
        assert_eq!(
            code_of(parse(r#"{"content": "x", "stream": "yes"}"#, Shape::Turn)),
            "invalid_stream"
        );
        assert_eq!(
            code_of(parse(r#"{"content": "x", "stream": true}"#, Shape::Content)),
            "unknown_field"
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        let body = Body::from(vec![b'{', 0xff, 0xfe, b'}']);
        assert_eq!(
            Content::parse(&body, Shape::Content, 1024)
                .unwrap_err()
                .code(),
            "invalid_encoding"
        );
    }

    #[test]
    fn bodies_over_the_limit_are_too_large() {
        let raw = format!(r#"{{"content": "{}"}}"#, "a".repeat(2000));
        assert_eq!(code_of(parse(&raw, Shape::Content)), "body_too_large");
    }

    #[test]
    fn deep_nesting_is_refused_without_a_crash() {
        let raw = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = Body::from(raw);
        assert_eq!(
            Content::parse(&body, Shape::Content, 1 << 20)
                .unwrap_err()
                .code(),
            "invalid_json"
        );
    }
}

#[cfg(test)]
mod whole_number_tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_however_json_spells_them() {
        for (text, expected) in [
            ("3", Some(3)),
            ("3.0", Some(3)),
            ("1848719893873583.0", Some(1_848_719_893_873_583)),
            ("97688152665214764974080", Some(u64::MAX)),
            ("3.5", None),
            ("-1", None),
            ("\"3\"", None),
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(whole_number(&value), expected, "{text}");
        }
        let mut tokens = serde_json::json!([1.0, 2, 18446744073709551616.0, 0.5]);
        whole_numbers_as_integers(&mut tokens);
        assert_eq!(tokens.to_string(), "[1,2,1.8446744073709552e+19,0.5]");
    }
}
