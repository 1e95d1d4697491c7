//! [`ProviderError`]: every failure of a provider call, its text prefixed with the provider's name.

use std::time::Duration;

use reqwest::Method;

/// A provider call that failed. `Display` always starts with the provider's name
/// (`hetzner cloud: …`, `hetzner robot: …`) and names the method and path (with its query) of
/// the request, never a header, token or password.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// 401: the credentials were refused. Never retried (Robot blocks an IP after three failed
    /// logins).
    #[error(
        "{provider}: authentication failed on {method} {path} ({status}{}): check the credentials",
        inline(code, message)
    )]
    Unauthorized {
        provider: &'static str,
        method: Method,
        path: String,
        status: u16,
        code: Option<Box<str>>,
        message: Option<Box<str>>,
    },
    /// The provider answered an error status (after retries, for 5xx).
    #[error(
        "{provider}: {method} {path} answered {status}{}",
        detail(code, message)
    )]
    Api {
        provider: &'static str,
        method: Method,
        path: String,
        status: u16,
        code: Option<Box<str>>,
        message: Option<Box<str>>,
    },
    /// The provider kept answering "too many requests" (429, or its own signal such as Robot's
    /// 403 `RATE_LIMIT_EXCEEDED`) after retries, or asked for a wait past the call's deadline.
    #[error(
        "{provider}: rate limited on {method} {path} ({status}{}), retry after {}",
        inline(code, message),
        secs(*retry_after)
    )]
    RateLimited {
        provider: &'static str,
        method: Method,
        path: String,
        status: u16,
        retry_after: Duration,
        code: Option<Box<str>>,
        message: Option<Box<str>>,
    },
    /// No answer: connection refused or reset, TLS failure, per-attempt timeout, body cut off.
    #[error("{provider}: {method} {path} failed: {}", chain(error))]
    Network {
        provider: &'static str,
        method: Method,
        path: String,
        error: reqwest::Error,
    },
    /// A 2xx answer whose body is not what the API documents (truncated or invalid JSON, a
    /// missing required field). Not retried.
    #[error("{provider}: invalid response to {method} {path}: {error}")]
    Decode {
        provider: &'static str,
        method: Method,
        path: String,
        error: serde_json::Error,
    },
    /// The call's overall deadline passed (including retries and waits).
    #[error("{provider}: {method} {path}: no answer within the deadline of {}", secs(*deadline))]
    Deadline {
        provider: &'static str,
        method: Method,
        path: String,
        deadline: Duration,
    },
    /// An asynchronous action (Hetzner Cloud) ended in `error`.
    #[error("{provider}: action {id} ({command}) failed{}", detail(code, message))]
    ActionFailed {
        provider: &'static str,
        id: u64,
        command: String,
        code: Option<Box<str>>,
        message: Option<Box<str>>,
    },
    /// The answers broke the protocol in a way no retry fixes (a page that does not advance, an
    /// envelope without its list).
    #[error("{provider}: {message}")]
    Protocol {
        provider: &'static str,
        message: String,
    },
    /// The client could not be built (bad base URL, missing credential field).
    #[error("{provider}: invalid configuration: {message}")]
    Config {
        provider: &'static str,
        message: String,
    },
}

impl ProviderError {
    /// The provider's name, as in the message prefix.
    pub fn provider(&self) -> &'static str {
        match self {
            ProviderError::Unauthorized { provider, .. }
            | ProviderError::Api { provider, .. }
            | ProviderError::RateLimited { provider, .. }
            | ProviderError::Network { provider, .. }
            | ProviderError::Decode { provider, .. }
            | ProviderError::Deadline { provider, .. }
            | ProviderError::ActionFailed { provider, .. }
            | ProviderError::Protocol { provider, .. }
            | ProviderError::Config { provider, .. } => provider,
        }
    }

    /// The HTTP status the provider answered, when it answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Unauthorized { status, .. }
            | ProviderError::Api { status, .. }
            | ProviderError::RateLimited { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The provider's machine-readable error code (`not_found`, `SERVER_NOT_FOUND`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ProviderError::Unauthorized { code, .. }
            | ProviderError::Api { code, .. }
            | ProviderError::RateLimited { code, .. }
            | ProviderError::ActionFailed { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The provider's human-readable error message, when it sent one.
    pub fn provider_message(&self) -> Option<&str> {
        match self {
            ProviderError::Unauthorized { message, .. }
            | ProviderError::Api { message, .. }
            | ProviderError::RateLimited { message, .. }
            | ProviderError::ActionFailed { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// Whether the credentials were refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ProviderError::Unauthorized { .. })
    }

    /// Whether the provider answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// ` (code: message)`, ` (code)`, ` (message)` or nothing.
fn detail(code: &Option<Box<str>>, message: &Option<Box<str>>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

fn secs(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
}

/// ` code: message` after a status, inside its parentheses.
fn inline(code: &Option<Box<str>>, message: &Option<Box<str>>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(" {m}"),
        (None, None) => String::new(),
    }
}

/// An error and its causes on one line: reqwest's own text alone ("error sending request")
/// does not say what went wrong.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_provider_and_carry_code_and_message() {
        let e = ProviderError::Api {
            provider: "hetzner cloud",
            method: Method::GET,
            path: "/servers?page=3&per_page=50".into(),
            status: 500,
            code: Some("server_error".into()),
            message: Some("boom".into()),
        };
        assert_eq!(
            e.to_string(),
            "hetzner cloud: GET /servers?page=3&per_page=50 answered 500 (server_error: boom)"
        );
        assert_eq!(e.status(), Some(500));
        assert_eq!(e.code(), Some("server_error"));
        let e = ProviderError::RateLimited {
            provider: "hetzner robot",
            method: Method::GET,
            path: "/server".into(),
            status: 403,
            retry_after: Duration::from_millis(1500),
            code: Some("RATE_LIMIT_EXCEEDED".into()),
            message: None,
        };
        assert_eq!(
            e.to_string(),
            "hetzner robot: rate limited on GET /server (403 RATE_LIMIT_EXCEEDED), retry after 1.5s"
        );
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(secs(Duration::from_secs(2)), "2s");
        assert_eq!(secs(Duration::from_millis(100)), "0.1s");
        assert_eq!(secs(Duration::from_millis(1250)), "1.25s");
    }
}
