//! `GET /v2/` and the catalog.

use serde_json::json;

use super::paginate;
use crate::http::{Request, Response};
use crate::oci::{RegistryError, Result};
use crate::store::Store;

/// The API version check clients start with.
pub fn version_check() -> Response {
    Response::new(200).json(&json!({}))
}

/// `GET /v2/_catalog`: repositories, sorted, paginated with `n` and `last`.
pub fn catalog(store: &Store, req: &Request) -> Result<Response> {
    let repos = store
        .repositories()
        .map_err(|e| RegistryError::storage("listing repositories", &e))?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let (repos, link) = paginate(repos, req, "/v2/_catalog");
    let mut resp = Response::new(200).json(&json!({ "repositories": repos }));
    if let Some(link) = link {
        resp = resp.header("Link", link);
    }
    Ok(resp)
}
