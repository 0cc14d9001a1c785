//! The blockreg guest: a `wasi:http` component that implements the OCI
//! Distribution API and stores blobs as deduplicated blocks under the
//! `/data` directory its host grants.
//!
//! Where to look: `routes/` (one file per endpoint group); the pure logic
//! (`oci/` digests, names, media types, error codes; chunking, gzip analysis
//! and recipes) lives in the `blockreg-core` crate (`core/src/`), re-exported
//! here under its module names; `ingest.rs` (upload → committed original at
//! stream speed), `convert.rs` (original → blocks + recipe, in the
//! background), `rebuild.rs` (recipe → exact bytes), `packs.rs` (pack files
//! and block index), `cache.rs` (recreated blobs), `store.rs` (the rest of
//! the file I/O), `http.rs` (request/response model) and this file (the glue
//! to the `wasi:http` resources).

mod admin;
// Public: the bindings hold the generated export glue and the WIT types.
pub mod bindings;
mod cache;
mod convert;
mod http;
mod ingest;
mod packs;
#[cfg(test)]
mod proptests;
mod rebuild;
mod routes;
mod store;
mod sys;
#[cfg(test)]
mod test_support;

pub(crate) use blockreg_core::{block, chunker, deflate, hex, oci, recipe, tarchunk};

use std::io::{self, Read};

use bindings::exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

use crate::http::{Body, Request, Response};
use crate::oci::{ErrorCode, RegistryError};
use crate::store::Store;

/// The exported component.
pub struct Component;

/// A request body as `std::io::Read`. Field order matters: the stream is a
/// child of the body resource and must be dropped first.
struct BodyReader {
    stream: Option<InputStream>,
    _body: Option<IncomingBody>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        match stream.blocking_read(buf.len() as u64) {
            Ok(bytes) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(StreamError::Closed) => Ok(0),
            Err(StreamError::LastOperationFailed(e)) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                e.to_debug_string(),
            )),
        }
    }
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

/// Writes all of `data`, waiting for the host to accept more as needed.
fn write_all(out: &OutputStream, mut data: &[u8]) -> Result<(), StreamError> {
    while !data.is_empty() {
        let permit = out.check_write()?;
        if permit == 0 {
            out.subscribe().block();
            continue;
        }
        let n = (permit as usize).min(data.len());
        out.write(&data[..n])?;
        data = &data[n..];
    }
    Ok(())
}

/// Why streaming a blob to a client stopped.
enum StreamFailure {
    /// The bytes read do not hash to the blob's digest: store damage.
    Mismatch(String),
    /// Reading failed, or the client went away.
    Other(String),
}

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mismatch(m) | Self::Other(m) => f.write_str(m),
        }
    }
}

/// Copies `len` bytes of `input` to the client in batches; `tee` sees them
/// too. With `verify`, the bytes are hashed as they go and the last batch
/// is held back until the whole matched the digest, so a blob that does
/// not hash to its digest never reaches a client whole: its transfer is cut
/// off and the client retries.
fn stream_reader(
    out: &OutputStream,
    input: &mut dyn Read,
    len: u64,
    mut tee: Option<&mut cache::Fill>,
    verify: Option<&oci::Digest>,
) -> Result<(), StreamFailure> {
    const BATCH: usize = 256 * 1024;
    let mut hasher = verify.map(|d| oci::Hasher::new(d.algorithm()));
    let mut held: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; BATCH];
    let mut left = len;
    let send = |bytes: &[u8]| {
        write_all(out, bytes).map_err(|e| StreamFailure::Other(format!("client went away: {e:?}")))
    };
    while left > 0 {
        let want = (left as usize).min(BATCH);
        let n = input
            .read(&mut buf[..want])
            .map_err(|e| StreamFailure::Other(format!("reading the blob: {e}")))?;
        if n == 0 {
            return Err(StreamFailure::Other(format!(
                "the blob ended {left} bytes early"
            )));
        }
        if let Some(t) = tee.as_deref_mut() {
            t.write(&buf[..n]);
        }
        match &mut hasher {
            Some(h) => {
                h.update(&buf[..n]);
                send(&held)?;
                held.clear();
                held.extend_from_slice(&buf[..n]);
            }
            None => send(&buf[..n])?,
        }
        left -= n as u64;
    }
    if let (Some(h), Some(expected)) = (hasher, verify) {
        let actual = h.finish();
        if &actual != expected {
            return Err(StreamFailure::Mismatch(format!(
                "{expected} reads back as {actual}: transfer cut off"
            )));
        }
        send(&held)?;
    }
    out.blocking_flush()
        .map_err(|e| StreamFailure::Other(format!("flush: {e:?}")))
}

