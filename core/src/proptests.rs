//! Property tests for every parser in this crate that takes bytes from a
//! client or from disk: digests, names, tags and references; block ids and
//! hex; manifest JSON and media types; tar headers (`TarChunker`); gzip
//! headers and DEFLATE streams (`GzipAnalyzer`, `DeflateRecreator`);
//! recipes. The guest's `proptests.rs` covers the parsers that need a store
//! (requests, ranges, routes, packs, upload ids).
//!
//! Each property says what must hold for *any* input: no panic, and where a
//! round trip exists, that it round-trips. Runs are deterministic (a fixed
//! seed, no persistence file) and each test prints how many cases it ran;
//! a failure prints the shrunk, minimal input.

use std::convert::Infallible;
use std::fmt::Debug;
use std::io::Write as _;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::block::BlockId;
use crate::chunker::Chunker;
use crate::deflate::{AnalyzeConfig, AnalyzeError, DeflateRecreator, GzipAnalyzer};
use crate::oci::media::{
    parse_manifest, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::recipe::{BlockRef, Codec, Frame, Location, Op, Recipe, Segment};
use crate::tarchunk::{TarChunker, TarStats};
use crate::test_support::prop::{check, digestish};

/// Counts how often each outcome happened, so a run shows that the
/// interesting paths (accepted input, parsed tar, recreated gzip) were taken.
#[derive(Default)]
struct Tally(std::cell::RefCell<std::collections::BTreeMap<&'static str, u32>>);

impl Tally {
    fn add(&self, outcome: &'static str) {
        *self.0.borrow_mut().entry(outcome).or_default() += 1;
    }

    fn print(&self) {
        println!("  outcomes: {:?}", self.0.borrow());
    }

    /// Counts a recreation test's outcome: an accepted stream (damaged or
    /// not) was recreated exactly by the caller; a refused one must have
    /// been damaged.
    fn recreation<E: std::fmt::Display>(
        &self,
        damaged: bool,
        refused: Option<E>,
    ) -> Result<(), TestCaseError> {
        match refused {
            None if damaged => self.add("damaged, still valid: recreated"),
            None => self.add("recreated"),
            Some(e) => {
                prop_assert!(damaged, "valid stream refused: {e}");
                self.add("damaged: refused");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- digests, names

/// The digest grammar this registry accepts, written independently.
fn digest_oracle(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[test]
fn digests_parse_exactly_the_grammar_and_round_trip() -> Result<(), String> {
    check("digest", 3000, digestish(), |s| {
        match s.parse::<Digest>() {
            Ok(d) => {
                prop_assert!(digest_oracle(&s), "accepted {s:?}");
                prop_assert_eq!(d.to_string(), s.clone());
                prop_assert!(!s.contains('/') && !s.contains(".."));
            }
            Err(e) => {
                prop_assert!(!digest_oracle(&s), "refused {s:?}");
                prop_assert_eq!(e.code.as_str(), "DIGEST_INVALID");
            }
        }
        Ok(())
    })
}

#[test]
fn computed_digests_round_trip_through_their_text() -> Result<(), String> {
    check(
        "digest_of",
        500,
        (vec(any::<u8>(), 0..512), any::<bool>()),
        |(b, wide)| {
            let alg = if wide {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            let d = Digest::of(alg, &b);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
            Ok(())
        },
    )
}

/// The distribution spec's repository name grammar, written independently:
/// components `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
fn name_oracle(s: &str) -> bool {
    fn component(c: &str) -> bool {
        let mut chars = c.chars().peekable();
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut need_alnum = true;
        while let Some(ch) = chars.next() {
            if alnum(ch) {
                need_alnum = false;
                continue;
            }
            if need_alnum {
                return false;
            }
            match ch {
                '.' => {}
                '_' => {
                    if chars.peek() == Some(&'_') {
                        chars.next();
                    }
                }
                '-' => {
                    while chars.peek() == Some(&'-') {
                        chars.next();
                    }
                }
                _ => return false,
            }
            need_alnum = true;
        }
        !need_alnum
    }
    !s.is_empty() && s.len() <= 255 && s.split('/').all(component)
}

fn nameish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9._/-]{0,24}",
        "([a-z0-9]{1,3}([._-]|__|--)?){1,4}(/[a-z0-9]{1,3}([._]|__|-+)?[a-z0-9]{0,2}){0,3}",
        "[a-z0-9./_\\\\%-]{1,12}",
        "[a-z]{1,2}(/\\.\\.?)?(/[a-z]{1,2})?",
        "[a-z]{250,260}",
    ]
}

#[test]
fn repository_names_parse_exactly_the_grammar_and_stay_path_safe() -> Result<(), String> {
    check("repo_name", 4000, nameish(), |s| {
        match s.parse::<RepoName>() {
            Ok(n) => {
                prop_assert!(name_oracle(&s), "accepted {s:?}");
                prop_assert_eq!(n.to_string(), s.clone());
                for c in s.split('/') {
                    prop_assert!(c != "." && c != ".." && !c.starts_with('_') && !c.is_empty());
                }
                prop_assert!(!s.contains('\\') && !s.contains('%'));
            }
            Err(e) => {
                prop_assert!(!name_oracle(&s), "refused {s:?}");
                prop_assert_eq!(e.code.as_str(), "NAME_INVALID");
            }
        }
        Ok(())
    })
}

fn tag_oracle(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && s.len() <= 128
}

#[test]
fn tags_and_references_parse_exactly_the_grammar() -> Result<(), String> {
    let strategy = prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_.:-]{0,20}",
        "[a-zA-Z0-9_][a-zA-Z0-9._-]{120,130}",
        digestish(),
    ];
    check("tag_reference", 3000, strategy, |s| {
        match s.parse::<Tag>() {
            Ok(t) => {
                prop_assert!(tag_oracle(&s), "accepted {s:?}");
                prop_assert_eq!(t.to_string(), s.clone());
                prop_assert!(s != "." && s != "..");
            }
            Err(_) => prop_assert!(!tag_oracle(&s), "refused {s:?}"),
        }
        match s.parse::<Reference>() {
            Ok(Reference::Tag(t)) => prop_assert_eq!(t.as_str(), s.as_str()),
            Ok(Reference::Digest(d)) => prop_assert_eq!(d.to_string(), s.clone()),
            Err(_) => prop_assert!(!tag_oracle(&s) && !digest_oracle(&s)),
        }
        Ok(())
    })
}

#[test]
fn block_ids_and_hex_round_trip() -> Result<(), String> {
    check(
        "block_id_hex",
        2000,
        (vec(any::<u8>(), 0..64), "[0-9a-fA-F]{0,42}"),
        |(b, s)| {
            prop_assert_eq!(crate::hex::decode(&crate::hex::encode(&b)), Some(b.clone()));
            if let Some(d) = crate::hex::decode(&s) {
                prop_assert_eq!(crate::hex::encode(&d), s.clone());
            }
            match s.parse::<BlockId>() {
                Ok(id) => prop_assert_eq!(id.to_hex(), s.clone()),
                Err(_) => prop_assert!(
                    s.len() != 40 || s.bytes().any(|c| c.is_ascii_uppercase()),
                    "refused {s:?}"
                ),
            }
            Ok(())
        },
    )
}

// ---------------------------------------------------------------- manifests

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
    ]
}

fn digest_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..8).prop_map(|b| json!(Digest::of(Algorithm::Sha256, &b).to_string())),
        1 => vec(any::<u8>(), 0..8).prop_map(|b| json!(Digest::of(Algorithm::Sha512, &b).to_string())),
        1 => digestish().prop_map(Value::from),
        1 => json_scalar(),
    ]
}

