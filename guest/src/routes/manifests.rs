//! `HEAD`, `GET` and `PUT /v2/<name>/manifests/<reference>`.

use std::io::Read;

use serde_json::json;

use crate::http::{Request, Response};
use crate::oci::media::{
    parse_manifest, ManifestInfo, DOCKER_MANIFEST_LIST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
use crate::oci::{Algorithm, Digest, ErrorCode, Reference, RegistryError, RepoName, Result};
use crate::settings::Settings;
use crate::store::Store;

fn manifest_unknown(reference: &str) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
        .with_detail(json!({ "reference": reference }))
}

/// Serves a manifest byte-exact with its stored media type, after content
/// negotiation on `Accept` as registry:2 does it (see [`negotiate`]). A
/// reference that is not a valid tag or digest names nothing: 404
/// `MANIFEST_UNKNOWN`, as registry:2 and the conformance suite expect.
pub fn get(store: &Store, req: &Request, name: &RepoName, reference: &str) -> Result<Response> {
    let parsed = reference
        .parse::<Reference>()
        .map_err(|_| manifest_unknown(&reference.chars().take(256).collect::<String>()))?;
    let digest = match parsed {
        Reference::Digest(d) => d,
        Reference::Tag(t) => store
            .tag(name, &t)
            .map_err(|e| RegistryError::storage("reading a tag", &e))?
            .ok_or_else(|| manifest_unknown(reference))?,
    };
    let (media_type, bytes) = read_manifest(store, name, &digest, reference)?;
    let (digest, media_type, bytes) = negotiate(
        store,
        name,
        &req.header_items("Accept"),
        (digest, media_type, bytes),
        reference,
    )?;
    Ok(Response::new(200)
        .header("Docker-Content-Digest", digest.to_string())
        .bytes(&media_type, bytes))
}

fn read_manifest(
    store: &Store,
    name: &RepoName,
    digest: &Digest,
    reference: &str,
) -> Result<(String, Vec<u8>)> {
    store
        .manifest(name, digest)
        .map_err(|e| RegistryError::storage("reading a manifest", &e))?
        .ok_or_else(|| manifest_unknown(reference))
}

/// registry:2's content negotiation. A client that sends no `Accept`, or
/// accepts `*/*` or the stored type, gets the manifest as stored. Otherwise:
/// a Docker manifest list is answered with its linux/amd64 image (what old
/// clients pull), an OCI index or OCI manifest the client cannot read is
/// `MANIFEST_UNKNOWN`, and other types are served as stored (registry:2
/// would down-convert Docker schema 2 to the long-deprecated schema 1).
fn negotiate(
    store: &Store,
    name: &RepoName,
    accept: &[&str],
    found: (Digest, String, Vec<u8>),
    reference: &str,
) -> Result<(Digest, String, Vec<u8>)> {
    let media_type = found.1.as_str();
    if accept.is_empty() || accept.iter().any(|a| *a == "*/*" || *a == media_type) {
        return Ok(found);
    }
    let refuse = |what: &str| {
        Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("{what} found, but the Accept header does not support it"),
        )
        .with_detail(json!({ "reference": reference })))
    };
    match media_type {
        DOCKER_MANIFEST_LIST => {
            let child = linux_amd64_child(&found.2);
            match child {
                Some(d) if store.has_manifest(name, &d) => {
                    let (t, b) = read_manifest(store, name, &d, reference)?;
                    Ok((d, t, b))
                }
                _ => refuse("a manifest list without a linux/amd64 image"),
            }
        }
        OCI_INDEX => refuse("an OCI index"),
        OCI_MANIFEST => refuse("an OCI manifest"),
        _ => Ok(found),
    }
}

