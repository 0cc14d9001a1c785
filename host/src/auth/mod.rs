//! Authentication and authorization: the host's half of `wit/access.wit`.
//!
//! [`Auth::authenticate`] reads a request's `Authorization` header before
//! any guest runs: no header is [`Identity::Anonymous`]; valid credentials
//! are a user or a token's claims; anything else (a wrong password, a
//! forged or expired token, a malformed header, the wrong scheme) is
//! answered 401 by the host with the challenge. The identity is then bound
//! to the guest instance (`ctx.rs`), whose `authorize` calls land in
//! [`Auth::authorize`]: a pure function of (identity, repository, action)
//! under the rules.
//!
//! Who decides what:
//! - no `auth:` method: everyone may do everything (`allowed`);
//! - htpasswd: the rules of `blockreg.access` when given; without rules,
//!   any authenticated user may do everything and anonymous callers
//!   nothing (registry:2's behaviour);
//! - token: the token's `access` claim, and when `blockreg.access` is
//!   given its rules too (both must allow; the rules see the token's `sub`
//!   as the user). Without a token, the rules' anonymous grants apply. A
//!   token that lacks the scope is answered 401 with a challenge naming it
//!   (`error="insufficient_scope"`), as registry:2 does, so the client
//!   fetches a better token; a refusal by the rules is 403.
//!
//! Refusal of a known caller is 403 `DENIED`; a caller without credentials
//! (or with a token lacking the scope) gets 401 and the challenge.

pub(crate) mod htpasswd;
pub mod rules;
pub(crate) mod token;

use std::path::Path;

use base64::Engine as _;
use hyper::header::HeaderValue;

use crate::bindings::{Action, Decision};
use crate::config::{AccessRules, AuthConfig, AuthMethod};
use htpasswd::Htpasswd;
use token::{Claims, Verifier};

/// Who a request proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// No credentials.
    Anonymous,
    /// An htpasswd user.
    User(String),
    /// A valid bearer token.
    Token(Claims),
}

impl Identity {
    /// The user name the rules see, if any.
    fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(user) => Some(user),
            Identity::Token(claims) => Some(&claims.subject),
        }
    }

    /// For the access log: the user, `-` when anonymous.
    pub(crate) fn log_name(&self) -> &str {
        self.user().filter(|u| !u.is_empty()).unwrap_or("-")
    }
}

/// How callers authenticate, loaded.
enum Method {
    Open,
    Htpasswd {
        realm: String,
        file: Htpasswd,
    },
    Token {
        realm: String,
        service: String,
        verifier: Verifier,
    },
}

/// The registry's authentication and rules, shared by every request.
pub(crate) struct Auth {
    method: Method,
    rules: Option<AccessRules>,
}

impl Auth {
    /// Loads the password file or the certificate bundle of `config`.
    ///
    /// # Errors
    ///
    /// When a file lies inside `data_dir` (which the guest can read),
    /// cannot be read, or does not parse.
    pub(crate) fn load(config: &AuthConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let method = match &config.method {
            None => Method::Open,
            Some(AuthMethod::Htpasswd { realm, path }) => {
                crate::datadir::refuse_inside("the htpasswd file", path, data_dir)?;
                Method::Htpasswd {
                    realm: realm.clone(),
                    file: Htpasswd::load(path)?,
                }
            }
            Some(AuthMethod::Token {
                realm,
                service,
                issuer,
                root_cert_bundle,
            }) => {
                crate::datadir::refuse_inside(
                    "the token root certificate bundle",
                    root_cert_bundle,
                    data_dir,
                )?;
                Method::Token {
                    realm: realm.clone(),
                    service: service.clone(),
                    verifier: Verifier::load(root_cert_bundle, service, issuer)?,
                }
            }
        };
        if matches!(method, Method::Open) && config.rules.is_some() {
            anyhow::bail!(
                "blockreg.access needs an authentication method: set auth.htpasswd or auth.token"
            );
        }
        Ok(Self {
            method,
            rules: config.rules.clone(),
        })
    }

    /// Whether any authentication is on.
    pub(crate) fn is_on(&self) -> bool {
        !matches!(self.method, Method::Open)
    }

    /// Whether callers log in with passwords, which can be guessed (and
    /// whose failures `throttle.rs` counts); a forged token gains nothing
    /// from being tried again.
    pub(crate) fn checks_passwords(&self) -> bool {
        matches!(self.method, Method::Htpasswd { .. })
    }

