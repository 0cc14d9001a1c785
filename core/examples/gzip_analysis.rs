//! Analyses gzip (or zstd) files the way the converter does and recreates them:
//! prints, per file, plain and correction bytes, analysis and recreation
//! speed, and whether the recreation is exact. A developer's measuring tool
//! (native, no guest); the bench scripts measure the real path.
//!
//! `cargo run --release -p blockreg-core --example gzip_analysis -- FILE...`

use std::convert::Infallible;
use std::time::Instant;

use blockreg_core::deflate::{AnalyzeConfig, DeflateRecreator, Event, GzipAnalyzer};
use blockreg_core::replica::{Replica, ReplicaRecreator};
use blockreg_core::zstd::{is_zstd, ZstdAnalyzer, ZstdConfig, ZstdRecreator};

/// The recreator of the stream in progress.
enum Recreator {
    Deflate(DeflateRecreator),
    Zstd(Box<ZstdRecreator>),
    /// A member its encoder's replica recreates: one segment, the whole
    /// stream, no corrections.
    Replica(ReplicaRecreator),
}

enum Piece {
    Literal(Vec<u8>),
    Start,
    ZstdStart,
    ReplicaStart(Replica),
    Segment {
        plain: Vec<u8>,
        corrections: Vec<u8>,
    },
}

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).expect("read input");
        let cfg = AnalyzeConfig {
            max_corrections_ratio: 10.0,
            ..AnalyzeConfig::default()
        };
        let mut pieces = Vec::new();
        let mut plain = Vec::new();
        let mut in_replica = false;
        let mut out = |e: Event<'_>| -> Result<(), Infallible> {
            match e {
                Event::Literal(b) => pieces.push(Piece::Literal(b.to_vec())),
                Event::DeflateStart => pieces.push(Piece::Start),
                Event::ReplicaStart(r) => {
                    in_replica = true;
                    pieces.push(Piece::ReplicaStart(r));
                }
                Event::StreamEnd if in_replica => {
                    in_replica = false;
                    pieces.push(Piece::Segment {
                        plain: std::mem::take(&mut plain),
                        corrections: Vec::new(),
                    });
                }
                Event::ZstdStart => pieces.push(Piece::ZstdStart),
                Event::Plain(b) => plain.extend_from_slice(b),
                Event::SegmentEnd { corrections } => pieces.push(Piece::Segment {
                    plain: std::mem::take(&mut plain),
                    corrections,
                }),
                // Sequential recreation here: the stretches are the host's.
                Event::ReplicaCheckpoints(_) | Event::StreamEnd => {}
            }
            Ok(())
        };
        let started = Instant::now();
        let result = if is_zstd(&data) {
            let mut analyzer = ZstdAnalyzer::new(ZstdConfig::default());
            analyzer
                .feed(&data, &mut out)
                .and_then(|()| analyzer.finish(&mut out))
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            let mut analyzer = GzipAnalyzer::new(cfg);
            analyzer
                .feed(&data, &mut out)
                .and_then(|()| analyzer.finish(&mut out))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let analysis = started.elapsed().as_secs_f64();
        if let Err(e) = result {
            println!("{path}: analysis failed after {analysis:.1} s: {e}");
            continue;
        }
        let plain_bytes: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Segment { plain, .. } => plain.len(),
                _ => 0,
            })
            .sum();
        let correction_bytes: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Segment { corrections, .. } => corrections.len(),
                _ => 0,
            })
            .sum();
        let started = Instant::now();
        let mut rebuilt = Vec::with_capacity(data.len());
        let mut recreator = Recreator::Deflate(DeflateRecreator::new());
        let mut error = None;
        for p in &pieces {
            match p {
                Piece::Literal(b) => rebuilt.extend_from_slice(b),
                Piece::Start => recreator = Recreator::Deflate(DeflateRecreator::new()),
                Piece::ZstdStart => recreator = Recreator::Zstd(Box::new(ZstdRecreator::new())),
                Piece::ReplicaStart(r) => {
                    println!(
                        "{path}: member recreated by replica {} level {}",
                        r.name(),
                        r.level()
                    );
                    recreator = Recreator::Replica(ReplicaRecreator::new(*r));
                }
                Piece::Segment { plain, corrections } => {
                    let segment = match &mut recreator {
                        Recreator::Deflate(r) => {
                            r.segment(plain, corrections).map_err(|e| e.to_string())
                        }
                        Recreator::Zstd(r) => {
                            r.segment(plain, corrections).map_err(|e| e.to_string())
                        }
                        Recreator::Replica(r) => {
                            let mut out = Vec::new();
                            r.feed(plain, &mut out);
                            r.finish(&mut out);
                            Ok(out)
                        }
                    };
                    match segment {
                        Ok(b) => rebuilt.extend_from_slice(&b),
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        let recreation = started.elapsed().as_secs_f64();
        let mb = data.len() as f64 / 1e6;
        println!(
            "{path}: {} B compressed, {plain_bytes} B plain, corrections {correction_bytes} B = {:.2} % of compressed; analysis {:.1} MB/s, recreation {:.1} MB/s, exact: {}",
            data.len(),
            100.0 * correction_bytes as f64 / data.len() as f64,
            mb / analysis,
            mb / recreation,
            match error {
                Some(e) => format!("no ({e})"),
                None => (rebuilt == data).to_string(),
            }
        );
    }
}
