//! What chats and callers have spent: `GET /<chat_id>/usage` and `GET /usage`.

use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde::Serialize;

use crate::app::App;
use crate::chat::ChatId;
use crate::chat::Tenant;
use crate::clock::UtcDay;
use crate::error::ApiError;
use crate::http::{json_response, ResponseBody};
use crate::request_log::RequestLog;
use crate::store::PeriodUsage;

/// `GET /<chat_id>/usage`: the chat's tokens over its life, cleared turns included.
pub async fn chat(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let limit = app.guard.rate_limit(tenant, request);
    let usage = async { tokio::join!(limit, app.store.chat_usage(tenant, chat)) };
    let (allowed, usage) = log.redis(usage).await;
    allowed?;
    Ok(json_response(StatusCode::OK, &usage?))
}

/// `GET /usage`: the caller's tokens today and this month (UTC), overall and per model.
pub async fn caller(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let day = UtcDay::today();
    let limit = app.guard.rate_limit(tenant, request);
    let usage = async { tokio::join!(limit, app.store.caller_usage(tenant, &day)) };
    let (allowed, usage) = log.redis(usage).await;
    allowed?;
    let usage = usage?;
    Ok(json_response(
        StatusCode::OK,
        &CallerUsage {
            day: Period {
                date: Some(&day.date),
                month: None,
                usage: &usage.day,
            },
            month: Period {
                date: None,
                month: Some(&day.month),
                usage: &usage.month,
            },
        },
    ))
}

#[derive(Serialize)]
struct CallerUsage<'a> {
    day: Period<'a>,
    month: Period<'a>,
}

#[derive(Serialize)]
struct Period<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    month: Option<&'a str>,
    #[serde(flatten)]
    usage: &'a PeriodUsage,
}
