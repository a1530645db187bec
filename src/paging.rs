//! The paging of OpenAI's list routes (`limit`, `order`, `after`), and the query values
//! they and others read.

use lambda_http::Request;
use serde_json::{json, Value};

use crate::error::ApiError;

/// The query's values of `name`, percent-decoded (`include[]` and `include` alike).
pub fn query_values<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = String> + 'a {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = key.strip_suffix("[]").unwrap_or(key);
            let key = key.strip_suffix("%5B%5D").unwrap_or(key);
            (key == name).then(|| {
                let value = value.replace('+', " ");
                percent_encoding::percent_decode_str(&value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
}

/// A query value that is `true` or `false` (`false` when absent), as `stream` is.
pub fn query_flag(request: &Request, name: &'static str) -> Result<bool, ApiError> {
    match query_values(request, name).last().as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::BadParam {
            code: "invalid_value",
            param: name,
            message: format!("`{name}` must be true or false"),
        }),
    }
}

/// A position in a stream of events to start after (0 or more; a number past any event's
/// is after them all), as `starting_after` and `after` are; `what` says what it counts.
pub fn query_position(
    request: &Request,
    name: &'static str,
    what: &str,
) -> Result<Option<u64>, ApiError> {
    match query_values(request, name).last() {
        None => Ok(None),
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(n.parse::<u64>().unwrap_or(u64::MAX)))
        }
        Some(_) => Err(ApiError::BadParam {
            code: "invalid_value",
            param: name,
            message: format!("`{name}` must be {what} (0 or more)"),
        }),
    }
}

/// A list's paging, as OpenAI's list routes take it.
pub struct Paging {
    pub limit: usize,
    pub descending: bool,
    pub after: Option<String>,
}

impl Paging {
    /// `limit` (1 to 100, default 20), `order` (`asc` or `desc`, default `desc`), `after`.
    pub fn of(request: &Request) -> Result<Paging, ApiError> {
        let invalid = |param: &'static str, message: &str| ApiError::BadParam {
            code: "invalid_value",
            param,
            message: message.to_owned(),
        };
        let limit = match query_values(request, "limit").next() {
            None => 20,
            Some(limit) => match limit.parse::<usize>() {
                Ok(limit @ 1..=100) => limit,
                _ => return Err(invalid("limit", "`limit` must be an integer from 1 to 100")),
            },
        };
        let descending = match query_values(request, "order").next().as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => return Err(invalid("order", "`order` must be `asc` or `desc`")),
        };
        Ok(Paging {
            limit,
            descending,
            after: query_values(request, "after").next(),
        })
    }

    /// One page of `items` (each with an `id`, oldest first), in OpenAI's list shape.
    pub fn page(&self, mut items: Vec<Value>) -> Value {
        if self.descending {
            items.reverse();
        }
        let start = match &self.after {
            Some(after) => items
                .iter()
                .position(|item| item["id"] == after.as_str())
                .map_or(items.len(), |at| at + 1),
            None => 0,
        };
        let rest = items.len().saturating_sub(start);
        let data: Vec<Value> = items.into_iter().skip(start).take(self.limit).collect();
        list(data, rest > self.limit)
    }
}

/// OpenAI's list shape for one page of `data` (each with an `id`).
pub fn list(data: Vec<Value>, has_more: bool) -> Value {
    json!({
        "object": "list",
        "first_id": data.first().map_or(Value::Null, |item| item["id"].clone()),
        "last_id": data.last().map_or(Value::Null, |item| item["id"].clone()),
        "data": data,
        "has_more": has_more,
    })
}
