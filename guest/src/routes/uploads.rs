//! Blob uploads: `POST` (start, monolithic, mount), `PATCH` (chunks),
//! `PUT` (finish), `GET` (status), `DELETE` (cancel).

use std::io::Read;
use std::time::Duration;

use super::upload_range;
use crate::access::{Access, Action, Decision};
use crate::http::{Request, Response};
use crate::ingest::commit_upload;
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName, Result};
use crate::settings::Settings;
use crate::store::{AppendError, HeldUpload, Hold, Store, Upload, UploadId};

fn session_unknown() -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        "blob upload unknown to registry",
    )
}

/// How long a request waits for another one to let go of a session.
const HOLD_WAIT: Duration = Duration::from_secs(10);

/// Holds a session of this repository for this request: one request at a
/// time appends to, commits or cancels a session (see `store.rs`). Another
/// repository's session is unknown here; one still busy after
/// [`HOLD_WAIT`] is answered as an out-of-order chunk would be (416 with
/// the acknowledged `Range`).
fn hold(store: &Store, settings: &Settings, name: &RepoName, id: &str) -> Result<HeldUpload> {
    let id = UploadId::parse(id).ok_or_else(session_unknown)?;
    // The lease outlives the request: the host drops an instance at the
    // request timeout, so an expired lease has no live holder.
    let lease = Duration::from_secs(settings.request_timeout_secs.saturating_add(60));
    match store
        .hold_upload(&id, lease, HOLD_WAIT)
        .map_err(|e| RegistryError::storage("holding an upload", &e))?
    {
        Hold::Held(held) if held.repo == name.as_str() => Ok(held),
        Hold::Held(_) | Hold::Unknown => Err(session_unknown()),
        Hold::Busy { size } => Err(RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            "the upload session is in use by another request",
        )
        .with_status(416)
        .with_header("Range", upload_range(size))
        .with_header("Docker-Upload-UUID", id.as_str())),
    }
}

/// A session of this repository, for its status.
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

/// Response header naming a blob this request committed: the host wakes its
/// background converter on it and removes it before the response leaves
/// (see `admin.convert-next` in `wit/admin.wit`). A mount commits nothing.
pub const COMMITTED_HEADER: &str = "blockreg-committed";

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

/// Appends the request body to a held session, honouring `Content-Range`
/// (must start at the current size, else 416 with the current `Range`).
/// Returns the session's new size.
fn append(req: &Request, held: &mut HeldUpload, body: &mut dyn Read) -> Result<u64> {
    let size = held.size();
    let mut expected = content_length(req)?;
    if let Some(raw) = req.header_bytes("Content-Range") {
        let malformed = || {
            RegistryError::new(ErrorCode::BlobUploadInvalid, "malformed Content-Range")
                .with_status(416)
                .with_header("Range", upload_range(size))
        };
        // Bytes that are not text are as malformed as any other garbage.
        let cr = std::str::from_utf8(raw).map_err(|_| malformed())?.trim();
        let cr = cr.strip_prefix("bytes ").unwrap_or(cr);
        let parsed = cr.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
        });
        let (start, end) = parsed.filter(|(a, b)| b >= a).ok_or_else(malformed)?;
        if start != size {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("chunk starts at {start}, the upload has {size} bytes"),
            )
            .with_status(416)
            .with_header("Range", upload_range(size)));
        }
        // `0-18446744073709551615` is a length no body has.
        let len = (end - start).checked_add(1).ok_or_else(malformed)?;
        if expected.is_some_and(|e| e != len) {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                "Content-Length does not match Content-Range",
            ));
        }
        expected = Some(len);
    }
    held.append(body, expected).map_err(|e| match e {
        // WASI reports most write failures as EIO whatever their cause,
        // a full disk included: say so, since the operator can act on it.
        AppendError::Store(e) => {
            RegistryError::storage("writing an upload (is the store full?)", &e)
        }
        e => RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("upload body failed: {e}"),
        ),
    })?;
    Ok(held.size())
}

/// Verifies and commits a held session's bytes as `digest`, links the blob
/// to the repository; the session is gone afterwards. The response tells
/// the host that a blob awaits conversion ([`COMMITTED_HEADER`]).
fn commit(store: &Store, name: &RepoName, held: HeldUpload, digest: &Digest) -> Result<Response> {
    commit_upload(store, held, digest)?;
    store
        .link_blob(name, digest)
        .map_err(|e| RegistryError::storage("linking a blob", &e))?;
    Ok(created(name, digest).header(COMMITTED_HEADER, digest.to_string()))
}

