//! What a caller of [`serve`](crate::serve) chooses: where the store lives,
//! which guest answers, the resource limits around each request, and the
//! operational pieces around it (TLS, extra headers, the debug server).
//! `config_file.rs` fills these from registry:2's `config.yml`; the
//! defaults here are the only ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

pub use crate::auth::rules::{AccessRules, Actions, Policy, RepositoryRule};

/// Everything `blockreg serve` runs with: where it listens, what it serves
/// ([`ServeConfig`]) and how it logs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address of the registry's listener.
    pub addr: SocketAddr,
    /// What [`serve`](crate::serve) is given.
    pub serve: ServeConfig,
    /// Process-wide logging.
    pub log: LogSettings,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 5001)),
            serve: ServeConfig::new("./data"),
            log: LogSettings::default(),
        }
    }
}

/// How the process logs (`log:` in the config file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// A `tracing` filter (`info`, `warn`, ...); `RUST_LOG`, when set,
    /// replaces it.
    pub level: String,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Whether each request is logged (target `blockreg::request`).
    pub access_log: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            json: false,
            access_log: true,
        }
    }
}

/// Everything [`serve`](crate::serve) needs besides the listener.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Host directory granted to the guest as its `/data` preopen; created
    /// when missing.
    pub data_dir: PathBuf,
    /// Which component answers requests.
    pub guest: GuestSource,
    /// Per-request resource limits.
    pub limits: Limits,
    /// Settings every guest instance receives (its `settings` import).
    pub settings: GuestSettings,
    /// Whether pushed blobs are converted to blocks in the background
    /// (`admin.convert-next`); when off they stay as pushed.
    pub background_conversion: bool,
    /// HTTPS instead of plain HTTP (`tls.rs`).
    pub tls: Option<TlsConfig>,
    /// Whether TLS clients may choose HTTP/2 by ALPN; off, or in the
    /// clear: HTTP/1.1.
    pub http2: bool,
    /// Headers the host adds to every response that lacks them
    /// (`http.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The debug server (health, metrics), off when `None`.
    pub debug: Option<DebugConfig>,
    /// How the store's health is checked (`health.storagedriver`).
    pub health: HealthConfig,
    /// Expiry of abandoned upload sessions
    /// (`storage.maintenance.uploadpurging`).
    pub upload_purging: UploadPurging,
    /// Authentication and authorization (`auth:`, `blockreg.access`); off
    /// by default.
    pub auth: AuthConfig,
    /// Garbage collection in the background (`blockreg.gc`; `gc.rs`).
    pub gc: GarbageCollection,
}

impl ServeConfig {
    /// A configuration serving `data_dir` with the embedded guest and
    /// [`Limits::default`].
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            guest: GuestSource::Embedded,
            limits: Limits::default(),
            settings: GuestSettings::default(),
            background_conversion: true,
            tls: None,
            http2: true,
            headers: Vec::new(),
            debug: None,
            health: HealthConfig::default(),
            upload_purging: UploadPurging::default(),
            auth: AuthConfig::default(),
            gc: GarbageCollection::default(),
        }
    }
}

/// Who may use the registry: how callers prove who they are (`auth:`) and
/// what each may do (`blockreg.access`). The default, no method and no
/// rules, lets everyone do everything (a registry on a trusted network).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// How callers authenticate; `None`: nobody does.
    pub method: Option<AuthMethod>,
    /// Per-repository rules; `None`: with htpasswd every user may do
    /// everything, with tokens the token's `access` claim alone decides.
    pub rules: Option<AccessRules>,
}

/// How callers authenticate (`auth.htpasswd` or `auth.token`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic against an htpasswd file of bcrypt hashes.
    Htpasswd {
        /// The realm of the `Basic` challenge.
        realm: String,
        /// The htpasswd file; reloaded when it changes. Must lie outside
        /// the data directory.
        path: PathBuf,
    },
    /// Bearer tokens (JWTs) issued by an external token server.
    Token {
        /// Where clients get tokens (the challenge's `realm`).
        realm: String,
        /// This registry's name at the token server: the challenge's
        /// `service` and the audience (`aud`) tokens must carry.
        service: String,
        /// The token server's name: the issuer (`iss`) tokens must carry.
        issuer: String,
        /// PEM certificates whose keys sign the tokens. Must lie outside
        /// the data directory.
        root_cert_bundle: PathBuf,
    },
}

