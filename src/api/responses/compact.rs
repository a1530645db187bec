//! `POST /v1/responses/compact`: a chain (or an input) compacted, as OpenAI's Responses API
//! defines it. A `previous_response_id` names one of the caller's stored responses; the
//! chain up to it, then `input`, go upstream whole (OpenAI keeps nothing, so its own
//! `previous_response_id` could name nothing there), and upstream's `response.compaction`
//! is the answer: the user messages kept, then one encrypted `compaction` item standing
//! for the rest, which the caller sends as the input of its next turns. Nothing is stored;
//! the tokens are counted to the caller and its limits hold, as for any call.

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

/// What `/v1/responses` takes and `/responses/compact` does not, and the proxy reads
/// itself: refused as OpenAI refuses a parameter it does not know (the rest go upstream,
/// which refuses its own).
const NOT_COMPACT: [&str; 3] = ["stream", "store", "conversation"];

/// `POST /v1/responses/compact`. The rate limit is counted in the read's round trip.
pub async fn compact(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let rate_limit = app.guard.rate_limit(tenant, request);
    let mut params = json_object(request.body(), app.max_body_bytes)?;
    if let Some(name) = NOT_COMPACT.iter().find(|name| params.contains_key(**name)) {
        return Err(ApiError::BadParam {
            code: "unknown_parameter",
            param: name,
            message: format!(
                "Unknown parameter: '{name}'. /v1/responses/compact compacts \
                 `previous_response_id`'s chain and `input`, and streams nothing."
            ),
        });
    }
    let asked = request::read(&mut params, request::Input::WithChainOptional)?;
    let model = crate::body::model(
        &mut params,
        &app.allowed_models,
        app.upstream.model_name(crate::upstream::Model::Chat),
    )?;
    let (read, previous) = match &asked.previous {
        Some((_, turn, chat)) => (Some(chat.clone()), Some(turn.clone())),
        None => (None, None),
    };
    let keep = idempotency::key_of(request, None)?.map(|key| {
        let fingerprint = idempotency::fingerprint(&[b"compact", request.body().as_ref()]);
        let render = |answered: &Answered| {
            answered
                .raw
                .as_ref()
                .map(|raw| raw.get().to_owned())
                .unwrap_or_default()
        };
        Keep::new(key, fingerprint, Arc::new(render))
    });
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
            prompts: false,
            store: false,
            previous,
            conversation: None,
            fields: Map::<String, Value>::new(),
            call: ResponsesCall::Compact,
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
