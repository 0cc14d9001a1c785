//! registry:2's token authentication: bearer tokens (JWTs in JWS compact
//! form) issued by an external token server, verified here against the
//! public keys of the certificates in `auth.token.rootcertbundle`.
//!
//! A token is accepted when it is signed with RS256/384/512 or ES256/384 by
//! the key of one of those certificates (the header's `kid` and `x5c` are
//! not followed: every certificate's key is tried, which covers token
//! servers that sign with a key of the bundle, as docker_auth and Harbor
//! do), its `iss` is the configured issuer, its `aud` (a string or a list)
//! holds the configured service, and the clock is within `nbf` and `exp`
//! (both with registry:2's 60 s leeway; `exp` is required). Its `access`
//! claim — `[{"type": "repository", "name": "...", "actions": [...]}]` —
//! is what it grants.
//!
//! Signatures are checked by rustls-webpki (ring), which the TLS stack
//! already uses; JWT's ECDSA signatures (`r || s`) are turned into the DER
//! form it expects.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use webpki::EndEntityCert;

use super::rules::Actions;

/// Leeway on `exp` and `nbf`, as registry:2 allows for clock skew.
const LEEWAY_SECS: u64 = 60;

/// Why a token is refused (logged; the client sees `invalid_token`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not one this registry verifies (`none`, HMAC, ...).
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    /// No certificate of the bundle signed it.
    #[error("signature not made by a key of the root certificate bundle")]
    Signature,
    /// `iss` is not the configured issuer.
    #[error("issuer {0:?} is not the configured one")]
    Issuer(String),
    /// `aud` does not name this service.
    #[error("audience does not name this registry's service")]
    Audience,
    /// Past `exp` (or no `exp`).
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not valid yet")]
    NotYetValid,
}

/// One entry of a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// `repository` (others, such as `registry` for the catalog, grant
    /// nothing here).
    pub(crate) kind: String,
    /// The repository name.
    pub(crate) name: String,
    /// What may be done (`*` is all).
    pub(crate) actions: Actions,
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claims {
    /// `sub`: who it was issued to (empty for an anonymous token).
    pub(crate) subject: String,
    /// `access`.
    pub(crate) access: Vec<Grant>,
}

impl Claims {
    /// What the token grants on `repository`.
    pub(crate) fn actions_on(&self, repository: &str) -> Actions {
        self.access
            .iter()
            .filter(|grant| grant.kind == "repository" && grant.name == repository)
            .fold(Actions::default(), |all, grant| Actions {
                pull: all.pull || grant.actions.pull,
                push: all.push || grant.actions.push,
                delete: all.delete || grant.actions.delete,
            })
    }
}

/// Verifies tokens for one service and issuer.
pub(crate) struct Verifier {
    service: String,
    issuer: String,
    certificates: Vec<CertificateDer<'static>>,
}

impl Verifier {
    /// Reads the PEM certificates of `bundle`.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, holds no certificate, or one of them
    /// does not parse.
    pub(crate) fn load(bundle: &Path, service: &str, issuer: &str) -> anyhow::Result<Self> {
        let certificates = CertificateDer::pem_file_iter(bundle)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading the root certificate bundle {}", bundle.display()))?;
        if certificates.is_empty() {
            anyhow::bail!(
                "the root certificate bundle {} holds no certificate",
                bundle.display()
            );
        }
        for (i, der) in certificates.iter().enumerate() {
            EndEntityCert::try_from(der).map_err(|e| {
                anyhow::anyhow!(
                    "certificate {} of {} does not parse: {e}",
                    i + 1,
                    bundle.display()
                )
            })?;
        }
        Ok(Self {
            service: service.to_owned(),
            issuer: issuer.to_owned(),
            certificates,
        })
    }

