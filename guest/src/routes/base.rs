//! `GET /v2/` and the catalog.

use serde_json::json;

use super::paginate;
use crate::access::{Access, Action, Decision};
use crate::http::{Request, Response};
use crate::oci::{RegistryError, Result};
use crate::store::Store;

/// The API version check clients start with.
pub fn version_check() -> Response {
    Response::new(200).json(&json!({}))
}

/// `GET /v2/_catalog`: the repositories the caller may pull, sorted,
/// paginated with `n` and `last`.
pub fn catalog(store: &Store, access: &dyn Access, req: &Request) -> Result<Response> {
    let repos = store
        .repositories()
        .map_err(|e| RegistryError::storage("listing repositories", &e))?
        .into_iter()
        .filter(|(name, _)| {
            name.parse().is_ok_and(|name| {
                matches!(access.authorize(&name, Action::Pull), Decision::Allowed)
            })
        })
        .map(|(name, _)| name)
        .collect();
    let (repos, link) = paginate(repos, req, "/v2/_catalog");
    let mut resp = Response::new(200).json(&json!({ "repositories": repos }));
    if let Some(link) = link {
        resp = resp.header("Link", link);
    }
    Ok(resp)
}
