//! Content digests (`algorithm:hex`), validated on construction.
//!
//! Only `sha256` and `sha512` are accepted: they are the algorithms the OCI
//! image spec registers, and a digest we cannot verify must not be stored.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use super::error::{ErrorCode, RegistryError};

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

/// A validated digest: a known algorithm and lowercase hex of the right length.
/// Its string form is safe to use as a single path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` with `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = RegistryError;

    /// # Errors
    /// `DIGEST_INVALID` for anything but `sha256:<64 hex>` or `sha512:<128 hex>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| {
            RegistryError::new(ErrorCode::DigestInvalid, format!("invalid digest: {why}"))
                .with_detail(serde_json::json!({ "digest": s }))
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("missing algorithm"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong length"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("not lowercase hex"));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

/// Incremental hashing for either algorithm.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// Hashes everything `input` yields: `(digest, bytes read)`.
    ///
    /// # Errors
    /// Errors reading `input`.
    pub fn digest_reader(
        algorithm: Algorithm,
        input: &mut dyn std::io::Read,
    ) -> std::io::Result<(Digest, u64)> {
        let mut hasher = Self::new(algorithm);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok((hasher.finish(), size));
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self {
            Self::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Self::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: crate::hex::encode(&bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_is_the_known_vector() {
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sha512_digests_parse_and_compute() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.hex().starts_with("ddaf35a193617aba"));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn malformed_digests_are_digest_invalid() {
        for bad in [
            "sha256:totallywrong",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256",
            "",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.code, ErrorCode::DigestInvalid, "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(s.parse::<Digest>().unwrap().to_string(), s);
    }
}
