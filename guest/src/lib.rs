//! The blockreg guest: a `wasi:http` component that implements the OCI
//! Distribution API and stores blobs as deduplicated blocks under the
//! `/data` directory its host grants.
//!
//! Where to look: `routes/` (one file per endpoint group), `access.rs` (asking
//! the host whether the caller may, before each repository operation); the pure logic
//! (`oci/` digests, names, media types, error codes; chunking, gzip analysis
//! and recipes) lives in the `blockreg-core` crate (`core/src/`), re-exported
//! here under its module names; `settings.rs` (the operator's settings, from
//! the host), `layout.rs` (every path of the store), `store.rs` (blobs,
//! manifests, tags, sessions, recovery), `ingest.rs` (upload → committed
//! original at stream speed), `pull.rs` (a blob's bytes for a GET, verified),
//! `convert.rs` (original → blocks + recipe, in the background),
//! `rebuild.rs` (recipe → exact bytes), `packs.rs` (pack files and block
//! index), `cache.rs` (recreated blobs), `objects.rs` (the object seam the
//! store's records go through), `admin.rs` (the `admin` export),
//! `http.rs` (request/response model) and this file (the glue to the
//! `wasi:http` resources).

mod access;
mod admin;
// Public: the bindings hold the generated export glue and the WIT types.
pub mod bindings;
mod cache;
mod check;
mod convert;
mod gc;
mod http;
mod ingest;
mod layout;
mod objects;
mod packs;
#[cfg(test)]
mod proptests;
mod pull;
mod rebuild;
mod replicas;
mod retention;
mod routes;
mod settings;
mod store;
mod sys;
#[cfg(test)]
mod test_support;

pub(crate) use blockreg_core::{
    block, chunker, deflate, hex, oci, recipe, replica, tarchunk, zstd,
};

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

/// Why a response body was left unfinished.
enum BodyError {
    /// The client closed the connection (a cancelled pull, a client that
    /// read the headers it wanted): nothing to report.
    ClientGone,
    /// Reading the blob failed (it did not match its digest, the store
    /// failed) or the host refused the stream for another reason.
    Failed(String),
}

impl From<StreamError> for BodyError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Closed => Self::ClientGone,
            StreamError::LastOperationFailed(e) => {
                Self::Failed(format!("writing to the client: {}", e.to_debug_string()))
            }
        }
    }
}

/// Copies a blob's bytes to the client. An error (the blob failed its
/// digest, reading failed, the client went away) leaves the body unfinished.
fn copy_blob(out: &OutputStream, blob: &mut dyn Read) -> Result<(), BodyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = blob
            .read(&mut buf)
            .map_err(|e| BodyError::Failed(format!("reading the blob: {e}")))?;
        if n == 0 {
            break;
        }
        write_all(out, &buf[..n])?;
    }
    Ok(out.blocking_flush()?)
}

fn send(resp: Response, out: ResponseOutparam) {
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
            .map_err(BodyError::from),
        Body::Blob(mut blob) => copy_blob(&stream, &mut blob),
    };
    drop(stream);
    match result {
        // Finishing tells the host the body is complete; on failure the body
        // is dropped unfinished so the client sees a truncated response,
        // never a short one that looks whole.
        Ok(()) => {
            let _ = OutgoingBody::finish(body, None);
        }
        Err(BodyError::ClientGone) => {}
        Err(BodyError::Failed(e)) => {
            eprintln!(
                "blockreg-guest: {} response body left unfinished: {e}",
                resp.status
            );
        }
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
                send(err.into(), out);
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
        let resp = routes::handle(
            &store,
            settings::current(),
            &access::Host,
            &head,
            &mut reader,
        );
        drop(reader);
        send(resp, out);
    }
}
