//! Background responses (`background: true` on `POST /v1/responses`), as OpenAI defines them
//! but without OpenAI keeping anything: the proxy answers at once with the response
//! `queued` under its own id, and hands the run to another invocation of the function
//! (`handoff.rs`: Lambda's Invoke API), since nothing outlives the invocation that answered.
//!
//! - **Queue** (this invocation): the turn's read, with every check, limit and claim a turn
//!   makes (a refusal keeps its status), then the run kept `queued` with its ticket: the
//!   request as sent, and what the read decided (the answer's id, the chain it lands in).
//! - **Run** (the next invocation, `run.rs`): makes the turn, recording what upstream
//!   streams as it comes.
//! - **Follow** (`follow.rs`): a streamed background response, and one resumed after a drop,
//!   read from what the run records.
//! - **Read** (`GET /v1/responses/{id}`, `stored.rs`): the stored turn once there is one;
//!   before, the run as it stands ([`answer_of`]); a run whose deadline passed reads
//!   `failed`.
//! - **Cancel** ([`cancel`]): a queued run ends at once; a running one is asked to stop and
//!   ends at its next batch, keeping what it streamed as the cancelled response's output.

use std::time::Duration;

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::follow::{streamed, Following};
use super::stored::{named, not_found, wants_encrypted};
use super::{hide_encrypted_reasoning, Reading};
use crate::app::App;
use crate::chat::{parse_response_id, Tenant};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::guard::source_ip;
use crate::http::{json_body, json_response, replayed, ResponseBody};
use crate::live::BATCH_EVERY;
use crate::request_log::RequestLog;
use crate::store::{RunState, RunStatus};
use crate::turn::{Keep, Queuing};

/// How long Lambda may hold a run's event before it starts (the template's
/// `MaximumEventAgeInSeconds`), and a margin: a run not started by then has failed.
const START_WITHIN: Duration = Duration::from_secs(70);

/// How long a cancellation waits for a running run to stop and keep what it streamed.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The event a run's invocation gets: which run, whose. No HTTP event has its field.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunEvent {
    pub(super) chat_proxy_run: RunRef,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RunRef {
    /// The caller's name; `None` on an open API.
    pub(super) caller: Option<String>,
    /// The chat the answer lands in, which keeps the run.
    pub(super) chat: String,
    /// The run's id: its answer's turn id.
    pub(super) id: String,
}

/// What a run is made from, kept sealed with it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Ticket {
    /// The request's body as the caller sent it: the run reads it again as `create` did.
    pub(super) body: String,
    /// The caller's address, which an open API counts tokens by.
    pub(super) ip: Option<String>,
    /// What the queueing read decided.
    pub(super) turn: String,
    pub(super) chain: Option<String>,
    /// The response as answered when it was queued.
    pub(super) response: Value,
}