fn media_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(OCI_MANIFEST.to_string()),
        Just(OCI_INDEX.to_string()),
        Just(DOCKER_MANIFEST.to_string()),
        Just(DOCKER_MANIFEST_LIST.to_string()),
        Just("application/json".to_string()),
        Just("application/vnd.oci.image.config.v1+json".to_string()),
        "[a-z]{1,8}/[a-z.+-]{1,12}",
        any::<String>(),
    ]
}

fn descriptor() -> impl Strategy<Value = Value> {
    (
        digest_value(),
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|n| Some(json!(n))),
            json_scalar().prop_map(Some)
        ],
        prop::option::of(media_type()),
        any::<bool>(),
    )
        .prop_map(|(digest, size, mt, drop_digest)| {
            let mut d = serde_json::Map::new();
            if !drop_digest {
                d.insert("digest".into(), digest);
            }
            if let Some(s) = size {
                d.insert("size".into(), s);
            }
            if let Some(m) = mt {
                d.insert("mediaType".into(), json!(m));
            }
            Value::Object(d)
        })
}

fn maybe<T: Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 2 => s.prop_map(Some)].boxed()
}

fn manifest_json() -> impl Strategy<Value = Value> {
    (
        maybe(prop_oneof![Just(json!(2)), Just(json!(1)), json_scalar()]),
        maybe(media_type().prop_map(Value::from)),
        maybe(prop_oneof![3 => descriptor(), 1 => json_scalar()]),
        maybe(prop_oneof![3 => vec(descriptor(), 0..4).prop_map(Value::from), 1 => json_scalar()]),
        maybe(prop_oneof![3 => vec(descriptor(), 0..4).prop_map(Value::from), 1 => json_scalar()]),
        maybe(descriptor()),
        maybe(prop_oneof![
            media_type().prop_map(Value::from),
            json_scalar()
        ]),
        maybe(prop_oneof![
            vec(("[a-z.]{1,8}", json_scalar()), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            json_scalar()
        ]),
    )
        .prop_map(|(sv, mt, config, layers, manifests, subject, at, ann)| {
            let mut m = serde_json::Map::new();
            let fields = [
                ("schemaVersion", sv),
                ("mediaType", mt),
                ("config", config),
                ("layers", layers),
                ("manifests", manifests),
                ("subject", subject),
                ("artifactType", at),
                ("annotations", ann),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        media_type().prop_map(Some),
        (media_type(), "[ ;a-z=0-9.]{0,12}").prop_map(|(m, p)| Some(format!("{m}; {p}"))),
        Just(Some(String::new())),
        Just(Some(" ; charset=utf-8".to_string())),
    ]
}

/// Every digest a parsed manifest reports appears in its JSON.
fn digests_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| digests_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| digests_in(x, out)),
        _ => {}
    }
}