/// Streams bytes `start..end` of a blob from wherever it is right now: its
/// original, the cache, or recreated from its recipe (filling the cache).
/// A whole blob is verified against its digest as it goes (see
/// [`stream_reader`]); a damaged original is set aside so the blob is
/// unknown until pushed again, a damaged cache entry is dropped.
fn stream_blob(
    store: &Store,
    out: &OutputStream,
    digest: &oci::Digest,
    source: store::BlobSource,
    start: u64,
    end: u64,
) -> Result<(), StreamFailure> {
    use std::io::{Seek, SeekFrom};
    let len = end - start;
    let recipe = match source {
        store::BlobSource::Original(mut f, size) => {
            let verify = (start == 0 && end == size).then_some(digest);
            f.seek(SeekFrom::Start(start))
                .map_err(|e| StreamFailure::Other(format!("seeking {digest}: {e}")))?;
            let sent = stream_reader(out, &mut io::BufReader::new(f), len, None, verify);
            if let Err(StreamFailure::Mismatch(why)) = &sent {
                eprintln!("blockreg-guest: original of {why}; set aside");
                if let Err(e) = store.quarantine_original(digest, size) {
                    eprintln!("blockreg-guest: setting {digest} aside: {e}");
                }
            }
            return sent;
        }
        store::BlobSource::Recipe(r) => r,
    };
    let verify = (start == 0 && end == recipe.size).then_some(digest);
    if recipe.is_verbatim() {
        let mut r = rebuild::Rebuild::new(store.root(), recipe, start);
        return stream_reader(out, &mut r, len, None, verify);
    }
    let budget = store.settings().map(|s| s.cache_bytes).unwrap_or(0);
    let cache = cache::Cache::new(store.root(), budget);
    if let Some(mut f) = cache.open(digest, recipe.size) {
        f.seek(SeekFrom::Start(start))
            .map_err(|e| StreamFailure::Other(format!("seeking cached {digest}: {e}")))?;
        let sent = stream_reader(out, &mut io::BufReader::new(f), len, None, verify);
        if let Err(StreamFailure::Mismatch(why)) = &sent {
            eprintln!("blockreg-guest: cached {why}; entry dropped");
            let _ = cache.remove(digest);
        }
        return sent;
    }
    let whole = start == 0 && end == recipe.size;
    let mut fill = if whole {
        cache.fill(digest, recipe.size).ok().flatten()
    } else {
        None
    };
    let mut r = rebuild::Rebuild::new(store.root(), recipe, start);
    let sent = stream_reader(out, &mut r, len, fill.as_mut(), verify);
    // Commit even when the client failed: one that closes as soon as it has
    // every byte makes the final flush fail. A partial entry fails its
    // digest check inside commit and is dropped.
    if let Some(f) = fill {
        if let Err(e) = f.commit() {
            eprintln!("blockreg-guest: caching {digest}: {e}");
        }
    }
    sent
}

fn send(store: Option<&Store>, resp: Response, out: ResponseOutparam) {
    // One by one: a value the host refuses is dropped alone (and logged),
    // never the whole header list with it.
    let headers = Fields::new();
    for (n, v) in &resp.headers {
        if let Err(e) = headers.append(&n.to_ascii_lowercase(), v.as_bytes()) {
            eprintln!("blockreg-guest: header {n} dropped: {e:?}");
        }
    }
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(resp.status);
    if matches!(resp.body, Body::None) {
        ResponseOutparam::set(out, Ok(response));
        return;
    }
    let body = response
        .body()
        .expect("the body of a new response is available");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the stream of a new body is available");
    let result = match resp.body {
        Body::None => Ok(()),
        Body::Bytes(bytes) => write_all(&stream, &bytes)
            .and_then(|()| stream.blocking_flush())
            .map_err(|e| format!("{e:?}")),
        Body::Blob {
            digest,
            source,
            start,
            end,
        } => match store {
            Some(store) => {
                stream_blob(store, &stream, &digest, source, start, end).map_err(|e| e.to_string())
            }
            None => Err("no store".into()),
        },
    };
    drop(stream);
    match result {
        // Finishing tells the host the body is complete; on failure the body
        // is dropped unfinished so the client sees a truncated response,
        // never a short one that looks whole.
        Ok(()) => {
            let _ = OutgoingBody::finish(body, None);
        }
        Err(e) => eprintln!("blockreg-guest: response body failed: {e}"),
    }
}

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let head = Request::new(
            &method_name(&request.method()),
            &request.path_with_query().unwrap_or_default(),
            request.headers().entries(),
        );
        let store = match Store::open(admin::DATA_ROOT) {
            Ok(s) => s,
            Err(e) => {
                let err = RegistryError::new(ErrorCode::Unknown, format!("store unavailable: {e}"));
                send(None, err.into(), out);
                return;
            }
        };
        let mut reader = match request.consume() {
            Ok(body) => BodyReader {
                stream: body.stream().ok(),
                _body: Some(body),
            },
            Err(()) => BodyReader {
                stream: None,
                _body: None,
            },
        };
        let resp = routes::handle(&store, &head, &mut reader);
        drop(reader);
        send(Some(&store), resp, out);
    }
}
