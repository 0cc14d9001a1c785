//! `GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is
//! that digest, as an OCI image index, optionally filtered by `artifactType`.

use serde_json::json;

use crate::http::{Request, Response};
use crate::oci::media::OCI_INDEX;
use crate::oci::{Digest, RegistryError, RepoName, Result};
use crate::store::Store;

/// Lists referrers; an unknown subject has none (200 with an empty index).
pub fn list(store: &Store, req: &Request, name: &RepoName, digest: &str) -> Result<Response> {
    let subject: Digest = digest.parse()?;
    let mut descriptors = store
        .referrers(name, &subject)
        .map_err(|e| RegistryError::storage("listing referrers", &e))?;
    let filter = req.query("artifactType").filter(|t| !t.is_empty());
    if let Some(t) = filter {
        descriptors.retain(|d| d["artifactType"] == t);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    let body = serde_json::to_vec(&index).expect("a json value always serializes");
    let mut resp = Response::new(200).bytes(OCI_INDEX, body);
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp)
}
