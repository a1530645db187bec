//! `StoreError`: storage failed, and how that reaches the caller.

use crate::error::ApiError;

/// Storage failed: the database is unreachable, timed out, or answered with something the
/// proxy did not write; or a sealed value did not open. The message is for logs, never for
/// clients.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    message: String,
    unreadable: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            unreadable: false,
        }
    }

    /// A sealed value that does not open (`SEAL_KEYS`): the message names its key and the
    /// key id it was sealed with, never the value.
    pub fn unreadable(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            unreadable: true,
        }
    }

    pub fn is_unreadable(&self) -> bool {
        self.unreadable
    }
}

/// Storage failing is the caller's 503: retry shortly; a value that does not open is a
/// 500 of its own (a retry cannot help). The cause goes to the log only.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.unreadable {
            return ApiError::Unreadable(Box::new(error));
        }
        ApiError::Storage(Box::new(error))
    }
}