/// Oldest TLS version a client may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (registry:2's default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Certificate files for HTTPS (`http.tls`); reloaded when they change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Must lie outside the data
    /// directory: the guest can read everything in there.
    pub key: PathBuf,
    /// PEM CA bundles; when any is given, every client must present a
    /// certificate signed by one of them.
    pub client_cas: Vec<PathBuf>,
    /// Oldest version accepted.
    pub minimum: TlsVersion,
}

/// The debug server (`http.debug`): health endpoints and, when
/// `prometheus_path` is set, metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugConfig {
    /// Where it listens when [`serve`](crate::serve) is not handed a
    /// listener for it.
    pub addr: SocketAddr,
    /// Path of the Prometheus metrics (`/metrics` by default); `None`: off.
    pub prometheus_path: Option<String>,
}

/// Health checks (`health:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// Periodic check of the data directory; when `None`, it is checked
    /// when a health endpoint is asked.
    pub storage: Option<StorageCheck>,
}

/// A periodic check of the data directory (`health.storagedriver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageCheck {
    /// Time between checks.
    pub interval: Duration,
    /// Consecutive failures before the store is reported unhealthy.
    pub threshold: u32,
}

impl Default for StorageCheck {
    /// registry:2's defaults.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            threshold: 1,
        }
    }
}

/// Expiry of abandoned upload sessions
/// (`storage.maintenance.uploadpurging`; `purge.rs`).
///
/// On by default, like registry:2's, but sooner: sessions idle for a day
/// (registry:2: a week), checked every hour (registry:2: a day). Idleness
/// counts from the last byte appended, so no upload that is still sending
/// is cut off, and no client resumes a push a day later (docker, skopeo
/// and containerd start a new session on retry); a CI registry that
/// deletes as much as it pushes gets the space of cancelled jobs back the
/// same day instead of after a week.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    /// Whether sessions are purged.
    pub enabled: bool,
    /// Sessions no byte was appended to for this long are removed.
    pub age: Duration,
    /// Time between purges (the first runs a minute after start, or after
    /// `interval` when shorter).
    pub interval: Duration,
    /// Only log what would be purged.
    pub dry_run: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        Self {
            enabled: true,
            age: Duration::from_secs(24 * 3600),
            interval: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

/// Garbage collection (`blockreg.gc`; `gc.rs`): what a collection keeps
/// and, for `serve`, when one runs. `blockreg gc` takes the grace period,
/// `delete_untagged` and the retention rules from here and its own flags
/// for the rest.
///
/// On by default, every hour, as upload purging: a CI registry deletes as
/// much as it pushes, and a deleted image's space should come back the
/// same hour, not when someone remembers to run a command. A collection
/// that finds nothing to remove walks the manifests and recipes and
/// rewrites no pack: 4 s on a store of 10 000 blobs and a million blocks
/// (`bench/gc-scale.py --blobs 10000`, 2 cores), during which conversion
/// waits, so under a minute an hour at ten times that; a larger store can
/// set a longer `interval`. Nothing is removed by
/// default that a client could still want: only blobs no manifest names,
/// unused for the grace period; untagged manifests and tags stay unless
/// `delete_untagged` or retention rules say otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageCollection {
    /// Whether the server collects in the background.
    pub enabled: bool,
    /// Time between collections (the first runs ten minutes after start,
    /// or after `interval` when that is shorter).
    pub interval: Duration,
    /// Unreferenced blobs and untagged manifests used within this long are
    /// kept: a blob is unreferenced from its push until its manifest
    /// arrives. The server refuses a grace period not longer than its
    /// request timeout plus a minute.
    pub grace: Duration,
    /// Also remove manifests no tag reaches, once past the grace period
    /// (registry:2's `--delete-untagged`).
    pub delete_untagged: bool,
    /// Only log what would be removed.
    pub dry_run: bool,
    /// Which tags to keep, per repository (first matching rule); a
    /// repository no rule covers keeps every tag.
    pub retention: Vec<RetentionRule>,
    /// Percent of the time the collection's writing steps (removing blobs,
    /// rewriting packs, index shards and recipes) may work; it pauses for
    /// the rest, so that requests' own fsyncs do not queue behind
    /// thousands of its own (`bench/gc-scale.py`). 1 to 100.
    pub io_percent: u8,
}