#[test]
fn manifest_parsing_accepts_only_what_it_can_vouch_for() -> Result<(), String> {
    check(
        "manifest_json",
        3000,
        (manifest_json(), content_type()),
        |(v, ct)| {
            let bytes = serde_json::to_vec(&v).unwrap();
            let Ok(info) = parse_manifest(&bytes, ct.as_deref()) else {
                return Ok(());
            };
            let mut strings = Vec::new();
            digests_in(&v, &mut strings);
            for d in info
                .blobs
                .iter()
                .chain(&info.manifests)
                .chain(&info.subject)
            {
                prop_assert!(strings.contains(&d.to_string()), "{d} not in the manifest");
            }
            prop_assert!(!info.media_type.is_empty());
            let header = ct
                .as_deref()
                .map(|c| c.split(';').next().unwrap_or("").trim())
                .filter(|c| {
                    !c.is_empty() && *c != "application/json" && *c != "application/octet-stream"
                });
            if let Some(h) = header {
                prop_assert_eq!(info.media_type.as_str(), h);
            }
            if let (Some(h), Some(Value::String(b))) = (header, v.get("mediaType")) {
                prop_assert_eq!(h, b.as_str());
            }
            if matches!(info.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) {
                prop_assert!(v.get("config").is_some_and(Value::is_object));
            }
            if matches!(info.media_type.as_str(), OCI_INDEX | DOCKER_MANIFEST_LIST) {
                prop_assert!(v.get("manifests").is_some_and(Value::is_array));
            }
            let n_layers = v
                .get("layers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let n_config = usize::from(v.get("config").is_some_and(Value::is_object));
            prop_assert_eq!(info.blobs.len(), n_config + n_layers);
            Ok(())
        },
    )
}

#[test]
fn manifest_parsing_never_panics_on_bytes() -> Result<(), String> {
    let bytes = prop_oneof![
        vec(any::<u8>(), 0..256),
        (
            manifest_json(),
            vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
        )
            .prop_map(|(v, muts)| {
                let mut b = serde_json::to_vec(&v).unwrap();
                for (i, x) in muts {
                    let i = i.index(b.len());
                    b[i] = x;
                }
                b
            }),
    ];
    check(
        "manifest_bytes",
        3000,
        (bytes, content_type()),
        |(b, ct)| {
            let _ = parse_manifest(&b, ct.as_deref());
            Ok(())
        },
    )?;
    // Deep nesting is refused by serde_json's recursion limit, not a stack overflow.
    let deep = format!(
        "{{\"layers\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(parse_manifest(deep.as_bytes(), None).is_err());
    Ok(())
}

// ---------------------------------------------------------------- tar headers

#[derive(Debug, Clone)]
struct TarEntry {
    kind: u8,
    size: u64,
    size_encoding: u8,
    name_len: usize,
    pax_size: Option<u64>,
    bad_checksum: bool,
    sparse_ext: u8,
}

fn tar_entry() -> impl Strategy<Value = TarEntry> {
    (
        0u8..11,
        prop_oneof![
            0u64..2000,
            Just(0u64),
            0u64..10_000,
            Just(u64::MAX),
            any::<u64>()
        ],
        0u8..4,
        0usize..101,
        prop::option::of(prop_oneof![0u64..3000, any::<u64>()]),
        prop::bool::weighted(0.05),
        0u8..3,
    )
        .prop_map(
            |(kind, size, size_encoding, name_len, pax_size, bad_checksum, sparse_ext)| TarEntry {
                kind,
                size,
                size_encoding,
                name_len,
                pax_size,
                bad_checksum,
                sparse_ext,
            },
        )
}

fn tar_header(
    name_len: usize,
    typeflag: u8,
    size: u64,
    size_encoding: u8,
    bad_checksum: bool,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    for (i, b) in h[..name_len.min(100)].iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(&match size_encoding {
        0 if size < 8u64.pow(11) => {
            let mut f = [0u8; 12];
            f[..12].copy_from_slice(format!("{size:011o}\0").as_bytes());
            f
        }
        1 if size < 8u64.pow(11) => {
            let mut f = [b' '; 12];
            let s = format!("{size:o}");
            f[12 - s.len() - 1..11].copy_from_slice(s.as_bytes());
            f[11] = 0;
            f
        }
        2 => [b'x'; 12],
        _ => {
            // Base-256: high bit set, big-endian in the remaining bytes.
            let mut f = [0u8; 12];
            f[0] = 0x80;
            f[4..].copy_from_slice(&size.to_be_bytes());
            f
        }
    });
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if typeflag == b'S' {
        h[257..265].copy_from_slice(b"ustar  \0");
    }
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum::<u32>() + u32::from(bad_checksum);
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn build_tar(entries: &[TarEntry], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        // Sizes stay small in the data actually written; the header may say more.
        let data_len = e.size.min(3000) as usize;
        if let Some(p) = e.pax_size {
            let rec = format!("size={p}\n");
            let mut len = rec.len() + 3;
            while format!("{len} {rec}").len() != len {
                len += 1;
            }
            let body = format!("{len} {rec}");
            out.extend_from_slice(&tar_header(10, b'x', body.len() as u64, 0, false));
            out.extend_from_slice(body.as_bytes());
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        let flag = match e.kind {
            0 | 1 => b'0',
            2 => b'5',
            3 => b'2',
            4 => b'1',
            5 => b'L',
            6 => b'S',
            7 => b'g',
            8 => 0,
            9 => b'7',
            _ => b'Z',
        };
        let mut h = tar_header(e.name_len, flag, e.size, e.size_encoding, e.bad_checksum);
        if flag == b'S' && e.sparse_ext > 0 {
            h[482] = 1;
            let sum: u32 = {
                h[148..156].copy_from_slice(b"        ");
                h.iter().map(|&b| u32::from(b)).sum()
            };
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        out.extend_from_slice(&h);
        if flag == b'S' {
            for i in 0..e.sparse_ext {
                let mut ext = [0u8; 512];
                ext[504] = u8::from(i + 1 < e.sparse_ext);
                out.extend_from_slice(&ext);
            }
        }
        out.extend((0..data_len).map(|i| (i * 7 + e.name_len) as u8));
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end {
        out.resize(out.len() + 1024, 0);
    }
    out
}

type Mutations = Vec<(prop::sample::Index, u8)>;

/// Damages `b` as a disk or a client might: bytes overwritten, the end cut
/// off at `cut`, `tail` appended.
fn damage(
    mut b: Vec<u8>,
    muts: Mutations,
    cut: Option<prop::sample::Index>,
    tail: &[u8],
) -> Vec<u8> {
    if !b.is_empty() {
        for (i, x) in muts {
            let i = i.index(b.len());
            b[i] = x;
        }
    }
    if let Some(c) = cut {
        b.truncate(c.index(b.len() + 1));
    }
    b.extend_from_slice(tail);
    b
}

fn tar_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..3000),
        3 =>
        (
            vec(tar_entry(), 0..6),
            any::<bool>(),
            vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            prop::option::of(any::<prop::sample::Index>()),
            vec(any::<u8>(), 0..100),
        )
            .prop_map(|(entries, end, muts, cut, tail): (_, _, Mutations, _, _)| {
                damage(build_tar(&entries, end), muts, cut, &tail)
            }),
    ]
}

fn chunk_all(mut c: TarChunker, input: &[u8], feeds: &[usize]) -> (Vec<Vec<u8>>, TarStats) {
    let mut pieces = Vec::new();
    let mut emit = |p: &[u8]| -> Result<(), Infallible> {
        pieces.push(p.to_vec());
        Ok(())
    };
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = feeds
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        c.feed(&rest[..n], &mut emit).unwrap();
        rest = &rest[n..];
        i += 1;
    }
    c.finish(&mut emit).unwrap();
    (pieces, c.stats())
}

/// Whatever the bytes and however they are fed, the pieces are non-empty,
/// bounded, the same for every feed split, and concatenate to the input.
#[test]
fn tar_chunking_always_reproduces_its_input() -> Result<(), String> {
    let strategy = (tar_input(), vec(1usize..700, 0..12), any::<bool>());
    let tally = Tally::default();
    check("tar_chunker", 2500, strategy, |(input, feeds, cdc)| {
        let make = || {
            if cdc {
                TarChunker::fastcdc_default()
            } else {
                TarChunker::fixed(4096)
            }
        };
        let bound = if cdc { 16384 } else { 4096 };
        let (whole, stats) = chunk_all(make(), &input, &[]);
        let (split, _) = chunk_all(make(), &input, &feeds);
        prop_assert_eq!(whole.concat(), input.clone());
        prop_assert!(whole.iter().all(|p| !p.is_empty() && p.len() <= bound));
        prop_assert_eq!(split, whole);
        tally.add(
            match (stats.members > 0, stats.fallback, stats.end_of_archive) {
                (_, false, true) => "members, end of archive",
                (true, false, false) => "members, cut short",
                (true, true, _) => "members, then fallback",
                (false, true, _) => "fallback at once",
                (false, false, false) => "no header",
            },
        );
        Ok(())
    })?;
    tally.print();
    Ok(())
}

// ---------------------------------------------------------------- gzip

use crate::deflate::tests::Owned;

fn analyze(
    input: &[u8],
    feed: usize,
    segment: usize,
    raw: bool,
) -> Result<Vec<Owned>, AnalyzeError<Infallible>> {
    let cfg = AnalyzeConfig {
        segment_input: segment,
        ..AnalyzeConfig::default()
    };
    let a = if raw {
        GzipAnalyzer::raw_deflate(cfg)
    } else {
        GzipAnalyzer::new(cfg)
    };
    crate::deflate::tests::run(a, input, feed.max(1)).map(|(events, _)| events)
}

/// Rebuilds the analysed stream from its events, as a pull does.
fn recreate(events: &[Owned]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut recreator: Option<DeflateRecreator> = None;
    let mut replica: Option<crate::replica::ReplicaRecreator> = None;
    let mut segment = Vec::new();
    for e in events {
        match e {
            Owned::Literal(b) if recreator.is_none() && replica.is_none() => {
                out.extend_from_slice(b)
            }
            Owned::Start if recreator.is_none() && replica.is_none() => {
                recreator = Some(DeflateRecreator::new());
            }
            Owned::Replica(r) if recreator.is_none() && replica.is_none() => {
                replica = Some(crate::replica::ReplicaRecreator::new(*r));
            }
            Owned::Plain(p) if replica.is_some() => replica.as_mut().unwrap().feed(p, &mut out),
            Owned::End if replica.is_some() => replica.take().unwrap().finish(&mut out),
            Owned::Plain(p) if recreator.is_some() => segment.extend_from_slice(p),
            Owned::SegmentEnd(c) => {
                let r = recreator.as_mut().ok_or("segment outside a stream")?;
                out.extend(r.segment(&segment, c).map_err(|e| e.to_string())?);
                segment.clear();
            }
            Owned::End if segment.is_empty() => recreator = None,
            e => return Err(format!("unexpected event {e:?}")),
        }
    }
    if recreator.is_some() {
        return Err("unterminated deflate stream".into());
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Member {
    data: Vec<u8>,
    level: u32,
    flags: u8,
    extra: Vec<u8>,
    name: Vec<u8>,
    comment: Vec<u8>,
}

fn member() -> impl Strategy<Value = Member> {
    (
        prop_oneof![
            vec(any::<u8>(), 0..3000),
            vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b' ')], 0..20_000),
        ],
        0u32..10,
        any::<u8>(),
        vec(any::<u8>(), 0..40),
        vec(1u8..=255, 0..20),
        vec(1u8..=255, 0..20),
    )
        .prop_map(|(data, level, flags, extra, name, comment)| Member {
            data,
            level,
            flags: flags & 0x1f,
            extra,
            name,
            comment,
        })
}

