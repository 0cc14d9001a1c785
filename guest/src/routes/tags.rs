//! `GET /v2/<name>/tags/list`.

use serde_json::json;

use super::paginate;
use crate::http::{Request, Response};
use crate::oci::{ErrorCode, RegistryError, RepoName, Result};
use crate::store::Store;

/// The repository's tags, lexically sorted, paginated with `n` and `last`.
pub fn list(store: &Store, req: &Request, name: &RepoName) -> Result<Response> {
    let tags = store
        .tags(name)
        .map_err(|e| RegistryError::storage("listing tags", &e))?
        .ok_or_else(|| {
            RegistryError::new(
                ErrorCode::NameUnknown,
                "repository name not known to registry",
            )
            .with_detail(json!({ "name": name.as_str() }))
        })?;
    let (tags, link) = paginate(tags, req, &format!("/v2/{name}/tags/list"));
    let mut resp = Response::new(200).json(&json!({ "name": name.as_str(), "tags": tags }));
    if let Some(link) = link {
        resp = resp.header("Link", link);
    }
    Ok(resp)
}
