//! Error policy of the host.
//!
//! - The public functions return `anyhow::Result`: their callers are the
//!   `blockreg` binary and the integration tests, which only report errors.
//!   Code that talks to wasmtime uses `wasmtime::Result`, because
//!   `wasmtime::Error` does not implement `std::error::Error`; [`wasm_err`]
//!   converts at the boundary and keeps the cause chain.
//! - HTTP errors are the guest's business. The host answers by itself only
//!   when the guest cannot: a body over the configured limit (413
//!   `SIZE_INVALID`, a distribution-spec code), a body that stalled or
//!   trickled below the minimum rate (408, code `UNKNOWN`: the spec has no
//!   code for it, the status says "send it again"), a request that ran out
//!   of time (503 `UNAVAILABLE`), credentials that do not authenticate (401
//!   `UNAUTHORIZED` with `WWW-Authenticate`, before any guest runs; what an
//!   authenticated caller may do is asked by the guest, `wit/access.wit`),
//!   a client over its request rate, uploads in flight or failed logins
//!   (429 `TOOMANYREQUESTS` with `Retry-After`, `throttle.rs`),
//!   and a host or guest failure such as a trap
//!   or a guest that never set a response (500 `UNKNOWN`). `UNKNOWN` and
//!   `UNAVAILABLE` are the codes the reference registry
//!   (distribution/distribution) uses for 5xx. All bodies have the OCI shape
//!   `{"errors":[{"code","message","detail"}]}`.
//! - Host hooks given to the guest return WIT errors the guest can react to
//!   (an outgoing request is refused with `HTTP-request-denied`); traps are
//!   reserved for host bugs.

use hyper::StatusCode;

/// Converts a wasmtime error into an `anyhow` one without losing its causes.
pub(crate) fn wasm_err(error: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(error.into_boxed_dyn_error())
}

/// The error codes the host itself can answer with; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostErrorCode {
    /// The request body is larger than `--max-body-bytes`.
    SizeInvalid,
    /// The request body stalled for `--body-idle-timeout-secs` or stayed
    /// below `--min-body-rate`.
    BodyTimeout,
    /// The request did not finish within `--request-timeout-secs`.
    Unavailable,
    /// The `Authorization` header did not authenticate.
    Unauthorized,
    /// A client went over one of its limits (`throttle.rs`).
    TooManyRequests,
    /// The guest trapped, failed to instantiate or gave no response.
    Unknown,
}

impl HostErrorCode {
    /// The code as written in the JSON body.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::BodyTimeout | Self::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status sent with this code.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::SizeInvalid => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OCI error document for this code and a human-readable message.
    pub(crate) fn body(self, message: &str) -> String {
        serde_json::json!({
            "errors": [{ "code": self.as_str(), "message": message, "detail": null }]
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_error_body_has_the_oci_shape() {
        let body: serde_json::Value =
            serde_json::from_str(&HostErrorCode::SizeInvalid.body("too \"big\"")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "errors": [{ "code": "SIZE_INVALID", "message": "too \"big\"", "detail": null }]
            })
        );
    }

    #[test]
    fn each_code_maps_to_its_status() {
        assert_eq!(HostErrorCode::SizeInvalid.status(), 413);
        assert_eq!(HostErrorCode::BodyTimeout.status(), 408);
        assert_eq!(HostErrorCode::Unavailable.status(), 503);
        assert_eq!(HostErrorCode::Unauthorized.status(), 401);
        assert_eq!(HostErrorCode::TooManyRequests.status(), 429);
        assert_eq!(HostErrorCode::Unknown.status(), 500);
    }

    #[test]
    fn wasm_err_keeps_the_context_chain() {
        let err = wasmtime::Error::msg("root cause").context("outer");
        let converted = wasm_err(err);
        let text = format!("{converted:#}");
        assert!(
            text.contains("outer") && text.contains("root cause"),
            "{text}"
        );
    }
}