/// The linux/amd64 entry of a manifest list, if it has one.
fn linux_amd64_child(list: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(list).ok()?;
    v["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
        .and_then(|m| m["digest"].as_str()?.parse().ok())
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
    settings: &Settings,
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
    // Foreign layers are fetched by clients from their URLs: they need not
    // be here unless the operator refuses them.
    let foreign: &[Digest] = if settings.accept_foreign_layers {
        &[]
    } else {
        &info.foreign
    };
    // Stamp first, check second: a garbage collection sets an unused blob
    // (or untagged manifest) aside before it reads its stamp, so either it
    // sees this use and puts it back, or this check finds it gone and the
    // push is refused; never a manifest naming a collected blob (gc.rs).
    let storage = |e: std::io::Error| RegistryError::storage("recording a blob's use", &e);
    let mut missing = None;
    for d in info.blobs.iter().chain(foreign) {
        if !(store.touch_blob(d).map_err(storage)? && store.blob_in_repo(name, d)) {
            missing = Some(d);
            break;
        }
    }
    if missing.is_none() {
        for d in &info.manifests {
            if !store.touch_manifest(name, d).map_err(storage)? {
                missing = Some(d);
                break;
            }
        }
    }
    if settings.accept_foreign_layers {
        // Foreign layers pushed here anyway are kept like the others.
        for d in &info.foreign {
            store.touch_blob(d).map_err(storage)?;
        }
    }
    if let Some(d) = missing {
        return Err(RegistryError::new(
            ErrorCode::ManifestBlobUnknown,
            "the manifest references content that is not in the repository",
        )
        .with_detail(json!({ "digest": d.to_string() })));
    }
    // Each write below is one atomic file. A DELETE of this digest racing
    // them may remove the manifest after it was written, and a tag written
    // next would then name nothing; so the manifest is checked last and
    // written again when gone: this PUT then takes effect after that DELETE.
    let mut attempts = 0;
    loop {
        write_manifest(store, name, &reference, &digest, &info, &bytes)?;
        if store.has_manifest(name, &digest) {
            break;
        }
        attempts += 1;
        if attempts == 5 {
            return Err(RegistryError::new(
                ErrorCode::Unknown,
                "the manifest kept being deleted while it was pushed",
            ));
        }
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

/// Writes a manifest, its referrers entry and its tag, in that order.
fn write_manifest(
    store: &Store,
    name: &RepoName,
    reference: &Reference,
    digest: &Digest,
    info: &ManifestInfo,
    bytes: &[u8],
) -> Result<()> {
    store
        .put_manifest(name, digest, &info.media_type, bytes)
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
            .put_referrer(name, subject, digest, &descriptor)
            .map_err(|e| RegistryError::storage("recording a referrer", &e))?;
    }
    if let Reference::Tag(tag) = reference {
        store
            .put_tag(name, tag, digest)
            .map_err(|e| RegistryError::storage("writing a tag", &e))?;
    }
    Ok(())
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
            // Stored manifests parsed when they were pushed; a subject, if any, is still there.
            let subject = stored.as_ref().and_then(|(media_type, bytes)| {
                parse_manifest(bytes, Some(media_type))
                    .ok()
                    .and_then(|info| info.subject)
            });
            let unrefer = || match &subject {
                Some(subject) => store
                    .delete_referrer(name, subject, &digest)
                    .map_err(storage("removing a referrer")),
                None => Ok(()),
            };
            unrefer()?;
            let found = store
                .delete_manifest(name, &digest)
                .map_err(storage("deleting a manifest"))?;
            // Again once it is gone, as for its tags: a racing PUT may have
            // recorded it meanwhile.
            unrefer()?;
            found
        }
    };
    if !found {
        return Err(manifest_unknown(reference));
    }
    Ok(Response::new(202).header("Content-Length", "0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linux_amd64_entry_of_a_list_is_found() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let list = format!(
            r#"{{"manifests":[{{"digest":"sha256:{}","platform":{{"os":"linux","architecture":"arm64"}}}},{{"digest":"{d}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            "1".repeat(64)
        );
        assert_eq!(linux_amd64_child(list.as_bytes()).unwrap().to_string(), d);
        assert!(linux_amd64_child(b"{}").is_none());
    }
}
