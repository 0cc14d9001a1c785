//! Registry errors as the OCI distribution spec defines them.
//!
//! Policy: every failure a client can cause is one of the spec's error codes
//! with the HTTP status registry:2 uses for it, written as
//! `{"errors":[{"code","message","detail"}]}`. Bad input is never a 5xx.
//! `UNKNOWN` (500) is reserved for the store itself failing (disk full, a
//! corrupt file), and its message names what failed so operators can act.

use serde_json::json;

/// The error codes of the OCI distribution spec (plus registry:2's `UNKNOWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// The store failed; not caused by the request.
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status registry:2 answers this code with.
    pub fn status(self) -> u16 {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => 404,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid => 400,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 405,
            Self::TooManyRequests => 429,
            Self::Unknown => 500,
        }
    }
}

/// One failed request: a code, a human message, optional detail, and the
/// status and extra headers to answer with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Overrides the code's usual status (416 for out-of-order chunks).
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            status: None,
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The store failed while serving the request: 500, or 507 when it
    /// is full (the request can be retried once space was freed).
    pub fn storage(context: &str, err: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        if matches!(
            err.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            return Self::new(
                ErrorCode::Unknown,
                format!("the store is full: {context}: {err}"),
            )
            .with_status(507);
        }
        Self::new(
            ErrorCode::Unknown,
            format!("storage error: {context}: {err}"),
        )
    }

    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// The spec's JSON error body.
    pub fn body(&self) -> Vec<u8> {
        let v = json!({"errors": [{
            "code": self.code.as_str(),
            "message": self.message,
            "detail": self.detail,
        }]});
        serde_json::to_vec(&v).expect("a json value always serializes")
    }
}

/// Shorthand used by the routes.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_things_are_404_and_bad_input_is_400() {
        for code in [
            ErrorCode::BlobUnknown,
            ErrorCode::BlobUploadUnknown,
            ErrorCode::ManifestUnknown,
            ErrorCode::NameUnknown,
        ] {
            assert_eq!(code.status(), 404, "{code:?}");
        }
        for code in [
            ErrorCode::DigestInvalid,
            ErrorCode::NameInvalid,
            ErrorCode::ManifestInvalid,
            ErrorCode::ManifestBlobUnknown,
            ErrorCode::SizeInvalid,
            ErrorCode::BlobUploadInvalid,
        ] {
            assert_eq!(code.status(), 400, "{code:?}");
        }
        assert_eq!(ErrorCode::Unsupported.status(), 405);
    }

    #[test]
    fn error_body_has_the_spec_shape() {
        let e = RegistryError::new(ErrorCode::DigestInvalid, "nope")
            .with_detail(json!({"digest": "sha256:x"}));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "DIGEST_INVALID");
        assert_eq!(v["errors"][0]["message"], "nope");
        assert_eq!(v["errors"][0]["detail"]["digest"], "sha256:x");
    }

    #[test]
    fn a_full_store_is_507_and_says_so() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = RegistryError::storage("writing an upload", &full);
        assert_eq!((e.code, e.http_status()), (ErrorCode::Unknown, 507));
        assert!(e.message.contains("full"), "{}", e.message);
        let other = std::io::Error::other("disk on fire");
        assert_eq!(RegistryError::storage("x", &other).http_status(), 500);
    }

    #[test]
    fn status_override_wins() {
        let e = RegistryError::new(ErrorCode::BlobUploadInvalid, "gap").with_status(416);
        assert_eq!(e.http_status(), 416);
    }
}
