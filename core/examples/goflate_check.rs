//! Compresses a plain file (or stdin, `-`) with the Go 1.27.3 replica in
//! `blockreg_core::goflate` and, optionally, compares with a gzip file the
//! real Go encoder wrote.
//!
//! ```text
//! cargo run --release -p blockreg-core --example goflate_check -- LEVEL PLAIN|- [EXPECTED.gz]
//! ```
//!
//! Prints sizes, single-thread compression speed, the SHA-256 of the
//! output, and `exact` or the first differing byte.

use blockreg_core::goflate::Encoder;
use blockreg_core::gozip::GzipEncoder;
use sha2::{Digest, Sha256};
use std::io::{BufReader, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: goflate_check LEVEL PLAIN|- [EXPECTED.gz]");
        return ExitCode::from(2);
    }
    let level: i32 = args[1].parse().expect("LEVEL is an integer");
    let mut input: Box<dyn Read> = if args[2] == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args[2]).expect("open PLAIN"))
    };
    let mut expected = args
        .get(3)
        .map(|p| BufReader::with_capacity(1 << 20, std::fs::File::open(p).expect("open EXPECTED")));

    let mut enc = GzipEncoder::new(Encoder::new(level).expect("valid level"), level);
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    let mut exp = Vec::new();
    let (mut n_in, mut n_out) = (0u64, 0u64);
    let mut first_diff: Option<u64> = None;
    let mut hash = Sha256::new();
    let mut busy = Duration::ZERO;
    let mut check = |out: &mut Vec<u8>, n_out: &mut u64, first_diff: &mut Option<u64>| {
        hash.update(&out[..]);
        if let (Some(r), None) = (expected.as_mut(), *first_diff) {
            exp.resize(out.len(), 0);
            let got = read_full(r, &mut exp);
            if let Some(i) = out.iter().zip(&exp[..got]).position(|(a, b)| a != b) {
                *first_diff = Some(*n_out + i as u64);
            } else if got < out.len() {
                *first_diff = Some(*n_out + got as u64);
            }
        }
        *n_out += out.len() as u64;
        out.clear();
    };
    loop {
        let n = input.read(&mut buf).expect("read PLAIN");
        if n == 0 {
            break;
        }
        n_in += n as u64;
        let t = Instant::now();
        enc.write(&buf[..n], &mut out);
        busy += t.elapsed();
        check(&mut out, &mut n_out, &mut first_diff);
    }
    let t = Instant::now();
    enc.finish(&mut out);
    busy += t.elapsed();
    check(&mut out, &mut n_out, &mut first_diff);

    let mbps = n_in as f64 / 1e6 / busy.as_secs_f64().max(1e-9);
    println!(
        "level {level}: {n_in} -> {n_out} bytes ({:.2} %), {:.3} s, {mbps:.1} MB/s, sha256 {}",
        100.0 * n_out as f64 / n_in.max(1) as f64,
        busy.as_secs_f64(),
        hex(&hash.finalize())
    );
    let Some(mut r) = expected else {
        return ExitCode::SUCCESS;
    };
    if first_diff.is_none() {
        let mut rest = [0u8; 1];
        if read_full(&mut r, &mut rest) != 0 {
            first_diff = Some(n_out);
        }
    }
    match first_diff {
        None => {
            println!("exact");
            ExitCode::SUCCESS
        }
        Some(at) => {
            println!("DIFFERENT: first differing byte at offset {at}");
            ExitCode::FAILURE
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).expect("read EXPECTED") {
            0 => break,
            n => got += n,
        }
    }
    got
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