/// A gzip member written by hand, so every header field (FTEXT, FHCRC,
/// FEXTRA, FNAME, FCOMMENT) can appear.
fn gzip_member(m: &Member) -> Vec<u8> {
    let mut h = vec![0x1f, 0x8b, 8, m.flags, 1, 2, 3, 4, 0, 3];
    if m.flags & 0x04 != 0 {
        h.extend_from_slice(&(m.extra.len() as u16).to_le_bytes());
        h.extend_from_slice(&m.extra);
    }
    for (flag, field) in [(0x08, &m.name), (0x10, &m.comment)] {
        if m.flags & flag != 0 {
            h.extend_from_slice(field);
            h.push(0);
        }
    }
    if m.flags & 0x02 != 0 {
        let mut crc = flate2::Crc::new();
        crc.update(&h);
        h.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
    }
    let mut e = flate2::write::DeflateEncoder::new(h, flate2::Compression::new(m.level));
    e.write_all(&m.data).unwrap();
    let mut out = e.finish().unwrap();
    let mut crc = flate2::Crc::new();
    crc.update(&m.data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(m.data.len() as u32).to_le_bytes());
    out
}

/// Valid gzip (one to three members, every header field) analyses without
/// a header or corruption error, and the events recreate it bit for bit.
#[test]
fn valid_gzip_headers_are_accepted_and_recreated_exactly() -> Result<(), String> {
    let strategy = (vec(member(), 1..4), 1usize..5000, 1024usize..65536);
    let tally = Tally::default();
    check("gzip_valid", 300, strategy, |(members, feed, segment)| {
        let input: Vec<u8> = members.iter().flat_map(gzip_member).collect();
        prop_assert!(crate::deflate::is_gzip(&input));
        match analyze(&input, feed, segment, false) {
            Ok(events) => {
                let plain: Vec<u8> = events
                    .iter()
                    .filter_map(|e| match e {
                        Owned::Plain(p) => Some(p.as_slice()),
                        _ => None,
                    })
                    .flatten()
                    .copied()
                    .collect();
                let want: Vec<u8> = members.iter().flat_map(|m| m.data.clone()).collect();
                prop_assert!(plain == want, "decoded bytes differ");
                let again = recreate(&events).map_err(TestCaseError::fail)?;
                prop_assert!(again == input, "recreation differs");
                tally.add("recreated");
            }
            Err(AnalyzeError::Preflate(_)) => tally.add("preflate limit"),
            Err(AnalyzeError::TooManyCorrections { .. }) => tally.add("too many corrections"),
            Err(e) => prop_assert!(false, "valid gzip refused: {e}"),
        }
        Ok(())
    })?;
    tally.print();
    Ok(())
}

