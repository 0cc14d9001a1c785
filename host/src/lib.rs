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
//! - `convert.rs`: the background converter's thread and loop;
//!   `purge.rs`: expiry of abandoned upload sessions; `gc.rs`: garbage
//!   collection (the background job and `blockreg gc`);
//!   `store_lock.rs`: the lock on the data directory that keeps
//!   conversion, collection and recovery apart.
//! - `guest.rs`: the engine, loading and validating a component, hot swap on
//!   SIGHUP or file change, and `call_admin` (one `admin` call in a fresh
//!   instance, for describe, recover, get-stats, convert-next,
//!   purge-uploads, check and collect).
//! - `ctx.rs`: the sandbox of one instance (`/data` preopen, no network);
//!   `datadir.rs`: opening the data directory with cap-std; `objects/`:
//!   the `objects` import, the store's records the host keeps for the
//!   guest (the data directory through cap-std); `frames.rs`: the `frames`
//!   import, pack frames read and decoded natively ahead of the guest.
//! - `stats.rs`, `check.rs`, `runner.rs`: the `stats`, `check` and `run`
//!   subcommands (`gc` is in `gc.rs`).
//! - `config.rs`: the options (`ServeOptions`, `ServeConfig`, limits and
//!   guest settings with their only defaults); `config_file.rs`: registry:2's
//!   `config.yml` and `REGISTRY_*` variables read into them.
//! - `auth/`: who a request is (`Authorization`: htpasswd with bcrypt,
//!   bearer tokens) and what it may do (`rules.rs`, zot's model), the
//!   host's half of `wit/access.wit`; `throttle.rs`: what one client may
//!   do (request rate, uploads in flight, failed logins; 429).
//! - `tls.rs`: HTTPS with rustls, certificates reloaded on change or SIGHUP.
//! - `debug.rs`: the debug server (`/debug/health`, `/livez`, `/readyz`,
//!   Prometheus metrics); `metrics.rs`: what is counted.
//! - `bindings.rs`: all generated bindings; `error.rs`: the error policy.
//! - `build.rs`: builds `guest/` and embeds it.

mod auth;
mod bindings;
mod check;
mod config;
pub mod config_file;
mod convert;
mod ctx;
mod datadir;
mod debug;
mod error;
mod frames;
mod gc;
mod guest;
pub mod malloc;
mod metrics;
mod objects;
mod purge;
mod replicas;
mod runner;
mod server;
mod shutdown;
mod stats;
mod store_lock;
mod throttle;
mod tls;

pub use bindings::{Collection, StoreCheck, StoreStats};
pub use check::store_check;
pub use config::{
    AccessRules, Actions, AuthConfig, AuthMethod, ClientLimits, DebugConfig, GarbageCollection,
    GuestSettings, GuestSource, HealthConfig, Limits, LogSettings, Policy, RepositoryRule,
    RetentionRule, ServeConfig, ServeOptions, StorageCheck, TlsConfig, TlsVersion, UploadPurging,
};
pub use convert::{current_nice, lower_request_thread_priority, REQUEST_NICE};
pub use gc::{collect_garbage, grace_warning};
pub use guest::embedded_guest;
pub use runner::run_command;
pub use server::{serve, Listeners};
pub use shutdown::signal as shutdown_signal;
pub use stats::store_stats;

/// Sends `tracing` output to stderr as text or JSON lines, filtered by
/// `RUST_LOG` or else `log.level`, without the access log when it is off.
/// Does nothing if a subscriber is already installed.
pub fn init_logging(log: &LogSettings) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    if !log.access_log {
        if let Ok(off) = "blockreg::request=off".parse() {
            filter = filter.add_directive(off);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