/// Queues a background response and hands its run over; answers it `queued`.
pub(super) async fn queue(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    mut reading: Reading,
    keep: Option<Keep>,
    rate_limit: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    if !app.background {
        return Err(ApiError::BadParam {
            code: "unsupported_value",
            param: "background",
            message: "background responses need Redis (REDIS_URL): another invocation makes \
                      them, and chats kept in this process's memory are not shared with it"
                .to_owned(),
        });
    }
    let body = String::from_utf8_lossy(request.body().as_ref()).into_owned();
    let ip = source_ip(request).map(str::to_owned);
    let template = queued_object(&reading);
    let start_by = now_ms() + millis(START_WITHIN);
    // The read's claims hold as long as the run may: until it starts, and its whole length.
    let deadline = Instant::now() + START_WITHIN + app.guard.run_limit();
    let ask = reading.ask(tenant, deadline, ip.as_deref(), keep, None);
    let queuing = app
        .turns
        .queue(ask, rate_limit, log, start_by, |fixed, answer_id| {
            let mut response = template.clone();
            response["id"] = json!(answer_id);
            let ticket = Ticket {
                body,
                ip: ip.clone(),
                turn: fixed.turn_id.clone(),
                chain: fixed.chain.as_ref().map(|chain| chain.as_str().to_owned()),
                response,
            };
            serde_json::to_string(&ticket)
        })
        .await?;
    let stream = reading.asked.stream;
    let hide_reasoning = !reading.asked.wants_encrypted_reasoning;
    let queued = match queuing {
        Queuing::Queued(queued) => queued,
        // A retry: the same run, followed from its start when streamed.
        Queuing::Replayed(answer) if stream => {
            let id = serde_json::from_str::<Value>(&answer)
                .ok()
                .and_then(|queued| queued["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let (turn, chat) = parse_response_id(&id).ok_or(ApiError::Internal)?;
            let following = Following {
                tenant: tenant.clone(),
                chat,
                id: turn.to_owned(),
                after: None,
                hide_reasoning,
            };
            return Ok(replayed(streamed(app, request, following)));
        }
        Queuing::Replayed(answer) => return Ok(replayed(json_body(answer.into_bytes()))),
    };
    let mut answer = template;
    answer["id"] = json!(queued.answer_id);
    let event = RunEvent {
        chat_proxy_run: RunRef {
            caller: match tenant {
                Tenant::Open => None,
                Tenant::Caller(name) => Some(name.clone()),
            },
            chat: queued.kept_in.as_str().to_owned(),
            id: queued.fixed.turn_id.clone(),
        },
    };
    let payload = serde_json::to_vec(&event).map_err(|_| ApiError::Internal)?;
    let handed = log
        .upstream(app.handoff.invoke(&function_of(request), payload))
        .await;
    if let Err(error) = handed {
        let failed = ended_object(&answer, RunStatus::Failed, Some(&error.to_string()));
        if app.turns.abandon(&queued, &failed.to_string()).await {
            return Err(error.into());
        }
        // Lambda took it after all (its answer was lost): the run is under way.
        tracing::warn!(%error, "Lambda's answer to a hand-over was lost, but the run started");
    }
    let answer = answer.to_string();
    app.turns.handed_over(&queued, &answer).await;
    if stream {
        let following = Following {
            tenant: tenant.clone(),
            chat: queued.kept_in.clone(),
            id: queued.fixed.turn_id.clone(),
            after: None,
            hide_reasoning,
        };
        return Ok(streamed(app, request, following));
    }
    Ok(json_body(answer.into_bytes()))
}

/// The function to invoke for a run: this one, as it was invoked (an alias or a version
/// invokes itself), else by the name Lambda gives it.
fn function_of(request: &Request) -> String {
    request
        .lambda_context_ref()
        .map(|context| context.invoked_function_arn.clone())
        .filter(|arn| !arn.is_empty())
        .or_else(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok())
        .unwrap_or_default()
}

/// The response as answered when queued: what the request set, `queued`, no output yet.
fn queued_object(reading: &Reading) -> Value {
    let mut object: Map<String, Value> = reading
        .params
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "include" | "stream_options"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    object.extend(reading.fields.clone());
    object.insert("object".to_owned(), json!("response"));
    object.insert("created_at".to_owned(), json!(now_ms() / 1000));
    object.insert("status".to_owned(), json!("queued"));
    object.insert("model".to_owned(), json!(reading.model));
    object.insert("output".to_owned(), json!([]));
    object.insert("usage".to_owned(), Value::Null);
    object.insert("error".to_owned(), Value::Null);
    object.insert("incomplete_details".to_owned(), Value::Null);
    Value::Object(object)
}

/// A response that ended without upstream's own answer: cancelled, or failed (`why`).
pub(super) fn ended_object(response: &Value, status: RunStatus, why: Option<&str>) -> Value {
    let mut ended = response.clone();
    ended["status"] = json!(status.as_str());
    if let Some(why) = why {
        ended["error"] = json!({"code": "server_error", "message": why});
    }
    ended
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A run's response as its caller reads it before (or without) a stored turn: as it
/// ended, or as queued with where it stands now.
pub(super) fn answer_of(run: RunState) -> Option<Value> {
    let run = run.as_of(now_ms());
    if let Some(response) = &run.response {
        return serde_json::from_str(response).ok();
    }
    let ticket: Ticket = serde_json::from_str(&run.ticket).ok()?;
    Some(match run.status {
        // Its answer is a turn of its chat: read there, and gone once it is deleted.
        RunStatus::Completed => return None,
        RunStatus::Failed => ended_object(
            &ticket.response,
            RunStatus::Failed,
            Some("the background run stopped before its answer was complete (its invocation timed out or failed)"),
        ),
        status => {
            let mut response = ticket.response;
            response["status"] = json!(status.as_str());
            response
        }
    })
}

/// `POST /v1/responses/{id}/cancel`: a queued run ends at once; a running one is asked to
/// stop, and answered once it has (or, past [`CANCEL_WAIT`], as it stands). Cancelling a
/// cancelled response answers it again; one that was not made in the background, or has
/// ended otherwise, cannot be.
pub async fn cancel(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let not_found = || not_found(id);
    let named = named(app, tenant, id, request, log).await?;
    let (turn_id, chat) = (named.turn_id.as_str(), &named.chat);
    let Some(run) = named.run else {
        return Err(match named.turn {
            Some(_) => ApiError::bad_request(
                "invalid_request",
                "only a response created with `background: true` can be cancelled",
            ),
            None => not_found(),
        });
    };
    let mut run = run.as_of(now_ms());
    if !run.status.ended() {
        let ticket: Ticket = serde_json::from_str(&run.ticket).map_err(|_| ApiError::Internal)?;
        let cancelled = ended_object(&ticket.response, RunStatus::Cancelled, None).to_string();
        let changed = log
            .redis(app.store.cancel_run(tenant, chat, turn_id, &cancelled))
            .await?;
        run = changed.ok_or_else(not_found)?.as_of(now_ms());
        if run.status == RunStatus::Cancelled {
            app.turns.free_queued(tenant, chat, turn_id).await;
        }
        let waited = Instant::now() + CANCEL_WAIT;
        while !run.status.ended() && Instant::now() < waited {
            tokio::time::sleep(BATCH_EVERY).await;
            match log
                .redis(app.store.run_state(tenant, chat, turn_id))
                .await?
            {
                Some(now) => run = now.as_of(now_ms()),
                None => return Err(not_found()),
            }
        }
    }
    match run.status {
        RunStatus::Completed | RunStatus::Failed | RunStatus::Incomplete => {
            Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "the response has ended ({}): it cannot be cancelled",
                    run.status.as_str()
                ),
            ))
        }
        _ => {
            let mut response = answer_of(run).ok_or(ApiError::Internal)?;
            if !wants_encrypted(request) {
                hide_encrypted_reasoning(&mut response);
            }
            Ok(json_response(StatusCode::OK, &response))
        }
    }
}
