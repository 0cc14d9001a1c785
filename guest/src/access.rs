//! Who may do what: the guest's half of `wit/access.wit`.
//!
//! The host has already authenticated the caller; the routes ask it,
//! through [`Access`], after parsing a repository name and before touching
//! the store. The routes take the trait as a parameter (like the
//! settings), so unit tests pass [`AllowAll`] or their own answers and
//! need no host import.

pub use crate::bindings::blockreg::registry::access::{Action, Decision};
use crate::oci::{ErrorCode, RegistryError, RepoName, Result};

/// Answers "may the caller do this?".
pub trait Access {
    /// May the caller do `action` on `repository`?
    fn authorize(&self, repository: &RepoName, action: Action) -> Decision;
    /// May the caller use the registry at all (`GET /v2/`, the catalog)?
    fn authorize_base(&self) -> Decision;
}

/// The host's answers (the `access` import).
pub struct Host;

impl Access for Host {
    fn authorize(&self, repository: &RepoName, action: Action) -> Decision {
        crate::bindings::blockreg::registry::access::authorize(repository.as_str(), action)
    }

    fn authorize_base(&self) -> Decision {
        crate::bindings::blockreg::registry::access::authorize_base()
    }
}

/// Everything is allowed: for tests of routes that are not about access.
#[cfg(test)]
pub struct AllowAll;

#[cfg(test)]
impl Access for AllowAll {
    fn authorize(&self, _: &RepoName, _: Action) -> Decision {
        Decision::Allowed
    }

    fn authorize_base(&self) -> Decision {
        Decision::Allowed
    }
}

/// A decision as the route's result: 401 `UNAUTHORIZED` with the host's
/// challenge, or 403 `DENIED`. `what` names what was asked ("push to
/// library/app", "the registry"), so the message is never the code's
/// stock text.
///
/// Why not the stock text: the distribution client that docker 20.10
/// vendors turns an error whose message equals its code's default and
/// whose detail is null into a bare `ErrorCode`, which its push does not
/// recognise as final, and retries a refused push for about 50 s before
/// giving up. A specific message (and a detail) ends the push at once.
///
/// # Errors
///
/// When the decision is not `allowed`.
pub fn require(decision: Decision, what: &str) -> Result<()> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Unauthenticated(challenge) => Err(RegistryError::new(
            ErrorCode::Unauthorized,
            format!("authentication required to {what}"),
        )
        .with_detail(serde_json::json!({ "asked": what }))
        .with_header("WWW-Authenticate", challenge)),
        Decision::Denied => Err(RegistryError::new(
            ErrorCode::Denied,
            format!("the caller may not {what}"),
        )
        .with_detail(serde_json::json!({ "asked": what }))),
    }
}

/// [`require`] of `access.authorize(name, action)`.
///
/// # Errors
///
/// When the caller may not.
pub fn check(access: &dyn Access, name: &RepoName, action: Action) -> Result<()> {
    let verb = match action {
        Action::Pull => "pull from",
        Action::Push => "push to",
        Action::Delete => "delete in",
    };
    require(
        access.authorize(name, action),
        &format!("{verb} {}", name.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_401_with_the_challenge_or_403() {
        let e = require(
            Decision::Unauthenticated("Basic realm=\"r\"".into()),
            "use it",
        )
        .unwrap_err();
        assert_eq!(e.http_status(), 401);
        assert_eq!(
            e.headers,
            [(
                "WWW-Authenticate".to_string(),
                "Basic realm=\"r\"".to_string()
            )]
        );
        let e = require(Decision::Denied, "push to mine").unwrap_err();
        assert_eq!(e.http_status(), 403);
        assert!(String::from_utf8(e.body()).unwrap().contains("\"DENIED\""));
        assert!(require(Decision::Allowed, "pull").is_ok());
    }

    /// docker 20.10 retries a push for ~50 s when a refusal carries the
    /// code's stock message and no detail; it stops at once otherwise.
    #[test]
    fn refusals_name_what_was_asked_and_carry_a_detail() {
        for decision in [Decision::Denied, Decision::Unauthenticated("Basic".into())] {
            let e = require(decision, "push to team/app").unwrap_err();
            assert!(e.message.contains("push to team/app"), "{}", e.message);
            assert!(e.detail.is_some());
            let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            let stock = match e.code {
                ErrorCode::Denied => "requested access to the resource is denied",
                _ => "authentication required",
            };
            assert_ne!(body["errors"][0]["message"], stock);
            assert!(!body["errors"][0]["detail"].is_null());
        }
    }
}
