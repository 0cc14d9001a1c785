//! The blockreg guest: a `wasi:http` component that implements the OCI
//! Distribution API and stores blobs as deduplicated blocks under the
//! `/data` directory its host grants.
//!
//! Where to look: `routes/` (one file per endpoint group), `oci/` (digests,
//! names, media types, error codes), `chunker.rs` and `recipe.rs` (pure
//! block logic), `ingest.rs` (upload → blocks + recipe), `store.rs` (all
//! file I/O), `http.rs` (request/response model) and this file (the glue to
//! the `wasi:http` resources).

pub mod admin;
pub mod bindings;
pub mod block;
pub mod chunker;
pub mod hex;
pub mod http;
pub mod ingest;
pub mod oci;
pub mod recipe;
pub mod routes;
pub mod store;
mod sys;
#[cfg(test)]
mod test_support;

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

/// Streams bytes `start..end` of a blob, block by block, in batches.
fn stream_blob(
    store: &Store,
    out: &OutputStream,
    recipe: &recipe::Recipe,
    start: u64,
    end: u64,
) -> Result<(), String> {
    const BATCH: usize = 256 * 1024;
    let mut buf = Vec::with_capacity(BATCH + 64 * 1024);
    for (block, skip, take) in recipe.slice(start, end) {
        let bytes = store
            .read_block(&block.id)
            .map_err(|e| format!("block {} of {}: {e}", block.id, recipe.digest))?;
        let part = bytes
            .get(skip..skip + take)
            .ok_or_else(|| format!("block {} of {} is truncated", block.id, recipe.digest))?;
        buf.extend_from_slice(part);
        if buf.len() >= BATCH {
            write_all(out, &buf).map_err(|e| format!("client went away: {e:?}"))?;
            buf.clear();
        }
    }
    write_all(out, &buf).map_err(|e| format!("client went away: {e:?}"))?;
    out.blocking_flush().map_err(|e| format!("flush: {e:?}"))
}

fn send(store: Option<&Store>, resp: Response, out: ResponseOutparam) {
    let fields: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    let headers = Fields::from_list(&fields).unwrap_or_else(|_| Fields::new());
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
        Body::Blob { recipe, start, end } => match store {
            Some(store) => stream_blob(store, &stream, &recipe, start, end),
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