impl Default for GarbageCollection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(3600),
            // Twice the default request timeout (30 min): a push whose
            // manifest comes last keeps its blobs.
            grace: Duration::from_secs(3600),
            delete_untagged: false,
            dry_run: false,
            retention: Vec::new(),
            // Half: a collection of a large store takes up to twice as
            // long, and requests during it meet a busy disk half as often.
            io_percent: 50,
        }
    }
}

/// One tag retention rule (`blockreg.gc.retention`; the WIT's
/// `retention-rule`): the tags it keeps in the repositories it covers; the
/// others are removed. A tag is kept when any criterion keeps it; a rule
/// with no tag criterion keeps every tag (it is then only about untagged
/// manifests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionRule {
    /// Glob patterns over repository names (`*` within a path component,
    /// `**` across them); checked by the guest.
    pub repositories: Vec<String>,
    /// Keep the `n` most recently pushed tags.
    pub keep_last: Option<u32>,
    /// Keep tags pushed within this long.
    pub keep_within: Option<Duration>,
    /// Keep tags matching any of these regular expressions (whole tag);
    /// checked by the guest.
    pub keep_tags: Vec<String>,
    /// Remove manifests no tag reaches once unused for this long (never
    /// sooner than the grace period), `delete_untagged` or not.
    pub delete_untagged_after: Option<Duration>,
}

impl RetentionRule {
    /// Whether the rule keeps no tag at all (it would empty the
    /// repositories it covers): refused when read.
    pub fn keeps_nothing(&self) -> bool {
        let tag_criteria =
            self.keep_last.is_some() || self.keep_within.is_some() || !self.keep_tags.is_empty();
        if !tag_criteria {
            return self.delete_untagged_after.is_none();
        }
        self.keep_last.unwrap_or(0) == 0
            && self.keep_within.is_none_or(|d| d.is_zero())
            && self.keep_tags.is_empty()
    }
}

/// Where the guest component comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GuestSource {
    /// The component built from `guest/` and compiled into this binary.
    #[default]
    Embedded,
    /// A component file; the server reloads it when it changes or on SIGHUP.
    File(PathBuf),
}

/// Resource limits applied to every guest instance, and to the clients
/// that hold one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of one instance, in bytes; a `memory.grow`
    /// beyond it fails inside the guest.
    pub max_memory_bytes: usize,
    /// Wall-clock budget of one request, from instantiation until the guest
    /// has written its whole response; the instance is dropped when it ends.
    pub request_timeout: Duration,
    /// Largest accepted request body; larger ones get a 413 from the host.
    pub max_body_bytes: u64,
    /// Guest instances alive at once; further requests wait for a slot.
    pub max_concurrency: usize,
    /// Of those, how many may serve writes (requests with a body, or `POST`,
    /// `PUT`, `PATCH`); the rest stay free for reads, so uploads cannot
    /// starve pulls. `None`: three quarters of `max_concurrency`. Clamped to
    /// `1..=max_concurrency` (see [`Limits::write_slots`]).
    pub max_write_concurrency: Option<usize>,
    /// Longest a request body may leave the guest waiting with no byte; the
    /// body then fails (the guest drops the partial chunk), the client gets
    /// 408 and the slot is freed. Time the guest spends away from the body
    /// does not count. Zero turns pacing off (and `min_body_rate` with it).
    pub body_idle_timeout: Duration,
    /// Slowest sustained body rate, in bytes per second (0: no minimum).
    /// Each byte earns `1 / min_body_rate` s of waiting, banked up to
    /// `body_idle_timeout`; a body whose bank runs dry fails as an idle one
    /// does. A trickle at half this rate is cut after about twice the idle
    /// timeout.
    pub min_body_rate: u64,
    /// Longest a client may take to send a request's head (and longest an
    /// idle keep-alive connection is kept); the connection is then closed.
    /// Zero: no limit.
    pub header_read_timeout: Duration,
    /// What one client (peer address) may do (`throttle.rs`).
    pub clients: ClientLimits,
}

