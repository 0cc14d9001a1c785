//! Repository names, tags and manifest references, validated against the
//! distribution spec's grammar before any of them becomes a path.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;
use super::error::{ErrorCode, RegistryError};

/// The spec's limit on a whole repository name.
pub const MAX_NAME_LEN: usize = 255;
/// The spec's limit on a tag.
pub const MAX_TAG_LEN: usize = 128;

/// A repository name: `/`-separated components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most 255 characters. No component
/// can be empty, `.`/`..`, or start with `_`, so names are safe as paths and
/// never collide with the store's own `_tags`, `_manifests`, `_blobs` dirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn component_is_valid(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-"; it must be
        // followed by an alphanumeric (guaranteed at the end by the check above).
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = RegistryError;

    /// # Errors
    /// `NAME_INVALID` when the name breaks the grammar or is too long.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| {
            RegistryError::new(
                ErrorCode::NameInvalid,
                format!("invalid repository name: {why}"),
            )
            .with_detail(serde_json::json!({ "name": s.chars().take(300).collect::<String>() }))
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(invalid("longer than 255 characters"));
        }
        if !s.split('/').all(component_is_valid) {
            return Err(invalid("does not match the repository name grammar"));
        }
        Ok(Self(s.to_string()))
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = RegistryError;

    /// # Errors
    /// `MANIFEST_INVALID` (registry:2's code for a bad tag) when it breaks the grammar.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > MAX_TAG_LEN {
            return Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                "invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
            )
            .with_detail(serde_json::json!({ "tag": s.chars().take(200).collect::<String>() })));
        }
        Ok(Self(s.to_string()))
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = RegistryError;

    /// A reference containing `:` is a digest (tags cannot contain it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Self::Digest(s.parse()?))
        } else {
            Ok(Self::Tag(s.parse()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_grammar_are_accepted() {
        for ok in [
            "a",
            "library/nginx",
            "my-org/my_app/sub.component",
            "a__b",
            "a---b",
            "0/1/2",
            &"a".repeat(255),
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_that_break_the_grammar_are_name_invalid() {
        for bad in [
            "",
            "UPPER",
            "../etc",
            "a/../b",
            "a/./b",
            "/abs",
            "a/",
            "a//b",
            "a___b",
            "-a",
            "a-",
            "a..b",
            "_tags",
            "a/_manifests",
            "a%2fb",
            "a\\b",
            "a b",
            &"a".repeat(256),
        ] {
            let err = bad.parse::<RepoName>().unwrap_err();
            assert_eq!(err.code, ErrorCode::NameInvalid, "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_grammar_and_length_limit() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "a:b", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references_with_a_colon_are_digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(
            d.parse::<Reference>().unwrap(),
            Reference::Digest(_)
        ));
        assert!(matches!(
            "v1".parse::<Reference>().unwrap(),
            Reference::Tag(_)
        ));
        assert_eq!(
            "sha256:zz".parse::<Reference>().unwrap_err().code,
            ErrorCode::DigestInvalid
        );
    }
}
