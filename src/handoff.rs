//! Handing work to another invocation of this function: a background response is run by a
//! second invocation, since on Lambda nothing outlives the invocation that answered its
//! caller. Lambda's Invoke API with `InvocationType: Event` queues the payload and answers
//! 202 at once; Lambda then invokes the function with it (the template keeps no retries and
//! drops an event not started within a minute, `EventInvokeConfig`). The client is built on
//! first use, not at cold start: a function that never runs in the background never loads
//! the AWS settings for it. The SDK honours `AWS_ENDPOINT_URL_LAMBDA`, so a local run or a
//! test points it at a stand-in that really invokes the function again.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use tokio::sync::OnceCell;

/// Why a hand-over failed: the AWS error's code and message (never a credential).
#[derive(Debug, thiserror::Error)]
#[error("Lambda did not take the background run: {0}")]
pub struct HandoffError(String);

/// The Invoke API's client, built once on first use.
#[derive(Default)]
pub struct Handoff {
    client: OnceCell<aws_sdk_lambda::Client>,
}

impl Handoff {
    /// Queues `payload` as an asynchronous invocation of `function` (its ARN as this
    /// invocation was invoked, so an alias or version invokes itself); Ok once Lambda has
    /// taken it (202).
    pub async fn invoke(&self, function: &str, payload: Vec<u8>) -> Result<(), HandoffError> {
        let client = self
            .client
            .get_or_init(|| async {
                let sdk = crate::config::secrets::aws_loader().load().await;
                aws_sdk_lambda::Client::new(&sdk)
            })
            .await;
        let sent = client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|error| HandoffError(crate::config::secrets::describe(&error)))?;
        match sent.status_code() {
            202 => Ok(()),
            status => Err(HandoffError(format!("Invoke answered {status}, not 202"))),
        }
    }
}

impl From<HandoffError> for crate::error::ApiError {
    fn from(error: HandoffError) -> Self {
        crate::error::ApiError::Handoff(Box::new(error))
    }
}