    /// Checks the `Authorization` header.
    ///
    /// # Errors
    ///
    /// The `WWW-Authenticate` value to answer 401 with, when credentials
    /// are present and not valid.
    pub(crate) async fn authenticate(
        &self,
        header: Option<&HeaderValue>,
    ) -> Result<Identity, String> {
        let Some(header) = header else {
            return Ok(Identity::Anonymous);
        };
        let header = header.to_str().unwrap_or_default().trim();
        let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
        let credentials = credentials.trim();
        match &self.method {
            Method::Open => Ok(Identity::Anonymous),
            Method::Htpasswd { realm, file } => {
                let refused = || basic_challenge(realm);
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(refused());
                }
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credentials)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(refused)?;
                let (user, password) = decoded.split_once(':').ok_or_else(refused)?;
                if file.verify(user, password).await {
                    Ok(Identity::User(user.to_owned()))
                } else {
                    tracing::info!(user, "htpasswd login refused");
                    Err(refused())
                }
            }
            Method::Token {
                realm,
                service,
                verifier,
            } => {
                let refused = || {
                    format!(
                        "{},error=\"invalid_token\"",
                        bearer_challenge(realm, service)
                    )
                };
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(refused());
                }
                match verifier.verify(credentials) {
                    Ok(claims) => Ok(Identity::Token(claims)),
                    Err(e) => {
                        tracing::info!("bearer token refused: {e}");
                        Err(refused())
                    }
                }
            }
        }
    }

    /// May `identity` do `action` on `repository`? See the module docs.
    pub(crate) fn authorize(
        &self,
        identity: &Identity,
        repository: &str,
        action: Action,
    ) -> Decision {
        let by_rules = |user: Option<&str>| match &self.rules {
            Some(rules) => rules.allows(user, repository, action),
            None => user.is_some(),
        };
        match (&self.method, identity) {
            (Method::Open, _) => Decision::Allowed,
            (Method::Htpasswd { realm, .. }, Identity::Anonymous) => {
                if by_rules(None) {
                    Decision::Allowed
                } else {
                    Decision::Unauthenticated(basic_challenge(realm))
                }
            }
            (Method::Token { realm, service, .. }, Identity::Anonymous) => {
                if self
                    .rules
                    .as_ref()
                    .is_some_and(|rules| rules.allows(None, repository, action))
                {
                    Decision::Allowed
                } else {
                    Decision::Unauthenticated(scoped_challenge(
                        realm, service, repository, action, None,
                    ))
                }
            }
            (Method::Token { realm, service, .. }, Identity::Token(claims)) => {
                if !claims.actions_on(repository).contains(action) {
                    Decision::Unauthenticated(scoped_challenge(
                        realm,
                        service,
                        repository,
                        action,
                        Some("insufficient_scope"),
                    ))
                } else if self.rules.is_none() || by_rules(Some(&claims.subject)) {
                    Decision::Allowed
                } else {
                    Decision::Denied
                }
            }
            (_, identity) => {
                if by_rules(identity.user()) {
                    Decision::Allowed
                } else {
                    Decision::Denied
                }
            }
        }
    }

    /// May `identity` use the registry at all (`GET /v2/`, the catalog)?
    /// Anyone authenticated may; an anonymous caller never, even where the
    /// rules grant anonymous pulls. A client learns from this answer
    /// whether to send credentials: docker sends them only after a 401
    /// here, and `docker login` takes a 200 here for a successful login
    /// whatever the password. Anonymous grants serve the repository
    /// endpoints to clients that ask without credentials (curl, an
    /// anonymous token from a token server).
    pub(crate) fn authorize_base(&self, identity: &Identity) -> Decision {
        match (&self.method, identity) {
            (Method::Open, _) => Decision::Allowed,
            (Method::Htpasswd { realm, .. }, Identity::Anonymous) => {
                Decision::Unauthenticated(basic_challenge(realm))
            }
            (Method::Token { realm, service, .. }, Identity::Anonymous) => {
                Decision::Unauthenticated(bearer_challenge(realm, service))
            }
            _ => Decision::Allowed,
        }
    }
}

fn basic_challenge(realm: &str) -> String {
    format!("Basic realm={}", quoted(realm))
}

