//! Blob uploads: `POST` (start, monolithic, mount), `PATCH` (chunks),
//! `PUT` (finish), `GET` (status), `DELETE` (cancel).

use std::io::Read;

use super::upload_range;
use crate::http::{Request, Response};
use crate::ingest::commit_upload;
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName, Result};
use crate::store::{Store, Upload, UploadId};

fn session_unknown() -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        "blob upload unknown to registry",
    )
}

/// Finds a session of this repository; another repository's session is unknown here.
fn session(store: &Store, name: &RepoName, id: &str) -> Result<(UploadId, Upload)> {
    let id = UploadId::parse(id).ok_or_else(session_unknown)?;
    let upload = store
        .upload(&id)
        .map_err(|e| RegistryError::storage("reading an upload", &e))?
        .filter(|u| u.repo == name.as_str())
        .ok_or_else(session_unknown)?;
    Ok((id, upload))
}

fn session_response(status: u16, name: &RepoName, id: &UploadId, size: u64) -> Response {
    Response::new(status)
        .header(
            "Location",
            format!("/v2/{name}/blobs/uploads/{}", id.as_str()),
        )
        .header("Docker-Upload-UUID", id.as_str())
        .header("Range", upload_range(size))
        .header("Content-Length", "0")
}

fn created(name: &RepoName, digest: &Digest) -> Response {
    Response::new(201)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.to_string())
        .header("Content-Length", "0")
}

fn content_length(req: &Request) -> Result<Option<u64>> {
    req.header("Content-Length")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                RegistryError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")
            })
        })
        .transpose()
}

/// Appends the request body, honouring `Content-Range` (must start at the
/// current size, else 416 with the current `Range`).
fn append(
    store: &Store,
    req: &Request,
    id: &UploadId,
    size: u64,
    body: &mut dyn Read,
) -> Result<u64> {
    let mut expected = content_length(req)?;
    if let Some(cr) = req.header("Content-Range") {
        let cr = cr.strip_prefix("bytes ").unwrap_or(cr);
        let parsed = cr.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
        });
        let (start, end) = parsed.filter(|(a, b)| b >= a).ok_or_else(|| {
            RegistryError::new(ErrorCode::BlobUploadInvalid, "malformed Content-Range")
                .with_status(416)
                .with_header("Range", upload_range(size))
        })?;
        if start != size {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("chunk starts at {start}, the upload has {size} bytes"),
            )
            .with_status(416)
            .with_header("Range", upload_range(size))
            .with_header("Docker-Upload-UUID", id.as_str()));
        }
        let len = end - start + 1;
        if expected.is_some_and(|e| e != len) {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                "Content-Length does not match Content-Range",
            ));
        }
        expected = Some(len);
    }
    let n = store.append_upload(id, body, expected).map_err(|e| {
        RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("upload body failed: {e}"),
        )
    })?;
    Ok(size + n)
}

/// Verifies and commits a session's bytes as `digest`, links the blob to the
/// repository, and removes the session.
fn commit(store: &Store, name: &RepoName, id: &UploadId, digest: &Digest) -> Result<Response> {
    let result = commit_upload(store, id, digest);
    if let Err(e) = &result {
        if e.code == ErrorCode::DigestInvalid {
            // The client must start over; keep no bytes that can never commit.
            let _ = store.delete_upload(id);
        }
    }
    result?;
    store
        .link_blob(name, digest)
        .map_err(|e| RegistryError::storage("linking a blob", &e))?;
    store
        .delete_upload(id)
        .map_err(|e| RegistryError::storage("removing an upload", &e))?;
    Ok(created(name, digest))
}

fn digest_param(req: &Request) -> Result<Digest> {
    req.query("digest")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            RegistryError::new(ErrorCode::DigestInvalid, "the digest parameter is required")
        })?
        .parse()
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub fn start(
    store: &Store,
    req: &Request,
    name: &RepoName,
    body: &mut dyn Read,
) -> Result<Response> {
    if let Some(mount) = req.query("mount") {
        let digest: Digest = mount.parse()?;
        let available = match req.query("from") {
            Some(from) => store.blob_in_repo(&from.parse()?, &digest),
            // Without `from`, any committed blob may be mounted (OCI 1.1 allows this).
            None => store.has_blob(&digest),
        };
        if available {
            store
                .link_blob(name, &digest)
                .map_err(|e| RegistryError::storage("linking a blob", &e))?;
            return Ok(created(name, &digest));
        }
    }
    let digest = match req.query("digest") {
        Some(_) => Some(digest_param(req)?),
        None => None,
    };
    let id = store
        .create_upload(name)
        .map_err(|e| RegistryError::storage("creating an upload", &e))?;
    if let Some(digest) = digest {
        let r = append(store, req, &id, 0, body).and_then(|_| commit(store, name, &id, &digest));
        if r.is_err() {
            let _ = store.delete_upload(&id);
        }
        return r;
    }
    Ok(session_response(202, name, &id, 0))
}

/// `GET` on a session: how much the registry has.
pub fn status(store: &Store, name: &RepoName, id: &str) -> Result<Response> {
    let (id, upload) = session(store, name, id)?;
    Ok(session_response(204, name, &id, upload.size))
}

/// `PATCH`: one chunk, or the whole body streamed.
pub fn patch(
    store: &Store,
    req: &Request,
    name: &RepoName,
    id: &str,
    body: &mut dyn Read,
) -> Result<Response> {
    let (id, upload) = session(store, name, id)?;
    let size = append(store, req, &id, upload.size, body)?;
    Ok(session_response(202, name, &id, size))
}

/// `PUT ?digest=`: the optional last chunk, then verify and commit.
pub fn finish(
    store: &Store,
    req: &Request,
    name: &RepoName,
    id: &str,
    body: &mut dyn Read,
) -> Result<Response> {
    let (id, upload) = session(store, name, id)?;
    let digest = digest_param(req)?;
    append(store, req, &id, upload.size, body)?;
    commit(store, name, &id, &digest)
}

/// `DELETE`: cancel the session.
pub fn cancel(store: &Store, name: &RepoName, id: &str) -> Result<Response> {
    let (id, _) = session(store, name, id)?;
    store
        .delete_upload(&id)
        .map_err(|e| RegistryError::storage("removing an upload", &e))?;
    Ok(Response::new(204)
        .header("Content-Length", "0")
        .header("Docker-Upload-UUID", id.as_str()))
}