    /// Verifies `token` at the current time.
    ///
    /// # Errors
    ///
    /// See [`TokenError`].
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now)
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(header64), Some(claims64), Some(signature64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header: serde_json::Value = serde_json::from_slice(&decode(header64)?)
            .map_err(|_| TokenError::Malformed("header is not JSON"))?;
        let alg = header["alg"].as_str().unwrap_or_default();
        let mut signature = decode(signature64)?;
        let algorithm: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match alg {
            "RS256" => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            "RS384" => webpki::ring::RSA_PKCS1_2048_8192_SHA384,
            "RS512" => webpki::ring::RSA_PKCS1_2048_8192_SHA512,
            "ES256" => {
                signature = ecdsa_der(&signature, 32)?;
                webpki::ring::ECDSA_P256_SHA256
            }
            "ES384" => {
                signature = ecdsa_der(&signature, 48)?;
                webpki::ring::ECDSA_P384_SHA384
            }
            other => return Err(TokenError::Algorithm(other.to_owned())),
        };
        let signed = &token.trim()[..header64.len() + 1 + claims64.len()];
        let signed_by_a_root = self.certificates.iter().any(|der| {
            EndEntityCert::try_from(der).is_ok_and(|cert| {
                cert.verify_signature(algorithm, signed.as_bytes(), &signature)
                    .is_ok()
            })
        });
        if !signed_by_a_root {
            return Err(TokenError::Signature);
        }

        let claims: serde_json::Value = serde_json::from_slice(&decode(claims64)?)
            .map_err(|_| TokenError::Malformed("claims are not JSON"))?;
        let issuer = claims["iss"].as_str().unwrap_or_default();
        if issuer != self.issuer {
            return Err(TokenError::Issuer(issuer.to_owned()));
        }
        let audience_ok = match &claims["aud"] {
            serde_json::Value::String(aud) => *aud == self.service,
            serde_json::Value::Array(auds) => auds.iter().any(|a| *a == *self.service),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenError::Audience);
        }
        match claims["exp"].as_u64() {
            Some(exp) if now <= exp.saturating_add(LEEWAY_SECS) => {}
            _ => return Err(TokenError::Expired),
        }
        if claims["nbf"]
            .as_u64()
            .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        let access = claims["access"]
            .as_array()
            .map(|entries| entries.iter().filter_map(grant).collect())
            .unwrap_or_default();
        Ok(Claims {
            subject: claims["sub"].as_str().unwrap_or_default().to_owned(),
            access,
        })
    }
}

/// One `access` entry; unknown action names grant nothing (a newer token
/// server may know more actions than this registry).
fn grant(entry: &serde_json::Value) -> Option<Grant> {
    let actions = entry["actions"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str())
        .filter_map(|a| Actions::parse([a]).ok())
        .fold(Actions::default(), |all, one| Actions {
            pull: all.pull || one.pull,
            push: all.push || one.push,
            delete: all.delete || one.delete,
        });
    Some(Grant {
        kind: entry["type"].as_str()?.to_owned(),
        name: entry["name"].as_str()?.to_owned(),
        actions,
    })
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("a part is not base64url"))
}

/// A JWS ECDSA signature (`r || s`, each `size` bytes) as the DER
/// `SEQUENCE { INTEGER r, INTEGER s }` webpki verifies.
fn ecdsa_der(raw: &[u8], size: usize) -> Result<Vec<u8>, TokenError> {
    if raw.len() != 2 * size {
        return Err(TokenError::Signature);
    }
    let integer = |bytes: &[u8]| {
        let trimmed = match bytes.iter().position(|&b| b != 0) {
            Some(first) => &bytes[first..],
            None => &bytes[bytes.len() - 1..],
        };
        let mut out = vec![0x02];
        let pad = trimmed[0] & 0x80 != 0;
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let (r, s) = (integer(&raw[..size]), integer(&raw[size..]));
    let body_len = r.len() + s.len();
    let mut der = vec![0x30];
    // At most 2 * (2 + 1 + 48) = 102 bytes: one length byte, long form
    // beyond 127.
    if body_len > 127 {
        der.push(0x81);
    }
    der.push(body_len as u8);
    der.extend(r);
    der.extend(s);
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_der_with_minimal_integers() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its top bit set: needs a 0 byte
        let der = ecdsa_der(&raw, 32).unwrap();
        assert_eq!(&der[..5], &[0x30, 2 + 1 + 2 + 33, 0x02, 1, 1]);
        assert_eq!(&der[5..8], &[0x02, 33, 0]);
        assert_eq!(der.len(), 2 + 3 + 2 + 33);
        assert_eq!(ecdsa_der(&raw[..63], 32), Err(TokenError::Signature));
    }

    #[test]
    fn claims_grant_per_repository_and_star_is_everything() {
        let claims = Claims {
            subject: "bob".into(),
            access: vec![
                grant(&serde_json::json!({"type": "repository", "name": "a", "actions": ["pull"]}))
                    .unwrap(),
                grant(&serde_json::json!({"type": "repository", "name": "b", "actions": ["*"]}))
                    .unwrap(),
                grant(&serde_json::json!({"type": "registry", "name": "a", "actions": ["*"]}))
                    .unwrap(),
            ],
        };
        assert_eq!(claims.actions_on("a"), Actions::parse(["pull"]).unwrap());
        assert_eq!(claims.actions_on("b"), Actions::ALL);
        assert_eq!(claims.actions_on("c"), Actions::default());
    }

    #[test]
    fn garbage_is_malformed_and_none_is_refused() {
        let verifier = Verifier {
            service: "s".into(),
            issuer: "i".into(),
            certificates: Vec::new(),
        };
        assert!(matches!(
            verifier.verify_at("abc", 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify_at("!!.!!.!!", 0),
            Err(TokenError::Malformed(_))
        ));
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert_eq!(
            verifier.verify_at(&format!("{none}.e30."), 0),
            Err(TokenError::Algorithm("none".into()))
        );
    }
}