fn bearer_challenge(realm: &str, service: &str) -> String {
    format!("Bearer realm={},service={}", quoted(realm), quoted(service))
}

/// registry:2's challenge for a repository: a push asks for `pull,push`,
/// since a client pushing also reads (blob existence checks, mounts).
fn scoped_challenge(
    realm: &str,
    service: &str,
    repository: &str,
    action: Action,
    error: Option<&str>,
) -> String {
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    };
    let mut challenge = format!(
        "{},scope={}",
        bearer_challenge(realm, service),
        quoted(&format!("repository:{repository}:{actions}"))
    );
    if let Some(error) = error {
        challenge.push_str(&format!(",error={}", quoted(error)));
    }
    challenge
}

/// An RFC 9110 quoted-string.
fn quoted(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Actions, RepositoryRule};

    fn htpasswd_auth(rules: Option<AccessRules>) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "").unwrap();
        let config = AuthConfig {
            method: Some(AuthMethod::Htpasswd {
                realm: "my \"realm\"".into(),
                path,
            }),
            rules,
        };
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let auth = Auth::load(&config, &data).unwrap();
        (dir, auth)
    }

    #[test]
    fn without_rules_htpasswd_users_may_do_everything_and_anonymous_nothing() {
        let (_dir, auth) = htpasswd_auth(None);
        let alice = Identity::User("alice".into());
        assert_eq!(
            auth.authorize(&alice, "x", Action::Delete),
            Decision::Allowed
        );
        assert_eq!(
            auth.authorize(&Identity::Anonymous, "x", Action::Pull),
            Decision::Unauthenticated("Basic realm=\"my \\\"realm\\\"\"".into())
        );
        assert!(matches!(
            auth.authorize_base(&Identity::Anonymous),
            Decision::Unauthenticated(_)
        ));
        assert_eq!(auth.authorize_base(&alice), Decision::Allowed);
    }

    #[test]
    fn rules_deny_known_users_and_may_welcome_anonymous_callers() {
        let rules = AccessRules {
            repositories: vec![RepositoryRule {
                pattern: "**".into(),
                default: Actions::parse(["pull"]).unwrap(),
                anonymous: Actions::parse(["pull"]).unwrap(),
                ..RepositoryRule::default()
            }],
            ..AccessRules::default()
        };
        let (_dir, auth) = htpasswd_auth(Some(rules));
        let alice = Identity::User("alice".into());
        assert_eq!(auth.authorize(&alice, "x", Action::Push), Decision::Denied);
        assert_eq!(
            auth.authorize(&Identity::Anonymous, "x", Action::Pull),
            Decision::Allowed
        );
        assert!(matches!(
            auth.authorize(&Identity::Anonymous, "x", Action::Push),
            Decision::Unauthenticated(_)
        ));
        // Still 401 on /v2/: docker takes a 200 there for a valid login.
        assert!(matches!(
            auth.authorize_base(&Identity::Anonymous),
            Decision::Unauthenticated(_)
        ));
    }

    #[test]
    fn a_push_challenge_asks_for_pull_and_push() {
        assert_eq!(
            scoped_challenge("https://auth/token", "reg", "a/b", Action::Push, Some("insufficient_scope")),
            "Bearer realm=\"https://auth/token\",service=\"reg\",scope=\"repository:a/b:pull,push\",error=\"insufficient_scope\""
        );
    }

    #[test]
    fn secrets_inside_the_data_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "").unwrap();
        let config = AuthConfig {
            method: Some(AuthMethod::Htpasswd {
                realm: "r".into(),
                path,
            }),
            rules: None,
        };
        let err = Auth::load(&config, dir.path()).err().unwrap().to_string();
        assert!(err.contains("inside the data directory"), "{err}");
    }

    #[tokio::test]
    async fn malformed_authorization_headers_are_refused_not_anonymous() {
        let (_dir, auth) = htpasswd_auth(None);
        let headers: [&[u8]; 7] = [
            b"Basic",
            b"Basic !!!",
            b"Basic Zm9v",
            b"Bearer abc",
            b"garbage",
            b"Basic \xff\xfe",
            b"",
        ];
        for header in headers {
            let value = HeaderValue::from_bytes(header).unwrap();
            assert!(auth.authenticate(Some(&value)).await.is_err(), "{header:?}");
        }
        assert_eq!(auth.authenticate(None).await, Ok(Identity::Anonymous));
    }
}
