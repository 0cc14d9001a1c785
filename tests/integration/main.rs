//! Host integration tests: each test starts the real host with its embedded
//! guest on `127.0.0.1:0` over a fresh temporary data dir (see the `tests`
//! library) and checks the Docker Registry HTTP API V2 / OCI Distribution
//! Spec 1.1 behaviour over real HTTP: status, headers and body.
//!
//! One module per endpoint group. Run with `cargo test --release -p tests`.

mod auth;
mod base;
mod blobs;
mod config_file;
mod confinement;
mod content_management;
mod conversion;
mod errors;
mod gc;
mod integrity;
mod load;
mod manifests;
mod observability;
mod tags_catalog;
mod tls;
mod uploads;
