//! Objects in an S3-compatible bucket (Garage, Ceph RGW, AWS), through
//! the `object_store` crate: signature v4, path-style or virtual-hosted
//! requests, retries with exponential backoff on 5xx and timeouts.
//!
//! What the interface needs of S3 is only what every one of these engines
//! does: PUT replaces an object atomically, GET and LIST see a completed
//! PUT at once (Garage in consistent mode, RGW: `bench/garage/README.md`,
//! `bench/ceph/README.md`). No conditional request is used: Garage 2.5
//! ignores `If-None-Match`.
//!
//! Not yet selectable by the operator: only records of the object seam go
//! through it (manifests, tags, referrers, links), blobs do not yet, so a
//! store on S3 alone would not be whole. Tested against real Garage and
//! Ceph by the test command (`tests/run-all.sh`, object storage tier).
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "built only by tests until the whole store can live in a bucket"
    )
)]

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, PutPayload};

use crate::bindings::objects::{Error, Info, Listing};

/// Where the bucket is and how to reach it: registry:2's `storage.s3`
/// keys, by their meaning.
#[derive(Clone)]
pub(crate) struct S3Settings {
    /// `regionendpoint`: the engine's URL, e.g. `http://127.0.0.1:3900`.
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) bucket: String,
    /// `rootdirectory`: a key prefix under which the store lives.
    pub(crate) root: Option<String>,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    /// `forcepathstyle`: `/bucket/key` requests instead of
    /// `bucket.host/key` (Garage and RGW without wildcard DNS need it).
    pub(crate) path_style: bool,
}

impl std::fmt::Debug for S3Settings {
    // The secret key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .field("access_key", &self.access_key)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// One bucket (and prefix) holding a store's objects.
pub(crate) struct S3Objects {
    bucket: AmazonS3,
    root: Option<String>,
}

/// How long one request may take before it is retried (the library
/// retries 5xx answers and timeouts with backoff, up to its own bound).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn error(key: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    match e {
        // Retries exhausted, timeouts, 5xx, connection refused: another
        // attempt later may succeed.
        E::Generic { .. } => Error::Unavailable(format!("{key}: {e}")),
        _ => Error::Other(format!("{key}: {e}")),
    }
}

fn info(meta: &ObjectMeta) -> Info {
    Info {
        name: meta.location.filename().unwrap_or_default().to_string(),
        size: meta.size,
        modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
    }
}

impl S3Objects {
    /// A client of the bucket (no request is made yet).
    ///
    /// # Errors
    /// When the settings do not make a client (a malformed endpoint).
    pub(crate) fn new(s: &S3Settings) -> Result<Self, object_store::Error> {
        let bucket = AmazonS3Builder::new()
            .with_endpoint(&s.endpoint)
            .with_region(&s.region)
            .with_bucket_name(&s.bucket)
            .with_access_key_id(&s.access_key)
            .with_secret_access_key(&s.secret_key)
            .with_virtual_hosted_style_request(!s.path_style)
            // The client options hold `allow_http` too: set once, here.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(s.endpoint.starts_with("http://"))
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT),
            )
            .build()?;
        let root = s
            .root
            .as_deref()
            .map(|r| r.trim_matches('/').to_string())
            .filter(|r| !r.is_empty());
        Ok(Self { bucket, root })
    }

    /// The bucket's key of an (already checked) interface key.
    fn path(&self, key: &str) -> Result<ObjectPath, Error> {
        let full = match &self.root {
            Some(root) => format!("{root}/{key}"),
            None => key.to_string(),
        };
        ObjectPath::parse(full).map_err(|e| Error::InvalidKey(format!("{key}: {e}")))
    }

    pub(crate) async fn stat(&self, key: &str) -> Result<Option<Info>, Error> {
        match self.bucket.head(&self.path(key)?).await {
            Ok(meta) => Ok(Some(info(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(error(key, e)),
        }
    }

    pub(crate) async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let got = match self.bucket.get(&self.path(key)?).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(error(key, e)),
        };
        // Refused before its body is read.
        if got.meta.size > max {
            return Err(Error::TooLarge(got.meta.size));
        }
        let bytes = got.bytes().await.map_err(|e| error(key, e))?;
        Ok(Some(bytes.to_vec()))
    }

    pub(crate) async fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path(key)?;
        // One ranged GET; a range past the end is answered with what there
        // is (RFC 9110: the last-byte position is cut to the object's end);
        // one starting past the end is an error (416).
        match self
            .bucket
            .get_range(&path, offset..offset.saturating_add(len))
            .await
        {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(error(key, e)),
        }
    }

    pub(crate) async fn write(&self, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.bucket
            .put(&self.path(key)?, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| error(key, e))
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, Error> {
        // S3 answers 204 whether or not the key existed.
        let existed = self.stat(key).await?.is_some();
        self.bucket
            .delete(&self.path(key)?)
            .await
            .map_err(|e| error(key, e))?;
        Ok(existed)
    }

    pub(crate) async fn list(&self, folder: &str) -> Result<Listing, Error> {
        let prefix = self.path(folder)?;
        let listed = self
            .bucket
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| error(folder, e))?;
        let mut objects: Vec<Info> = listed.objects.iter().map(info).collect();
        let mut folders: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        folders.sort();
        Ok(Listing { objects, folders })
    }
}
