//! Every generated binding the host uses, in one place: the `admin-host`
//! world from `wit/` (the `admin` export it calls, the `settings`,
//! `access`, `objects`, `frames` and `replicas` imports it provides) plus re-exports of the `wasi:http/proxy` and
//! `wasi:cli/command` bindings that wasmtime's WASI crates already generate.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "admin-host",
        exports: { default: async },
        // The objects may be in a bucket: its calls are network calls.
        // A frame reader waits for the frames decoded ahead of it, and its
        // resource table may fail (a trap: a host bug).
        imports: {
            "blockreg:registry/objects": async,
            "blockreg:registry/frames": async | trappable,
            "blockreg:registry/replicas": async | trappable,
        },
        with: {
            "blockreg:registry/frames.reader": crate::frames::Reader,
            "blockreg:registry/frames.encoder": crate::frames::Encoder,
            "blockreg:registry/replicas.encoder": crate::replicas::Encoder,
        },
        // `blockreg stats --json` prints the `stats` record as it is.
        additional_derives: [serde::Serialize, PartialEq],
    });
}

/// The `access` import: the action and decision types, the trait the
/// host's sandbox implements, and the function that links it.
pub(crate) use generated::blockreg::registry::access::{
    add_to_linker as add_access_to_linker, Action, Decision, Host as AccessHost,
};
/// The `settings` import: the record the guest receives, the trait the
/// host's sandbox implements, and the function that links it.
pub(crate) use generated::blockreg::registry::settings::{
    add_to_linker as add_settings_to_linker, Host as SettingsHost, Settings,
};
/// The `objects` import: the store's records the host keeps
/// (`objects/`).
pub(crate) mod objects {
    pub(crate) use super::generated::blockreg::registry::objects::{
        add_to_linker, Error, Host, Info, Listing,
    };
}
/// The `check-report` record of the `admin` interface: what
/// `blockreg check` found.
pub use generated::exports::blockreg::registry::admin::CheckReport as StoreCheck;
/// The `collection` record of the `admin` interface: what one garbage
/// collection did (`blockreg gc`, and the last one in `blockreg stats`).
pub use generated::exports::blockreg::registry::admin::Collection;
/// The `frames` import: pack frames the host compresses, reads and
/// decodes beside the guest (`frames.rs`).
pub(crate) mod frames {
    pub(crate) use super::generated::blockreg::registry::frames::{
        add_to_linker, Codec, Encoded, Error, Frame, Host, HostEncoder, HostReader,
    };
}
/// The `replicas` import: DEFLATE streams recreated by their encoder's
/// replica natively, beside the guest (`replicas.rs`).
pub(crate) mod replicas {
    pub(crate) use super::generated::blockreg::registry::replicas::{
        add_to_linker, Checkpoint, Error, Host, HostEncoder,
    };
}
/// The `admin` export of one instance.
pub(crate) use generated::exports::blockreg::registry::admin::Guest as Admin;
/// What a collection removed, by name (built by the host only in tests).
#[cfg(test)]
pub(crate) use generated::exports::blockreg::registry::admin::Removals;
/// The `stats` record of the `admin` interface: the figures of
/// `blockreg stats`.
pub use generated::exports::blockreg::registry::admin::Stats as StoreStats;
/// Records and the error variant of the `admin` interface.
pub(crate) use generated::exports::blockreg::registry::admin::{
    CollectOptions, Conversion, Encoding, Error as AdminError, GuestInfo, Purge, Queue, Recovery,
    RetentionRule as RetentionRecord,
};
/// Pre-instantiated `admin-host` world: the guest's `admin` export.
pub(crate) use generated::AdminHostPre;

/// Pre-instantiated `wasi:cli/command` world, for `blockreg run`.
pub(crate) use wasmtime_wasi::p2::bindings::CommandPre;
/// The `wasi:http` scheme of an incoming request.
pub(crate) use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
/// Pre-instantiated `wasi:http/proxy` world, for serving requests.
pub(crate) use wasmtime_wasi_http::p2::bindings::ProxyPre;