/// Gzip whose DEFLATE stream no real compressor would write (the test
/// encoder `odd_gzip`: random earlier occurrences, fixed-Huffman and stored
/// blocks), as written and damaged: accepted and recreated bit for bit, or
/// refused, never a panic.
#[test]
fn streams_of_no_known_encoder_are_recreated_exactly_or_refused() -> Result<(), String> {
    let data = prop_oneof![
        vec(any::<u8>(), 0..3000),
        vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b' '), Just(0u8)],
            0..30_000
        ),
        (
            0usize..40_000,
            vec(prop_oneof![Just(b'x'), Just(b'y')], 0..5000)
        )
            .prop_map(|(z, mut t)| {
                let mut d = vec![0u8; z];
                d.append(&mut t);
                d
            }),
    ];
    let strategy = (
        data,
        any::<u64>(),
        any::<bool>(),
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        1usize..5000,
        1024usize..65536,
    );
    let tally = Tally::default();
    check(
        "gzip_unmodelled",
        300,
        strategy,
        |(data, seed, wild, muts, feed, segment)| {
            let valid = crate::test_support::odd_gzip(&data, seed, wild);
            let damaged = !muts.is_empty();
            let input = if damaged {
                damage(valid, muts, None, &[])
            } else {
                valid
            };
            match analyze(&input, feed, segment, false) {
                Ok(events) => {
                    let again = recreate(&events).map_err(TestCaseError::fail)?;
                    prop_assert!(again == input, "accepted but recreated differently");
                    tally.recreation(damaged, None::<String>)?;
                }
                Err(AnalyzeError::TooManyCorrections { .. }) => tally.add("too many corrections"),
                Err(e) => tally.recreation(damaged, Some(e))?,
            }
            Ok(())
        },
    )?;
    tally.print();
    Ok(())
}

