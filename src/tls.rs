//! The process's one TLS stack, ring, for HTTPS to OpenAI and AWS and `rediss://` alike.

/// Makes ring the process's TLS provider. Call before building any client; calling again is
/// harmless (the first one stays).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
