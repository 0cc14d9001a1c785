//! Manifest media types and what a manifest references.
//!
//! The registry stores manifests byte-exact; it parses them only to find the
//! blobs and child manifests they point at, which must already be in the
//! repository before the manifest is accepted.

use serde::Deserialize;

use super::digest::Digest;
use super::error::{ErrorCode, RegistryError, Result};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The spec's limit on a manifest body (registry:2 and containerd use 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    digest: String,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    /// Where a non-distributable layer is fetched from instead.
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    subject: Option<RawDescriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a parsed manifest needs checked before it is stored.
#[derive(Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The media type to store and serve it with.
    pub media_type: String,
    /// Config and layer blobs (image manifests), foreign layers excluded.
    pub blobs: Vec<Digest>,
    /// Non-distributable ("foreign") layers: descriptors with `urls`, whose
    /// blobs clients fetch from those URLs and need not be pushed here.
    pub foreign: Vec<Digest>,
    /// Child manifests (indexes and manifest lists).
    pub manifests: Vec<Digest>,
    /// The manifest this one refers to (`subject`), for the referrers API.
    pub subject: Option<Digest>,
    /// The artifact type the referrers API reports: `artifactType`, else the
    /// config's media type (OCI distribution spec, "Listing Referrers").
    pub artifact_type: Option<String>,
    /// The manifest's annotations, copied into referrers descriptors.
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Whether `s` is a media type as RFC 6838 section 4.2 restricts them:
/// `type/subtype`, each 1–127 characters, starting with a letter or digit,
/// then letters, digits and ``!#$&-^_.+``. No parameters, no spaces, no
/// control characters: a stored media type is sent back as the
/// `Content-Type` of the manifest, so it must be a valid header value.
pub fn is_valid_media_type(s: &str) -> bool {
    fn restricted_name(n: &str) -> bool {
        let b = n.as_bytes();
        !b.is_empty()
            && b.len() <= 127
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                    )
            })
    }
    s.split_once('/')
        .is_some_and(|(t, sub)| restricted_name(t) && restricted_name(sub))
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, msg)
}

fn descriptor_digest(d: &RawDescriptor) -> Result<Digest> {
    if d.size.is_some_and(|s| s < 0) {
        return Err(invalid("descriptor with a negative size"));
    }
    d.digest
        .parse()
        .map_err(|_| invalid(format!("descriptor with an invalid digest: {:?}", d.digest)))
}

