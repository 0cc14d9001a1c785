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
/// challenge, or 403 `DENIED`.
///
/// # Errors
///
/// When the decision is not `allowed`.
pub fn require(decision: Decision) -> Result<()> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Unauthenticated(challenge) => Err(RegistryError::new(
            ErrorCode::Unauthorized,
            "authentication required",
        )
        .with_header("WWW-Authenticate", challenge)),
        Decision::Denied => Err(RegistryError::new(
            ErrorCode::Denied,
            "requested access to the resource is denied",
        )),
    }
}

/// [`require`] of `access.authorize(name, action)`.
///
/// # Errors
///
/// When the caller may not.
pub fn check(access: &dyn Access, name: &RepoName, action: Action) -> Result<()> {
    require(access.authorize(name, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_401_with_the_challenge_or_403() {
        let e = require(Decision::Unauthenticated("Basic realm=\"r\"".into())).unwrap_err();
        assert_eq!(e.http_status(), 401);
        assert_eq!(
            e.headers,
            [(
                "WWW-Authenticate".to_string(),
                "Basic realm=\"r\"".to_string()
            )]
        );
        let e = require(Decision::Denied).unwrap_err();
        assert_eq!(e.http_status(), 403);
        assert!(String::from_utf8(e.body()).unwrap().contains("\"DENIED\""));
        assert!(require(Decision::Allowed).is_ok());
    }
}