/// Zstd streams of any libzstd level, content and feed size are analysed
/// and recreated exactly; damaged ones (bytes changed, cut, garbage
/// appended) are refused or still recreated exactly, never a panic.
#[test]
fn zstd_streams_are_recreated_exactly_or_refused() -> Result<(), String> {
    use crate::deflate::Event;
    use crate::zstd::{ZstdAnalyzer, ZstdConfig, ZstdRecreator};
    let pieces = vec(
        prop_oneof![
            (1usize..20_000, any::<u64>())
                .prop_map(|(n, seed)| crate::test_support::texty_bytes(seed, n)),
            (1usize..5_000, any::<u64>())
                .prop_map(|(n, seed)| crate::test_support::seeded_bytes(seed, n)),
            (1usize..20_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ],
        0..8,
    )
    .prop_map(|p| p.concat());
    let strategy = (
        pieces,
        -7i32..20,
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        prop::option::of(any::<prop::sample::Index>()),
        vec(any::<u8>(), 0..3),
        1usize..70_000,
        1usize..300_000,
        any::<bool>(),
    );
    let tally = Tally::default();
    check(
        "zstd_round_trip",
        300,
        strategy,
        |(data, level, muts, cut, tail, feed, segment, harm)| {
            let valid = zstd::bulk::compress(&data, level)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let damaged = harm && (!muts.is_empty() || cut.is_some() || !tail.is_empty());
            let input = if damaged {
                damage(valid, muts, cut, &tail)
            } else {
                valid
            };
            let cfg = ZstdConfig {
                segment_plain: segment,
                ..ZstdConfig::default()
            };
            let mut analyzer = ZstdAnalyzer::new(cfg);
            let mut plain = Vec::new();
            let mut segments = Vec::new();
            let mut out = |ev: Event<'_>| -> Result<(), Infallible> {
                match ev {
                    Event::Plain(b) => plain.extend_from_slice(b),
                    Event::SegmentEnd { corrections } => {
                        segments.push((std::mem::take(&mut plain), corrections));
                    }
                    _ => {}
                }
                Ok(())
            };
            let mut result = Ok(());
            for piece in input.chunks(feed) {
                result = analyzer.feed(piece, &mut out);
                if result.is_err() {
                    break;
                }
            }
            let result = result.and_then(|()| analyzer.finish(&mut out));
            match result {
                Ok(summary) => {
                    prop_assert!(plain.is_empty(), "plain bytes after the last segment");
                    let mut r = ZstdRecreator::new();
                    let mut again = Vec::new();
                    for (p, c) in &segments {
                        again.extend(
                            r.segment(p, c)
                                .map_err(|e| TestCaseError::fail(e.to_string()))?,
                        );
                    }
                    prop_assert!(again == input, "accepted but recreated differently");
                    if !damaged {
                        prop_assert_eq!(summary.plain_bytes, data.len() as u64);
                    }
                    tally.recreation(damaged, None::<String>)?;
                }
                Err(e) => tally.recreation(damaged, Some(e))?,
            }
            Ok(())
        },
    )?;
    tally.print();
    Ok(())
}

