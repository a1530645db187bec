//! The Responses API's calls that answer from an input the proxy assembles and keep
//! nothing: `POST /v1/responses/compact` and `POST /v1/responses/input_tokens`.
//!
//! A `previous_response_id` names one of the caller's stored responses (and, for a count, a
//! `conversation` one of its conversations); what it stands for, then `input`, go upstream
//! whole, since OpenAI keeps nothing of the proxy's chains that its own ids could name.
//! A compaction is answered with upstream's `response.compaction` as it came (the user
//! messages kept, then one encrypted `compaction` item standing for the rest, which the
//! caller sends as the input of its next turns), its tokens counted to the caller; a count
//! with upstream's `response.input_tokens`, which costs nothing. Both run within the
//! caller's limits, as the turn they prepare would.

use std::sync::Arc;

use lambda_http::{Request, Response};
use serde_json::{Map, Value};

use super::request;
use crate::app::App;
use crate::body::json_object;
use crate::chat::{Exchange, StoredResponse, Tenant};
use crate::error::ApiError;
use crate::guard::source_ip;
use crate::http::{json_body, replayed, ResponseBody};
use crate::idempotency;
use crate::request_log::RequestLog;
use crate::turn::{Answered, Ask, Keep, Ran, ResponsesCall, ResponsesTurn};

/// `POST /v1/responses/compact`.
pub async fn compact(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    answer(app, tenant, request, log, ResponsesCall::Compact).await
}

/// `POST /v1/responses/input_tokens`.
pub async fn input_tokens(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    answer(app, tenant, request, log, ResponsesCall::CountTokens).await
}

/// What `/v1/responses` takes and the call does not, and the proxy reads itself: refused
/// as OpenAI refuses a parameter it does not know (the rest go upstream, which refuses its
/// own).
fn not_taken(call: ResponsesCall) -> &'static [&'static str] {
    match call {
        ResponsesCall::Compact => &["stream", "store", "conversation"],
        _ => &["stream", "store"],
    }
}

/// The rate limit is counted in the read's round trip.
async fn answer(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
    call: ResponsesCall,
) -> Result<Response<ResponseBody>, ApiError> {
    let rate_limit = app.guard.rate_limit(tenant, request);
    let mut params = json_object(request.body(), app.max_body_bytes)?;
    if let Some(name) = not_taken(call)
        .iter()
        .find(|name| params.contains_key(**name))
    {
        return Err(ApiError::BadParam {
            code: "unknown_parameter",
            param: name,
            message: format!(
                "Unknown parameter: '{name}'. This call answers from `previous_response_id`'s \
                 chain (or a conversation, for a count) and `input`; it keeps and streams \
                 nothing."
            ),
        });
    }
    let asked = request::read(&mut params, request::Input::WithChainOptional)?;
    let model = crate::body::model(
        &mut params,
        &app.allowed_models,
        app.upstream.model_name(crate::upstream::Model::Chat),
    )?;
    let (read, previous) = asked.reads();
    // A compaction is paid for: a retry with the same key gets the same one. A count is
    // free, and answered again.
    let keep = match call {
        ResponsesCall::Compact => idempotency::key_of(request, None)?.map(|key| {
            let fingerprint = idempotency::fingerprint(&[b"compact", request.body().as_ref()]);
            let render = |answered: &Answered| {
                answered
                    .raw
                    .as_ref()
                    .map(|raw| raw.get().to_owned())
                    .unwrap_or_default()
            };
            Keep::new(key, fingerprint, Arc::new(render))
        }),
        _ => None,
    };
    let exchange = Exchange {
        input: asked.input,
        response: StoredResponse::none(),
    };
    let ask = Ask {
        tenant,
        chat: read.as_ref(),
        asked: exchange.asked(),
        prompt: None,
        resent: None,
        redo: None,
        responses: Some(ResponsesTurn {
            input: exchange.input,
            instructions: asked.instructions,
            prompts: asked.conversation.is_some(),
            store: false,
            previous,
            conversation: asked.conversation,
            fields: Map::<String, Value>::new(),
            call,
            fixed: None,
        }),
        model: &model,
        params: Some(&params),
        deadline: app.guard.deadline(request, false),
        ip: source_ip(request),
        keep,
    };
    match app.turns.run(ask, rate_limit, log).await? {
        Ran::Answered(answered) => {
            let body = answered.raw.map(|raw| raw.get().to_owned());
            Ok(json_body(body.unwrap_or_default().into_bytes()))
        }
        Ran::Replayed(answer) => Ok(replayed(json_body(answer.into_bytes()))),
    }
}
