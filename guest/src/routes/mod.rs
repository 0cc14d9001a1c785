//! Request routing: maps a request to one endpoint group, asks the host
//! whether the caller may (`access.rs`: after the repository name parsed,
//! before the store is touched), and turns the result, or its error, into a
//! response with the headers every answer carries.

mod base;
mod blobs;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::io::Read;

use crate::access::{self, Access, Action};
use crate::http::{Request, Response};
use crate::oci::{ErrorCode, RegistryError, RepoName, Result};
use crate::settings::Settings;
use crate::store::Store;

/// The endpoint a path names. Repository names may contain `/`, so the
/// endpoint is recognised from the end of the path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str),
    Upload(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    if path == "/v2" || path == "/v2/" {
        return Some(Route::Base);
    }
    let rest = path.strip_prefix("/v2/")?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or(rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name));
    }
    let (head, last) = rest.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload(name, last));
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return Some(Route::Blob(name, last));
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return Some(Route::Manifest(name, last));
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return Some(Route::Referrers(name, last));
    }
    None
}

fn not_found() -> RegistryError {
    RegistryError::new(ErrorCode::NameUnknown, "no such endpoint")
}

impl Route<'_> {
    /// The methods the endpoint answers, for `Allow` on a 405.
    fn allowed(&self) -> &'static str {
        match self {
            Route::Base | Route::Catalog | Route::Tags(_) | Route::Referrers(..) => "GET, HEAD",
            Route::Blob(..) => "GET, HEAD, DELETE",
            Route::Uploads(_) => "POST",
            Route::Upload(..) => "GET, PATCH, PUT, DELETE",
            Route::Manifest(..) => "GET, HEAD, PUT, DELETE",
        }
    }
}

fn unsupported(method: &str, allow: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("method {method} is not supported on this endpoint"),
    )
    .with_header("Allow", allow)
}

/// Deletion can be turned off by the operator (`blockreg serve --no-delete`).
fn deletion_allowed(settings: &Settings) -> Result<()> {
    if settings.delete_enabled {
        Ok(())
    } else {
        Err(RegistryError::new(
            ErrorCode::Unsupported,
            "deletion is disabled on this registry",
        ))
    }
}

fn route(
    store: &Store,
    settings: &Settings,
    access: &dyn Access,
    req: &Request,
    body: &mut dyn Read,
) -> Result<Response> {
    let route = parse_route(&req.path).ok_or_else(not_found)?;
    // The repository's name, once the caller may do `action` on it.
    let name = |n: &str, action: Action| -> Result<RepoName> {
        let name: RepoName = n.parse()?;
        access::check(access, &name, action)?;
        Ok(name)
    };
    let (pull, push, delete) = (Action::Pull, Action::Push, Action::Delete);
    let m = req.method.as_str();
    let allow = route.allowed();
    match (route, m) {
        (Route::Base, "GET" | "HEAD") => {
            access::require(access.authorize_base(), "use this registry")?;
            Ok(base::version_check())
        }
        (Route::Catalog, "GET" | "HEAD") => {
            access::require(access.authorize_base(), "list the repositories")?;
            base::catalog(store, access, req)
        }
        (Route::Tags(n), "GET" | "HEAD") => tags::list(store, req, &name(n, pull)?),
        (Route::Blob(n, d), "GET" | "HEAD") => blobs::get(store, settings, req, &name(n, pull)?, d),
        (Route::Uploads(n), "POST") => {
            uploads::start(store, settings, access, req, &name(n, push)?, body)
        }
        (Route::Upload(n, id), "GET") => uploads::status(store, &name(n, push)?, id),
        (Route::Upload(n, id), "PATCH") => {
            uploads::patch(store, settings, req, &name(n, push)?, id, body)
        }
        (Route::Upload(n, id), "PUT") => {
            uploads::finish(store, settings, req, &name(n, push)?, id, body)
        }
        (Route::Upload(n, id), "DELETE") => uploads::cancel(store, settings, &name(n, push)?, id),
        (Route::Manifest(n, r), "GET" | "HEAD") => manifests::get(store, req, &name(n, pull)?, r),
        (Route::Manifest(n, r), "PUT") => {
            manifests::put(store, settings, req, &name(n, push)?, r, body)
        }
        (Route::Manifest(n, r), "DELETE") => {
            let name = name(n, delete)?;
            deletion_allowed(settings)?;
            manifests::delete(store, &name, r)
        }
        (Route::Blob(n, d), "DELETE") => {
            let name = name(n, delete)?;
            deletion_allowed(settings)?;
            blobs::delete(store, &name, d)
        }
        (Route::Referrers(n, d), "GET" | "HEAD") => referrers::list(store, req, &name(n, pull)?, d),
        _ => Err(unsupported(m, allow)),
    }
}

/// This guest build's identity, sent as `Blockreg-Guest` on every response.
pub fn guest_version() -> String {
    let suffix = match (cfg!(feature = "alt-build"), cfg!(feature = "fastcdc")) {
        (true, _) => "+alt",
        (false, true) => "+fastcdc",
        (false, false) => "",
    };
    format!("blockreg-guest/{}{suffix}", env!("CARGO_PKG_VERSION"))
}