/// Damaged gzip (bytes changed, cut, garbage appended) and arbitrary bytes:
/// an error or events that still recreate the input exactly, never a panic.
#[test]
fn damaged_gzip_is_refused_or_recreated_exactly() -> Result<(), String> {
    let damaged = (
        vec(member(), 1..3),
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(members, muts, cut, tail): (_, Mutations, _, _)| {
            damage(
                members.iter().flat_map(gzip_member).collect(),
                muts,
                cut,
                &tail,
            )
        });
    let input = prop_oneof![
        2 => damaged,
        1 => vec(any::<u8>(), 0..2000),
        1 => vec(any::<u8>(), 0..2000).prop_map(|mut b| {
            let mut h = vec![0x1f, 0x8b, 8];
            h.append(&mut b);
            h
        }),
    ];
    let tally = Tally::default();
    check(
        "gzip_damaged",
        600,
        (input, 1usize..3000, any::<bool>()),
        |(input, feed, raw)| {
            match analyze(&input, feed, 4096, raw) {
                Ok(events) => {
                    let again = recreate(&events);
                    prop_assert!(
                        again.as_deref() == Ok(input.as_slice()),
                        "accepted but recreated differently"
                    );
                    tally.add("accepted, recreated");
                }
                Err(_) => tally.add("refused"),
            }
            Ok(())
        },
    )?;
    tally.print();
    Ok(())
}

/// Corrections come from disk: any bytes are refused or recreate something,
/// never a panic.
#[test]
fn arbitrary_corrections_never_panic() -> Result<(), String> {
    check(
        "deflate_corrections",
        300,
        (vec(any::<u8>(), 0..512), vec(any::<u8>(), 0..256)),
        |(plain, corrections)| {
            let _ = DeflateRecreator::new().segment(&plain, &corrections);
            Ok(())
        },
    )
}

// ---------------------------------------------------------------- recipes

fn block_ref(frames: usize) -> impl Strategy<Value = (BlockId, u32, u32, u32)> {
    (
        any::<[u8; 20]>(),
        0..frames.max(1) as u32,
        0u32..5000,
        0u32..5000,
    )
        .prop_map(|(id, f, off, len)| (BlockId::from_bytes(id), f, off, len))
}

/// A consistent recipe: frames large enough for their blocks, a layout that
/// uses exactly the content.
fn recipe() -> impl Strategy<Value = Recipe> {
    (1usize..4)
        .prop_flat_map(|nframes| {
            (
                vec((any::<u64>(), any::<u64>(), any::<u32>(), 0u8..3), nframes),
                vec(block_ref(nframes), 0..12),
                vec(block_ref(nframes), 0..4),
                any::<bool>(),
                vec(any::<u8>(), 0..20),
                vec(any::<u8>(), 0..32),
                "[a-z0-9-]{0,12}",
            )
        })
        .prop_map(|(frames, content, corrections, gzip, lit, seed, chunker)| {
            let blocks = |refs: Vec<(BlockId, u32, u32, u32)>| -> Vec<BlockRef> {
                refs.into_iter()
                    .map(|(id, f, offset, len)| BlockRef {
                        id,
                        len,
                        at: Location::Framed { frame: f, offset },
                    })
                    .collect()
            };
            let content = blocks(content);
            let corrections = blocks(corrections);
            // Each frame is as long as the furthest block placed in it.
            let mut frame_len = vec![0u64; frames.len()];
            for b in content.iter().chain(&corrections) {
                if let Location::Framed { frame, offset } = b.at {
                    let end = u64::from(offset) + u64::from(b.len);
                    frame_len[frame as usize] = frame_len[frame as usize].max(end);
                }
            }
            let frames: Vec<Frame> = frames
                .into_iter()
                .zip(frame_len)
                .map(|((pack, offset, stored_len, codec), len)| Frame {
                    pack,
                    offset,
                    stored_len,
                    len: len as u32,
                    codec: Codec::from_u8(codec).unwrap(),
                })
                .collect();
            let digest = Digest::of(Algorithm::Sha256, &seed);
            let total: u64 = content.iter().map(|b| u64::from(b.len)).sum();
            if gzip {
                let half = total / 2;
                let segments = vec![
                    Segment {
                        plain: half,
                        corrections: corrections.clone(),
                    },
                    Segment {
                        plain: total - half,
                        corrections: Vec::new(),
                    },
                ];
                // Odd seeds stand for zstd blobs: one stream op, no literals.
                // Seeds ending in 3 mod 4 stand for a gzip member its
                // encoder's replica recreates (no corrections).
                let zstd = seed.first().is_some_and(|b| b % 2 == 1);
                let replica = seed.last().is_some_and(|b| b % 4 == 3);
                let layout = if zstd {
                    vec![Op::Zstd(segments)]
                } else if replica {
                    let level = i8::try_from(seed.len() % 12).unwrap() - 2;
                    vec![
                        Op::Lit(lit.clone()),
                        Op::Replica {
                            replica: crate::replica::Replica::GoFlate127(level),
                            plain: total,
                            checkpoints: Vec::new(),
                        },
                        Op::Lit(lit),
                    ]
                } else {
                    vec![Op::Lit(lit.clone()), Op::Deflate(segments), Op::Lit(lit)]
                };
                Recipe {
                    digest,
                    size: total / 3 + 17,
                    chunker,
                    encoding: if zstd {
                        crate::recipe::Encoding::Zstd
                    } else {
                        crate::recipe::Encoding::Gzip
                    },
                    frames,
                    content,
                    layout,
                }
            } else {
                Recipe::raw(digest, chunker, frames, content)
            }
        })
}

