//! `HEAD`, `GET` and `PUT /v2/<name>/manifests/<reference>`.

use std::io::Read;

use serde_json::json;

use crate::http::{Request, Response};
use crate::oci::media::{parse_manifest, MAX_MANIFEST_BYTES};
use crate::oci::{Algorithm, Digest, ErrorCode, Reference, RegistryError, RepoName, Result};
use crate::store::Store;

fn manifest_unknown(reference: &str) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
        .with_detail(json!({ "reference": reference }))
}

/// Serves a manifest byte-exact with its stored media type.
pub fn get(store: &Store, name: &RepoName, reference: &str) -> Result<Response> {
    let digest = match reference.parse::<Reference>()? {
        Reference::Digest(d) => d,
        Reference::Tag(t) => store
            .tag(name, &t)
            .map_err(|e| RegistryError::storage("reading a tag", &e))?
            .ok_or_else(|| manifest_unknown(reference))?,
    };
    let (media_type, bytes) = store
        .manifest(name, &digest)
        .map_err(|e| RegistryError::storage("reading a manifest", &e))?
        .ok_or_else(|| manifest_unknown(reference))?;
    Ok(Response::new(200)
        .header("Docker-Content-Digest", digest.to_string())
        .bytes(&media_type, bytes))
}

/// Reads at most `limit` bytes; more is a 413.
fn read_limited(body: &mut dyn Read, limit: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    body.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            )
        })?;
    if buf.len() > limit {
        return Err(RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("manifest is larger than {limit} bytes"),
        )
        .with_status(413));
    }
    Ok(buf)
}

/// Stores a manifest after checking that everything it references is in
/// the repository; tags it when the reference is a tag.
pub fn put(
    store: &Store,
    req: &Request,
    name: &RepoName,
    reference: &str,
    body: &mut dyn Read,
) -> Result<Response> {
    let reference: Reference = reference.parse()?;
    let bytes = read_limited(body, MAX_MANIFEST_BYTES)?;
    let digest = match &reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    "the manifest does not match the digest in the URL",
                )
                .with_detail(json!({"expected": d.to_string(), "actual": actual.to_string()})));
            }
            actual
        }
        Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
    };
    let info = parse_manifest(&bytes, req.header("Content-Type"))?;
    let missing_blob = info.blobs.iter().find(|d| !store.blob_in_repo(name, d));
    let missing_manifest = info.manifests.iter().find(|d| !store.has_manifest(name, d));
    if let Some(d) = missing_blob.or(missing_manifest) {
        return Err(RegistryError::new(
            ErrorCode::ManifestBlobUnknown,
            "the manifest references content that is not in the repository",
        )
        .with_detail(json!({ "digest": d.to_string() })));
    }
    store
        .put_manifest(name, &digest, &info.media_type, &bytes)
        .map_err(|e| RegistryError::storage("writing a manifest", &e))?;
    if let Some(subject) = &info.subject {
        let mut descriptor = json!({
            "mediaType": info.media_type,
            "digest": digest.to_string(),
            "size": bytes.len(),
        });
        if let Some(t) = &info.artifact_type {
            descriptor["artifactType"] = json!(t);
        }
        if let Some(a) = &info.annotations {
            descriptor["annotations"] = json!(a);
        }
        store
            .put_referrer(name, subject, &digest, &descriptor)
            .map_err(|e| RegistryError::storage("recording a referrer", &e))?;
    }
    if let Reference::Tag(tag) = &reference {
        store
            .put_tag(name, tag, &digest)
            .map_err(|e| RegistryError::storage("writing a tag", &e))?;
    }
    let mut resp = Response::new(201)
        .header("Location", format!("/v2/{name}/manifests/{digest}"))
        .header("Docker-Content-Digest", digest.to_string())
        .header("Content-Length", "0");
    if let Some(subject) = &info.subject {
        resp = resp.header("OCI-Subject", subject.to_string());
    }
    Ok(resp)
}

/// Deletes a tag (`DELETE …/manifests/<tag>`), or a manifest with every tag
/// pointing at it and its referrers entry (`DELETE …/manifests/<digest>`).
pub fn delete(store: &Store, name: &RepoName, reference: &str) -> Result<Response> {
    let storage = |what| move |e: std::io::Error| RegistryError::storage(what, &e);
    let found = match reference.parse::<Reference>()? {
        Reference::Tag(tag) => store
            .delete_tag(name, &tag)
            .map_err(storage("deleting a tag"))?,
        Reference::Digest(digest) => {
            let stored = store
                .manifest(name, &digest)
                .map_err(storage("reading a manifest"))?;
            if let Some((media_type, bytes)) = &stored {
                // Stored manifests parsed when they were pushed; a subject, if any, is still there.
                if let Ok(Some(subject)) =
                    parse_manifest(bytes, Some(media_type)).map(|info| info.subject)
                {
                    store
                        .delete_referrer(name, &subject, &digest)
                        .map_err(storage("removing a referrer"))?;
                }
            }
            store
                .delete_manifest(name, &digest)
                .map_err(storage("deleting a manifest"))?
        }
    };
    if !found {
        return Err(manifest_unknown(reference));
    }
    Ok(Response::new(202).header("Content-Length", "0"))
}
