//! The path a request is routed on: the event's raw path, never the URI lambda_http rebuilt
//! from it (that went through a URL parser that removes dot segments, so `/../system` would
//! arrive as `/system`), without API Gateway's stage where the event says it is there.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

/// The path to route on: the event's raw path, without the API Gateway stage when the event
/// carries it (HTTP API events on a named stage, REST events whose path includes the stage),
/// and without any normalisation. Requests built without an event use their URI's path.
pub fn request_path(request: &Request) -> &str {
    let raw = request.raw_http_path();
    let path = if raw.is_empty() {
        request.uri().path()
    } else {
        raw
    };
    match stage_in_path(request) {
        Some(stage) => strip_stage(path, stage),
        None => path,
    }
}

/// The stage named in `path`'s first segment, when the event says it is there.
///
/// Only a request to API Gateway's own `execute-api` host names the stage in its path.
/// Behind a custom domain name the base path mapping stands in for the stage, and the path
/// never holds it, whatever its first segment says: `/prod/system` there is the prompt of
/// the chat `prod`, not the global prompt.
fn stage_in_path(request: &Request) -> Option<&str> {
    let (stage, domain, carried) = match request.request_context_ref()? {
        // An HTTP API's rawPath starts with the stage unless it is `$default`.
        RequestContext::ApiGatewayV2(context) => (
            context.stage.as_deref()?,
            context.domain_name.as_deref(),
            true,
        ),
        // A REST event's `path` usually omits the stage; API Gateway's own `requestContext.path`
        // always has it on the execute-api host, so the two are equal there exactly when
        // `path` carries it too.
        RequestContext::ApiGatewayV1(context) => (
            context.stage.as_deref()?,
            context.domain_name.as_deref(),
            context.path.as_deref() == Some(request.raw_http_path()),
        ),
        _ => return None,
    };
    let on_stage_url = domain.is_none_or(|domain| !is_custom_domain(domain));
    (carried && on_stage_url && stage != "$default" && !stage.is_empty()).then_some(stage)
}

/// Whether `domain` is a custom domain name rather than API Gateway's own `execute-api`
/// host or a local emulator's (`localhost`, an address).
fn is_custom_domain(domain: &str) -> bool {
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
        || !host.contains('.');
    !local && !host.to_ascii_lowercase().contains(".execute-api.")
}

fn strip_stage<'a>(path: &'a str, stage: &str) -> &'a str {
    match path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(stage))
    {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_domains_are_told_from_the_stage_url_and_local_hosts() {
        for custom in ["chat.example.com", "api.example.co.uk:443"] {
            assert!(is_custom_domain(custom), "{custom}");
        }
        for own in [
            "abc123.execute-api.us-east-1.amazonaws.com",
            "ABC123.EXECUTE-API.eu-west-1.amazonaws.com",
            "localhost",
            "localhost:9000",
            "127.0.0.1:3000",
            "[::1]:9000",
            "",
        ] {
            assert!(!is_custom_domain(own), "{own}");
        }
    }

    #[test]
    fn the_stage_is_stripped_only_as_a_whole_first_segment() {
        assert_eq!(strip_stage("/prod/c1/chat", "prod"), "/c1/chat");
        assert_eq!(strip_stage("/prod", "prod"), "/");
        assert_eq!(strip_stage("/prod/", "prod"), "/");
        assert_eq!(strip_stage("/production/chat", "prod"), "/production/chat");
        assert_eq!(strip_stage("/c1/chat", "prod"), "/c1/chat");
    }
}