#[test]
fn recipes_round_trip_through_json() -> Result<(), String> {
    check("recipe_round_trip", 1500, recipe(), |r| {
        let back = Recipe::from_json(&r.to_json());
        prop_assert!(back.is_ok(), "refused its own output: {:?}", back.err());
        prop_assert_eq!(back.unwrap(), r);
        Ok(())
    })
}

/// What `from_json` promises for any recipe it accepts, checked with wide
/// arithmetic: the layout uses exactly the content, blocks lie inside their
/// frames, a verbatim layout adds up to the size, `locate` stays in range.
fn recipe_is_consistent(r: &Recipe) -> Result<(), String> {
    let content: u128 = r.content.iter().map(|b| u128::from(b.len)).sum();
    let mut consumed = 0u128;
    let mut produced = 0u128;
    for op in &r.layout {
        match op {
            Op::Lit(b) => produced += b.len() as u128,
            Op::Copy(n) => {
                consumed += u128::from(*n);
                produced += u128::from(*n);
            }
            Op::Deflate(segs) | Op::Zstd(segs) => {
                consumed += segs.iter().map(|s| u128::from(s.plain)).sum::<u128>();
            }
            Op::Replica { plain, .. } => consumed += u128::from(*plain),
        }
    }
    if consumed != content {
        return Err(format!(
            "layout uses {consumed} content bytes, content has {content}"
        ));
    }
    if r.is_verbatim() && produced != u128::from(r.size) {
        return Err(format!(
            "verbatim layout makes {produced} bytes, size {}",
            r.size
        ));
    }
    let blocks = r
        .content
        .iter()
        .chain(r.layout.iter().flat_map(|op| match op {
            Op::Deflate(segs) | Op::Zstd(segs) => {
                segs.iter().flat_map(|s| &s.corrections).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        }));
    for b in blocks {
        if let Location::Framed { frame, offset } = b.at {
            let f = r
                .frames
                .get(frame as usize)
                .ok_or("block names a missing frame")?;
            if u64::from(offset) + u64::from(b.len) > u64::from(f.len) {
                return Err("block overruns its frame".into());
            }
        }
    }
    for off in [0, content.saturating_sub(1) as u64, (content / 2) as u64] {
        let (i, at) = r.locate(off);
        if (off as u128) < content && (i >= r.content.len() || at >= r.content[i].len as usize) {
            return Err(format!("locate({off}) = ({i}, {at})"));
        }
    }
    Ok(())
}

fn big_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..100).prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(u64::MAX - 1)),
        Just(json!(1u64 << 63)),
        Just(json!(u64::from(u32::MAX))),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(-1)),
        any::<u64>().prop_map(Value::from),
    ]
}

/// A recipe's JSON with fields replaced by hostile values.
fn hostile_recipe_json() -> impl Strategy<Value = Vec<u8>> {
    (
        recipe(),
        vec(big_number(), 0..4),
        0u8..8,
        any::<prop::sample::Index>(),
        big_number(),
    )
        .prop_map(|(r, copies, what, idx, n)| {
            let mut v: Value = serde_json::from_slice(&r.to_json()).unwrap();
            match what {
                0 => {
                    v["layout"] = Value::from(
                        copies
                            .into_iter()
                            .map(|c| json!({ "copy": c }))
                            .collect::<Vec<_>>(),
                    )
                }
                1 => v["size"] = n,
                2 => {
                    if let Some(frames) = v["frames"].as_array_mut() {
                        if !frames.is_empty() {
                            let i = idx.index(frames.len());
                            let j = idx.index(5).max(1);
                            frames[i][j] = n;
                        }
                    }
                }
                3 => v["layout"] = json!([{ "deflate": [[n, [["00".repeat(20), 1, 0, 0]]]] }]),
                4 => v["content"] = json!(crate::hex::encode(&r.to_json()[..idx.index(40)])),
                5 => v["version"] = n,
                6 => {
                    v["version"] = json!(1);
                    v["blocks"] = json!([["00".repeat(20), n]]);
                }
                _ => v["layout"] = json!([{ "copy": n }, { "lit": "zz" }]),
            }
            serde_json::to_vec(&v).unwrap()
        })
}

#[test]
fn recipes_from_disk_are_refused_or_consistent() -> Result<(), String> {
    let bytes = prop_oneof![
        2 => hostile_recipe_json(),
        1 => vec(any::<u8>(), 0..200),
        1 => (recipe(), vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(|(r, muts)| {
            let mut b = r.to_json();
            for (i, x) in muts {
                let i = i.index(b.len());
                b[i] = x;
            }
            b
        }),
    ];
    let tally = Tally::default();
    check("recipe_from_disk", 3000, bytes, |b| {
        tally.add(if Recipe::from_json(&b).is_ok() {
            "accepted"
        } else {
            "refused"
        });
        if let Ok(r) = Recipe::from_json(&b) {
            if let Err(why) = recipe_is_consistent(&r) {
                prop_assert!(
                    false,
                    "accepted an inconsistent recipe: {why}: {}",
                    String::from_utf8_lossy(&b)
                );
            }
        }
        Ok(())
    })?;
    tally.print();
    Ok(())
}