/// Per-client limits; a client is its peer IP address. Breaking one is
/// answered 429 `TOOMANYREQUESTS` with `Retry-After`. Zero turns a limit off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Sustained requests per second. Off by default: clients behind one
    /// NAT or proxy share an address, and registry:2 has no such limit.
    pub request_rate: u32,
    /// Requests a client may send at once above the rate (0: equal to it).
    pub request_burst: u32,
    /// Writes (requests with a body, `POST`, `PUT`, `PATCH`) in flight.
    pub max_uploads: usize,
    /// Failed htpasswd logins per minute; a client over it is refused,
    /// even with the right password, until the minute is over.
    pub auth_failures_per_minute: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            request_rate: 0,
            request_burst: 0,
            // docker pushes up to 5 layers at once (--max-concurrent-uploads);
            // room for a dozen pushes from one CI host, and a quarter of the
            // default write slots, so one client cannot take them all.
            max_uploads: 48,
            // 20 guesses a minute per address: harmless for a mistyped
            // password, hopeless for a brute force.
            auth_failures_per_minute: 20,
        }
    }
}

impl Limits {
    /// Slots writes may hold at once; see [`Limits::max_write_concurrency`].
    pub fn write_slots(&self) -> usize {
        let total = self.max_concurrency.max(1);
        self.max_write_concurrency
            .unwrap_or(total * 3 / 4)
            .clamp(1, total)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 512 << 20,
            request_timeout: Duration::from_secs(1800),
            max_body_bytes: 16 << 30,
            max_concurrency: 256,
            max_write_concurrency: None,
            // nginx's client_body_timeout and registry:2 behind it.
            body_idle_timeout: Duration::from_secs(60),
            // Apache's mod_reqtimeout default (body MinRate=500) is of the
            // same order: far below any working link.
            min_body_rate: 1024,
            // hyper's default, stated so it is a documented limit.
            header_read_timeout: Duration::from_secs(30),
            clients: ClientLimits::default(),
        }
    }
}

/// Registry behaviour chosen by the operator. The guest sees no environment
/// and no arguments: these reach it, with the request timeout of
/// [`Limits`], as the typed record of `wit/settings.wit`. The defaults here
/// are the only ones (`blockreg serve`'s flags take theirs from them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuestSettings {
    /// Whether clients may delete manifests, tags and blobs; when off they
    /// get 405 `UNSUPPORTED`.
    pub delete_enabled: bool,
    /// Byte budget of the cache of recreated blobs (`data/cache/`).
    pub cache_bytes: u64,
    /// A gzip blob whose recreation data exceeds this share of its decoded
    /// size is stored as raw blocks instead. 0.15: streams of compressors
    /// preflate models need 0.01-1 %, those it predicts generically (Go >=
    /// 1.27, pgzip) 1-3 %, odd ones up to ~10 %, still well worth it for
    /// the blocks they share (0.15 of the plain text is about 35 % of the
    /// compressed size); the conversion's cost check still stores a blob as
    /// it came when its decoded form would cost more.
    pub max_correction_ratio: f64,
    /// A compressed blob decoding to more than this many bytes (or any blob
    /// larger than this) is stored as opaque blocks of its own bytes: the
    /// guest's conversion memory grows with the decoded size.
    pub max_decoded_bytes: u64,
    /// A compressed blob decoding to more than this multiple of its
    /// compressed size is stored as opaque blocks (a decompression bomb).
    pub max_decoded_ratio: f64,
    /// Whether an image manifest may reference non-distributable layers
    /// (descriptors with `urls`) whose blobs were never pushed here, as the
    /// OCI conformance suite expects; when off they must be pushed.
    pub accept_foreign_layers: bool,
}

impl Default for GuestSettings {
    fn default() -> Self {
        Self {
            delete_enabled: true,
            cache_bytes: 2 << 30,
            max_correction_ratio: 0.15,
            max_decoded_bytes: 4 << 30,
            max_decoded_ratio: 100.0,
            accept_foreign_layers: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_leave_a_quarter_of_the_slots_to_reads_by_default() {
        let limits = Limits::default();
        assert_eq!(limits.write_slots(), 192);
        let one = Limits {
            max_concurrency: 1,
            ..Limits::default()
        };
        assert_eq!(one.write_slots(), 1, "a single slot serves writes too");
        let capped = Limits {
            max_concurrency: 8,
            max_write_concurrency: Some(100),
            ..Limits::default()
        };
        assert_eq!(capped.write_slots(), 8);
        let none = Limits {
            max_write_concurrency: Some(0),
            ..Limits::default()
        };
        assert_eq!(none.write_slots(), 1, "writes always get a slot");
    }
}