/// At most the first 64 characters of `s`, for messages about a bad value.
fn truncated(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

/// Parses `body` sent with `content_type` (the request's header, if any).
///
/// # Errors
/// `MANIFEST_INVALID` when the body is not a JSON manifest, its descriptors are
/// malformed, or its `mediaType` contradicts the Content-Type.
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<ManifestInfo> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if raw.schema_version.is_some_and(|v| v != 2) {
        return Err(invalid("only schemaVersion 2 manifests are supported"));
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    if let (Some(h), Some(b)) = (header, raw.media_type.as_deref()) {
        if h != b {
            return Err(invalid(format!(
                "Content-Type {h} does not match the manifest's mediaType {b}"
            )));
        }
    }
    let media_type = header
        .map(str::to_string)
        .or(raw.media_type.clone())
        .unwrap_or_else(|| {
            if raw.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if !is_valid_media_type(&media_type) {
        return Err(invalid(format!(
            "the media type {:?} is not a valid media type (RFC 6838)",
            truncated(&media_type)
        )));
    }
    if let Some(t) = raw
        .artifact_type
        .as_deref()
        .filter(|t| !is_valid_media_type(t))
    {
        return Err(invalid(format!(
            "the artifactType {:?} is not a valid media type (RFC 6838)",
            truncated(t)
        )));
    }
    let mut blobs = Vec::new();
    let mut foreign = Vec::new();
    if let Some(c) = &raw.config {
        blobs.push(descriptor_digest(c)?);
    }
    for l in raw.layers.iter().flatten() {
        let digest = descriptor_digest(l)?;
        if l.urls.as_ref().is_some_and(|u| !u.is_empty()) {
            foreign.push(digest);
        } else {
            blobs.push(digest);
        }
    }
    let manifests = raw
        .manifests
        .iter()
        .flatten()
        .map(descriptor_digest)
        .collect::<Result<Vec<_>>>()?;
    let is_index = matches!(media_type.as_str(), OCI_INDEX | DOCKER_MANIFEST_LIST);
    if is_index && raw.manifests.is_none() {
        return Err(invalid("an index needs a manifests array"));
    }
    if matches!(media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) && raw.config.is_none() {
        return Err(invalid("an image manifest needs a config descriptor"));
    }
    let subject = raw.subject.as_ref().map(descriptor_digest).transpose()?;
    let artifact_type = raw
        .artifact_type
        .clone()
        .or_else(|| raw.config.as_ref().and_then(|c| c.media_type.clone()))
        .filter(|t| is_valid_media_type(t));
    Ok(ManifestInfo {
        media_type,
        blobs,
        foreign,
        manifests,
        subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_rfc_6838_restricted_names() {
        for ok in [
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            "application/vnd.example+json",
            "x/y",
            "a1/b-c.d_e!f#g$h&i^j",
        ] {
            assert!(is_valid_media_type(ok), "{ok}");
        }
        let long = format!("a/{}", "b".repeat(128));
        for bad in [
            "",
            "a",
            "/b",
            "a/",
            "a/b/c",
            "a/b; charset=utf-8",
            "a /b",
            "a/b\r\n",
            "a/b\0",
            "-a/b",
            "a/.b",
            "é/b",
            long.as_str(),
        ] {
            assert!(!is_valid_media_type(bad), "{bad:?}");
        }
    }

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn image_manifest_references_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"{D1}","size":0}},"layers":[{{"digest":"{D2}","size":5}}]}}"#
        );
        let info = parse_manifest(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(info.media_type, DOCKER_MANIFEST);
        assert_eq!(info.blobs.len(), 2);
        assert!(info.manifests.is_empty());
    }

    #[test]
    fn layers_with_urls_are_foreign_not_blobs_to_check() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{D1}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{D2}","size":5,"urls":["https://example.com/layer"]}}]}}"#
        );
        let info = parse_manifest(body.as_bytes(), None).unwrap();
        assert_eq!(info.blobs, [D1.parse().unwrap()]);
        assert_eq!(info.foreign, [D2.parse().unwrap()]);
    }

    #[test]
    fn index_without_media_type_is_inferred_from_its_shape() {
        let body = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{D1}","size":1}}]}}"#);
        let info = parse_manifest(body.as_bytes(), None).unwrap();
        assert_eq!(info.media_type, OCI_INDEX);
        assert_eq!(info.manifests.len(), 1);
    }

    #[test]
    fn subject_and_artifact_type_are_read_for_referrers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.example.sig","digest":"{D1}","size":0}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":7}},"annotations":{{"a":"b"}}}}"#
        );
        let info = parse_manifest(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(info.subject.unwrap().to_string(), D2);
        assert_eq!(
            info.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(info.annotations.unwrap()["a"], "b");
        let explicit = body.replace(r#""layers":[]"#, r#""layers":[],"artifactType":"x/y""#);
        let info = parse_manifest(explicit.as_bytes(), None).unwrap();
        assert_eq!(info.artifact_type.as_deref(), Some("x/y"));
    }

    #[test]
    fn bad_manifests_are_manifest_invalid() {
        let mismatch = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        for (body, ct) in [
            ("not json".to_string(), None),
            ("[1,2]".to_string(), None),
            (r#"{"schemaVersion":1}"#.to_string(), None),
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha256:nope"}}"#.to_string(),
                None,
            ),
            (mismatch, Some(OCI_MANIFEST)),
            (r#"{"schemaVersion":2}"#.to_string(), Some(OCI_MANIFEST)),
            (
                r#"{"schemaVersion":2,"mediaType":"a/b\r\nX-Evil: 1","manifests":[]}"#.to_string(),
                Some("application/json"),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"a/b\u0000","manifests":[]}"#.to_string(),
                None,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"a/{}","manifests":[]}}"#,
                    "b".repeat(100_000)
                ),
                None,
            ),
            (
                r#"{"schemaVersion":2,"manifests":[],"artifactType":"no slash"}"#.to_string(),
                None,
            ),
        ] {
            let err = parse_manifest(body.as_bytes(), ct).unwrap_err();
            assert_eq!(err.code, ErrorCode::ManifestInvalid, "{body}");
        }
    }
}