/// Answers one request under the operator's `settings`, for a caller whose
/// rights `access` knows. Never fails: errors become spec error responses.
pub fn handle(
    store: &Store,
    settings: &Settings,
    access: &dyn Access,
    req: &Request,
    body: &mut dyn Read,
) -> Response {
    let resp = route(store, settings, access, req, body).unwrap_or_else(Response::from);
    let resp = resp
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .header("Blockreg-Guest", guest_version());
    if req.method == "HEAD" {
        resp.without_body()
    } else {
        resp
    }
}

/// `Range: 0-<last byte>` as registry:2 writes it (`0-0` when empty).
fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Pagination shared by the catalog and tag lists: entries after `last`,
/// at most `n`, and the `Link` to the next page when more remain.
fn paginate(all: Vec<String>, req: &Request, base: &str) -> (Vec<String>, Option<String>) {
    let n = req.query("n").and_then(|n| n.parse::<usize>().ok());
    let last = req.query("last");
    let mut items: Vec<String> = match last {
        Some(l) => all.into_iter().filter(|t| t.as_str() > l).collect(),
        None => all,
    };
    let mut link = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            if let Some(l) = items.last() {
                link = Some(format!("<{base}?n={n}&last={l}>; rel=\"next\""));
            }
        }
    }
    (items, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_from_the_end_of_the_path() {
        assert_eq!(parse_route("/v2/"), Some(Route::Base));
        assert_eq!(parse_route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(parse_route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/"),
            Some(Route::Uploads("a"))
        );
        assert_eq!(
            parse_route("/v2/a/b/blobs/uploads/123"),
            Some(Route::Upload("a/b", "123"))
        );
        assert_eq!(
            parse_route("/v2/x/blobs/sha256:00"),
            Some(Route::Blob("x", "sha256:00"))
        );
        assert_eq!(
            parse_route("/v2/x/manifests/latest"),
            Some(Route::Manifest("x", "latest"))
        );
        // A repository may itself be called "blobs" or "manifests".
        assert_eq!(
            parse_route("/v2/blobs/manifests/v1"),
            Some(Route::Manifest("blobs", "v1"))
        );
        assert_eq!(
            parse_route("/v2/x/y/referrers/sha256:00"),
            Some(Route::Referrers("x/y", "sha256:00"))
        );
        assert_eq!(parse_route("/v1/x"), None);
        assert_eq!(parse_route("/v2/x/unknown/y"), None);
    }

    #[test]
    fn pagination_follows_last_and_n() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let req = Request::new("GET", "/x?n=2&last=a", vec![]);
        let (items, link) = paginate(all.clone(), &req, "/v2/r/tags/list");
        assert_eq!(items, ["b", "c"]);
        assert_eq!(link.unwrap(), "</v2/r/tags/list?n=2&last=c>; rel=\"next\"");
        let req = Request::new("GET", "/x?n=5", vec![]);
        let (items, link) = paginate(all, &req, "/v2/r/tags/list");
        assert_eq!(items.len(), 4);
        assert!(link.is_none());
    }

    #[test]
    fn unsupported_methods_name_the_allowed_ones() {
        let e = unsupported("PUT", parse_route("/v2/").unwrap().allowed());
        assert_eq!(e.http_status(), 405);
        assert_eq!(e.headers, [("Allow".to_string(), "GET, HEAD".to_string())]);
    }

    /// Pull anywhere but `secret`, push only to `mine`, no delete; the
    /// base endpoint wants a login.
    struct Rules;

    impl Access for Rules {
        fn authorize(&self, name: &RepoName, action: Action) -> access::Decision {
            let allowed = match action {
                Action::Pull => name.as_str() != "secret",
                Action::Push => name.as_str() == "mine",
                Action::Delete => false,
            };
            if allowed {
                access::Decision::Allowed
            } else if action == Action::Push {
                access::Decision::Unauthenticated("Basic realm=\"r\"".into())
            } else {
                access::Decision::Denied
            }
        }

        fn authorize_base(&self) -> access::Decision {
            access::Decision::Unauthenticated("Basic realm=\"r\"".into())
        }
    }

    fn call(store: &Store, method: &str, path: &str) -> Response {
        handle(
            store,
            &crate::test_support::settings(),
            &Rules,
            &Request::new(method, path, vec![]),
            &mut std::io::empty(),
        )
    }

    #[test]
    fn each_route_asks_for_its_action_before_touching_the_store() {
        let store = crate::test_support::scratch_store("routes-access");
        let base = call(&store, "GET", "/v2/");
        assert_eq!(base.status, 401);
        assert!(base
            .headers
            .contains(&("WWW-Authenticate".into(), "Basic realm=\"r\"".into())));
        assert_eq!(call(&store, "POST", "/v2/other/blobs/uploads/").status, 401);
        assert_eq!(call(&store, "POST", "/v2/mine/blobs/uploads/").status, 202);
        assert_eq!(call(&store, "GET", "/v2/secret/tags/list").status, 403);
        assert_eq!(call(&store, "GET", "/v2/open/tags/list").status, 404);
        let digest = "sha256:".to_owned() + &"0".repeat(64);
        assert_eq!(
            call(&store, "DELETE", &format!("/v2/mine/manifests/{digest}")).status,
            403
        );
        assert_eq!(
            call(&store, "DELETE", &format!("/v2/mine/blobs/{digest}")).status,
            403
        );
        assert_eq!(
            call(&store, "GET", &format!("/v2/secret/referrers/{digest}")).status,
            403
        );
        // Nothing was created for the refused upload.
        assert_eq!(store.repositories().unwrap(), vec![]);
    }

    #[test]
    fn empty_upload_range_is_0_0() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
