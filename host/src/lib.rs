//! The native half of blockreg: owns the sockets and the data directory and
//! runs the registry guest (`guest/`, a WebAssembly component) once per
//! request.
//!
//! Where to look:
//! - `server.rs`: accept loop, per-request instantiation, read and write
//!   slots, body limits and pacing, timeouts, the access log, and the
//!   `blockreg-committed` header by which the guest reports a commit.
//! - `shutdown.rs`: what asks the server to stop (Ctrl-C, SIGTERM), how its
//!   tasks hear of it, and how long open connections are waited for.
//! - `convert.rs`: the background converter's thread and loop.
//! - `guest.rs`: the engine, loading and validating a component, hot swap on
//!   SIGHUP or file change, and `call_admin` (one `admin` call in a fresh
//!   instance, for describe, recover, get-stats and convert-next).
//! - `ctx.rs`: the sandbox of one instance (`/data` preopen, no network);
//!   `datadir.rs`: opening the data directory with cap-std.
//! - `stats.rs`, `runner.rs`: the `stats` and `run` subcommands.
//! - `bindings.rs`: all generated bindings; `error.rs`: the error policy.
//! - `build.rs`: builds `guest/` and embeds it.

mod bindings;
mod config;
mod convert;
mod ctx;
mod datadir;
mod error;
mod guest;
mod runner;
mod server;
mod shutdown;
mod stats;

pub use bindings::StoreStats;
pub use config::{GuestSettings, GuestSource, Limits, ServeConfig};
pub use guest::embedded_guest;
pub use runner::run_command;
pub use server::serve;
pub use shutdown::signal as shutdown_signal;
pub use stats::store_stats;

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`).
/// Does nothing if a subscriber is already installed.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
