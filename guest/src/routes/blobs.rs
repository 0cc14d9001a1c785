//! `HEAD` and `GET /v2/<name>/blobs/<digest>`, with `Range`.

use serde_json::json;

use crate::http::{Body, Request, Response};
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName, Result};
use crate::pull::Blob;
use crate::settings::Settings;
use crate::store::Store;

/// Response header saying where a blob GET's bytes come from (original,
/// blocks, cache, recreated, following; [`crate::pull::ServedFrom`]): the host counts
/// cache hits and misses by it and removes it before the response leaves.
pub const SERVED_FROM_HEADER: &str = "blockreg-served-from";

/// A byte range request, resolved against a blob's size: `start..end`.
/// `None` when the header is absent or not a single byte range (then the
/// whole blob is served, as RFC 9110 allows).
fn parse_range(header: Option<&str>, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header?.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => {
            let n = parse(b)?;
            if n == 0 {
                return Some(Err(()));
            }
            (size.saturating_sub(n), size)
        }
        (false, true) => (parse(a)?, size),
        (false, false) => {
            let (s, e) = (parse(a)?, parse(b)?);
            if e < s {
                return None;
            }
            (s, e.saturating_add(1).min(size))
        }
        (true, true) => return None,
    };
    if range.0 >= size {
        return Some(Err(()));
    }
    Some(Ok(range))
}

/// Serves a blob of the repository, whole or a range; where its bytes come
/// from is `pull.rs`'s business.
pub fn get(
    store: &Store,
    settings: &Settings,
    req: &Request,
    name: &RepoName,
    digest: &str,
) -> Result<Response> {
    let digest: Digest = digest.parse()?;
    let unknown = || {
        RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(json!({ "digest": digest.to_string() }))
    };
    if !store.blob_in_repo(name, &digest) {
        return Err(unknown());
    }
    if req.method == "HEAD" {
        // A push asking whether to send a blob will name it in a manifest
        // next: it counts as a use for the collection's grace period. A
        // stamp that cannot be written does not fail the answer (the
        // manifest push stamps again and checks).
        let _ = store.touch_blob(&digest);
    }
    // HEAD needs only the size; GET opens the blob.
    let blob = if req.method == "HEAD" {
        None
    } else {
        Some(
            Blob::open(store, &digest)
                .map_err(|e| RegistryError::storage("opening a blob", &e))?
                .ok_or_else(unknown)?,
        )
    };
    let size = match &blob {
        Some(blob) => blob.size(),
        None => store
            .blob_size(&digest)
            .map_err(|e| RegistryError::storage("reading a recipe", &e))?
            .ok_or_else(unknown)?,
    };
    let resp = Response::new(200)
        .header("Docker-Content-Digest", digest.to_string())
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream");
    let (status, start, end) = match parse_range(req.header("Range"), size) {
        None => (200, 0, size),
        Some(Ok((s, e))) => (206, s, e),
        Some(Err(())) => {
            return Err(RegistryError::new(
                ErrorCode::BlobUnknown,
                "requested range not satisfiable",
            )
            .with_status(416)
            .with_header("Content-Range", format!("bytes */{size}")));
        }
    };
    let mut resp = resp.header("Content-Length", (end - start).to_string());
    resp.status = status;
    if status == 206 {
        resp = resp.header("Content-Range", format!("bytes {start}-{}/{size}", end - 1));
    }
    resp.body = match blob {
        Some(blob) if end > start => {
            let reader = blob
                .read(store, settings.cache_bytes, start, end)
                .map_err(|e| RegistryError::storage("opening a blob", &e))?;
            resp = resp.header(SERVED_FROM_HEADER, reader.served_from().as_str());
            Body::Blob(Box::new(reader))
        }
        _ => Body::None,
    };
    Ok(resp)
}

/// Removes a blob from the repository. Its blocks stay: other blobs and
/// repositories may share them, and reclaiming unreferenced blocks is the
/// job of garbage collection, not of a request.
pub fn delete(store: &Store, name: &RepoName, digest: &str) -> Result<Response> {
    let digest: Digest = digest.parse()?;
    let unlinked = store
        .unlink_blob(name, &digest)
        .map_err(|e| RegistryError::storage("unlinking a blob", &e))?;
    if !unlinked {
        return Err(
            RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
                .with_detail(json!({ "digest": digest.to_string() })),
        );
    }
    Ok(Response::new(202).header("Content-Length", "0"))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Some(Ok((0, 10))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Some(Ok((90, 100))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Some(Ok((90, 100))));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Some(Ok((50, 100))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Some(Err(())));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), None);
        assert_eq!(parse_range(Some("items=0-1"), 100), None);
        assert_eq!(parse_range(None, 100), None);
    }
}
