//! The HTTP request and response as the routes see them, decoupled from the
//! `wasi:http` resources so the routing logic stays plain Rust.

use crate::pull::BlobReader;

/// A request's head. The body is passed to routes separately as a reader.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// Splits `path_with_query` and decodes the query.
    pub fn new(method: &str, path_with_query: &str, headers: Vec<(String, Vec<u8>)>) -> Self {
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((path_with_query, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query,
            headers,
        }
    }

    /// A header's value as text (first occurrence, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// A header's raw value (first occurrence, case-insensitive name),
    /// for callers that must tell "absent" from "not text".
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every comma-separated item of every occurrence of a header, trimmed
    /// and without parameters (`type/sub; q=0.5` → `type/sub`).
    pub fn header_items(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(|item| item.split(';').next().unwrap_or("").trim())
            .filter(|item| !item.is_empty())
            .collect()
    }

    /// A query parameter (first occurrence).
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes and `+` (as form encoding does in queries).
/// Invalid escapes are kept literally; the result is then validated by
/// whatever parses it.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// No body at all (HEAD, 201, 202, 204). Any Content-Length header the
    /// route set describes the entity, as HEAD requires.
    None,
    /// A small body held in memory (JSON, manifests, errors).
    Bytes(Vec<u8>),
    /// Bytes of a stored blob, streamed (and verified when whole) by
    /// `pull.rs`; a read error cuts the transfer off.
    Blob(Box<BlobReader>),
}

/// A response the glue in `lib.rs` turns into `wasi:http` resources.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// A JSON body with its Content-Type and Content-Length.
    pub fn json(self, value: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(value).expect("a json value always serializes");
        self.bytes("application/json", bytes)
    }

    pub fn bytes(mut self, content_type: &str, bytes: Vec<u8>) -> Self {
        self = self
            .header("Content-Type", content_type)
            .header("Content-Length", bytes.len().to_string());
        self.body = Body::Bytes(bytes);
        self
    }

    /// Drops the body but keeps its headers, for HEAD.
    pub fn without_body(mut self) -> Self {
        self.body = Body::None;
        self
    }
}

impl From<crate::oci::RegistryError> for Response {
    fn from(e: crate::oci::RegistryError) -> Self {
        let mut r = Response::new(e.http_status());
        for (n, v) in &e.headers {
            r = r.header(n, v.clone());
        }
        r.bytes("application/json", e.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let r = Request::new(
            "post",
            "/v2/a/blobs/uploads/?mount=sha256%3Aabc&from=x%2Fy&digest=",
            vec![],
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v2/a/blobs/uploads/");
        assert_eq!(r.query("mount"), Some("sha256:abc"));
        assert_eq!(r.query("from"), Some("x/y"));
        assert_eq!(r.query("digest"), Some(""));
        assert_eq!(r.query("nope"), None);
    }

    #[test]
    fn broken_escapes_stay_literal() {
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn header_items_split_lists_and_drop_parameters() {
        let r = Request::new(
            "GET",
            "/",
            vec![
                ("Accept".into(), b"a/b; q=0.5, c/d".to_vec()),
                ("accept".into(), b"e/f".to_vec()),
            ],
        );
        assert_eq!(r.header_items("accept"), ["a/b", "c/d", "e/f"]);
    }

    #[test]
    fn headers_match_case_insensitively() {
        let r = Request::new(
            "GET",
            "/",
            vec![("content-range".into(), b" 0-9 ".to_vec())],
        );
        assert_eq!(r.header("Content-Range"), Some("0-9"));
    }
}