fn digest_param(req: &Request) -> Result<Digest> {
    req.query("digest")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            RegistryError::new(ErrorCode::DigestInvalid, "the digest parameter is required")
        })?
        .parse()
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new
/// session. A mount reads its source: when the caller may not pull from
/// `from`, the mount is not tried and a session opens instead, as for a
/// blob the source lacks (the spec's answer to a mount the registry does
/// not make), so nothing is said about what the source holds.
pub fn start(
    store: &Store,
    settings: &Settings,
    access: &dyn Access,
    req: &Request,
    name: &RepoName,
    body: &mut dyn Read,
) -> Result<Response> {
    if let Some(mount) = req.query("mount") {
        let digest: Digest = mount.parse()?;
        let available = match req.query("from") {
            Some(from) => {
                let from: RepoName = from.parse()?;
                matches!(access.authorize(&from, Action::Pull), Decision::Allowed)
                    && store.blob_in_repo(&from, &digest)
            }
            // Without `from` (OCI 1.1 allows it), a blob some repository
            // the caller may pull holds: knowing a digest must not open a
            // repository it may not read.
            None => store.has_blob(&digest) && readable_somewhere(store, access, &digest)?,
        };
        // Stamped before it is linked, so a collection keeps it until its
        // manifest arrives (see `manifests::put`).
        let available = available
            && store
                .touch_blob(&digest)
                .map_err(|e| RegistryError::storage("recording a blob's use", &e))?;
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
        // A monolithic upload: the session never outlives this request.
        let mut held = hold(store, settings, name, id.as_str())?;
        if let Err(e) = append(req, &mut held, body) {
            let _ = held.cancel();
            return Err(e);
        }
        return commit(store, name, held, &digest);
    }
    Ok(session_response(202, name, &id, 0))
}

/// Whether a repository the caller may pull holds `digest`.
fn readable_somewhere(store: &Store, access: &dyn Access, digest: &Digest) -> Result<bool> {
    let repositories = store
        .repositories()
        .map_err(|e| RegistryError::storage("listing repositories", &e))?;
    Ok(repositories.into_iter().any(|(name, _)| {
        name.parse::<RepoName>().is_ok_and(|name| {
            store.blob_in_repo(&name, digest)
                && matches!(access.authorize(&name, Action::Pull), Decision::Allowed)
        })
    }))
}

/// `GET` on a session: how much the registry has.
pub fn status(store: &Store, name: &RepoName, id: &str) -> Result<Response> {
    let (id, upload) = session(store, name, id)?;
    Ok(session_response(204, name, &id, upload.size))
}

/// `PATCH`: one chunk, or the whole body streamed.
pub fn patch(
    store: &Store,
    settings: &Settings,
    req: &Request,
    name: &RepoName,
    id: &str,
    body: &mut dyn Read,
) -> Result<Response> {
    let mut held = hold(store, settings, name, id)?;
    let size = append(req, &mut held, body)?;
    held.release()
        .map_err(|e| RegistryError::storage("releasing an upload", &e))?;
    let id = UploadId::parse(id).ok_or_else(session_unknown)?;
    Ok(session_response(202, name, &id, size))
}

/// `PUT ?digest=`: the optional last chunk, then verify and commit.
pub fn finish(
    store: &Store,
    settings: &Settings,
    req: &Request,
    name: &RepoName,
    id: &str,
    body: &mut dyn Read,
) -> Result<Response> {
    let digest = digest_param(req)?;
    let mut held = hold(store, settings, name, id)?;
    append(req, &mut held, body)?;
    commit(store, name, held, &digest)
}

/// `DELETE`: cancel the session.
pub fn cancel(store: &Store, settings: &Settings, name: &RepoName, id: &str) -> Result<Response> {
    let held = hold(store, settings, name, id)?;
    held.cancel()
        .map_err(|e| RegistryError::storage("removing an upload", &e))?;
    Ok(Response::new(204)
        .header("Content-Length", "0")
        .header("Docker-Upload-UUID", id))
}
