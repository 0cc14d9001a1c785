//! registry:2's `config.yml`, read into [`ServeOptions`].
//!
//! The file is parsed into a YAML tree, `REGISTRY_*` environment variables
//! are laid over it (registry:2's rule: `REGISTRY_` and the key's path,
//! upper-cased and joined by `_`; the value is YAML, so `true`, `5000` and
//! `{X-A: [b]}` are typed), and then each key is read into the options
//! that [`ServeOptions::default`] starts from. Command-line flags are laid
//! over the result by `main.rs`.
//!
//! Every key has one of four fates, and none is silent:
//! - applied (the keys registry:2 and blockreg share, `auth.htpasswd` and
//!   `auth.token` among them, and `blockreg:`);
//! - accepted with a note (keys that mean nothing here, such as
//!   `storage.cache` or `http.secret`);
//! - accepted with a warning (a feature blockreg lacks whose absence opens
//!   nothing: `notifications`, `log.hooks`, ...);
//! - refused with an error (a feature whose absence would change what the
//!   registry does or who may use it: `auth.silly`, `proxy`, another
//!   storage driver, read-only mode).
//!
//! Unknown keys get a warning; a value of the wrong kind stops the start
//! with an error naming the key (and the environment variable it came
//! from).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use yaml_rust2::{Yaml, YamlLoader};

use crate::config::{
    AccessRules, Actions, AuthMethod, DebugConfig, GuestSource, Policy, RepositoryRule,
    RetentionRule, ServeOptions, StorageCheck, TlsConfig, TlsVersion,
};

/// Options read from a config file (and the environment), with what the
/// reader has to say about them.
#[derive(Debug)]
pub struct Loaded {
    /// The options; flags still go on top.
    pub options: ServeOptions,
    /// Keys that were ignored or features that are missing: to log as
    /// warnings once logging is set up.
    pub warnings: Vec<String>,
    /// Keys accepted that need no action here: to log at info level.
    pub notes: Vec<String>,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("the config file {path} is not valid YAML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a value blockreg cannot use.
    #[error("config key {key}{source_note}: {message}")]
    Value {
        /// Dotted path of the key (`http.addr`).
        key: String,
        /// Where the value came from when not the file
        /// (` (from REGISTRY_HTTP_ADDR)`).
        source_note: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A key names a feature blockreg does not have, whose absence would
    /// change who may use the registry or what it does.
    #[error("config key {key}{source_note}: {message}")]
    Unsupported {
        /// Dotted path of the key.
        key: String,
        /// Where the value came from when not the file.
        source_note: String,
        /// What is missing and what to do.
        message: String,
    },
}

/// The keys blockreg reads, sections it recognises, and registry:2 keys it
/// answers: an environment variable may name any of them (and any key
/// present in the file).
const KNOWN_KEYS: &[&str] = &[
    "version",
    "loglevel",
    "log.level",
    "log.formatter",
    "log.fields",
    "log.hooks",
    "log.reportcaller",
    "log.accesslog.disabled",
    "storage.filesystem.rootdirectory",
    "storage.filesystem.maxthreads",
    "storage.delete.enabled",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.uploadpurging.dryrun",
    "storage.maintenance.readonly.enabled",
    "storage.cache.blobdescriptor",
    "storage.redirect.disable",
    "http.addr",
    "http.net",
    "http.prefix",
    "http.host",
    "http.secret",
    "http.relativeurls",
    "http.draintimeout",
    "http.headers",
    "http.http2.disabled",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.clientcas",
    "http.tls.minimumtls",
    "http.tls.ciphersuites",
    "http.tls.letsencrypt",
    "http.debug.addr",
    "http.debug.prometheus.enabled",
    "http.debug.prometheus.path",
    "health.storagedriver.enabled",
    "health.storagedriver.interval",
    "health.storagedriver.threshold",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "auth.token.realm",
    "auth.token.service",
    "auth.token.issuer",
    "auth.token.rootcertbundle",
    "auth.silly.realm",
    "auth.silly.service",
    "proxy.remoteurl",
    "proxy.username",
    "proxy.password",
    "blockreg.cache_mib",
    "blockreg.max_correction_ratio",
    "blockreg.max_decoded_mib",
    "blockreg.max_decoded_ratio",
    "blockreg.conversion",
    "blockreg.refuse_foreign_layers",
    "blockreg.guest",
    "blockreg.max_memory_mib",
    "blockreg.request_timeout_secs",
    "blockreg.max_body_bytes",
    "blockreg.max_concurrency",
    "blockreg.max_write_concurrency",
    "blockreg.body_idle_timeout_secs",
    "blockreg.min_body_rate",
    "blockreg.header_read_timeout_secs",
    "blockreg.client_request_rate",
    "blockreg.client_request_burst",
    "blockreg.client_max_uploads",
    "blockreg.auth_failures_per_minute",
    "blockreg.access",
    "blockreg.gc.enabled",
    "blockreg.gc.interval",
    "blockreg.gc.grace",
    "blockreg.gc.delete_untagged",
    "blockreg.gc.dry_run",
    "blockreg.gc.io_percent",
    "blockreg.gc.retention",
];

/// Reads `path` (when given) and the `REGISTRY_*` variables of `env` into
/// options, starting from [`ServeOptions::default`].
///
/// # Errors
///
/// When the file cannot be read or parsed, a value is wrong, or a section
/// asks for a feature that must not be left out (see the module docs).
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let (text, path) = match path {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            Some(path),
        ),
        None => (String::new(), None),
    };
    let root = match YamlLoader::load_from_str(&text) {
        Ok(mut docs) if !docs.is_empty() => docs.swap_remove(0),
        Ok(_) => Yaml::Hash(Default::default()),
        Err(e) => {
            return Err(ConfigError::Syntax {
                path: path.unwrap_or(Path::new("-")).to_owned(),
                message: e.to_string(),
            })
        }
    };
    let root = match root {
        Yaml::Hash(_) => root,
        Yaml::Null => Yaml::Hash(Default::default()),
        _ => {
            return Err(ConfigError::Value {
                key: "(top level)".to_owned(),
                source_note: String::new(),
                message: "expected a mapping of keys".to_owned(),
            })
        }
    };
    let mut doc = Doc {
        root,
        used: HashSet::new(),
        from_env: HashMap::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    doc.apply_env(env);
    let options = doc.interpret(path.is_some())?;
    doc.warn_unknown();
    Ok(Loaded {
        options,
        warnings: doc.warnings,
        notes: doc.notes,
    })
}

/// The YAML tree being read, and what has been read of it.
struct Doc {
    root: Yaml,
    /// Paths read (a path covers everything below it).
    used: HashSet<String>,
    /// Paths set by an environment variable, and its name.
    from_env: HashMap<String, String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

fn key(part: &str) -> Yaml {
    Yaml::String(part.to_owned())
}

fn env_name(path: &str) -> String {
    format!("REGISTRY_{}", path.replace('.', "_").to_ascii_uppercase())
}

impl Doc {
    // ---- the tree ----------------------------------------------------

    fn lookup(&self, path: &str) -> Option<&Yaml> {
        let mut node = &self.root;
        for part in path.split('.') {
            let Yaml::Hash(map) = node else { return None };
            node = map.get(&key(part))?;
        }
        Some(node)
    }

    /// Every path in the tree, sections included.
    fn paths(&self) -> Vec<String> {
        fn walk(node: &Yaml, prefix: &str, out: &mut Vec<String>) {
            if let Yaml::Hash(map) = node {
                for (k, v) in map {
                    let name = yaml_text(k).unwrap_or_else(|| format!("{k:?}"));
                    let path = if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}.{name}")
                    };
                    out.push(path.clone());
                    walk(v, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, "", &mut out);
        out
    }

    fn set(&mut self, path: &str, value: Yaml) {
        let mut node = &mut self.root;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if !matches!(node, Yaml::Hash(_)) {
                *node = Yaml::Hash(Default::default());
            }
            let Yaml::Hash(map) = node else {
                unreachable!("made a mapping above")
            };
            if i + 1 == parts.len() {
                map.insert(key(part), value);
                return;
            }
            node = map.entry(key(part)).or_insert(Yaml::Null);
        }
    }

    /// Lays `REGISTRY_*` variables over the tree.
    fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        let mut candidates: Vec<String> = KNOWN_KEYS.iter().map(|k| (*k).to_owned()).collect();
        candidates.extend(self.paths());
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with("REGISTRY_"))
            .collect();
        vars.sort();
        for (name, value) in vars {
            let Some(path) = candidates.iter().find(|p| env_name(p) == name).cloned() else {
                self.warnings.push(format!(
                    "environment variable {name} names no configuration key blockreg knows; ignored"
                ));
                continue;
            };
            // As registry:2 does: the value is YAML, typed like the file's.
            let parsed = YamlLoader::load_from_str(&value)
                .ok()
                .and_then(|mut docs| (!docs.is_empty()).then(|| docs.swap_remove(0)))
                .unwrap_or(Yaml::String(value));
            self.set(&path, parsed);
            self.from_env.insert(path, name);
        }
    }

    /// Keys never read: one warning each (the highest unknown section).
    fn warn_unknown(&mut self) {
        let mut reported: Vec<String> = Vec::new();
        for path in self.paths() {
            let covered = self.is_used(&path)
                || self.used.iter().any(|u| u.starts_with(&format!("{path}.")))
                || reported.iter().any(|r| path.starts_with(&format!("{r}.")));
            if !covered {
                self.warnings
                    .push(format!("unknown config key {path}; ignored"));
                reported.push(path);
            }
        }
    }

    fn is_used(&self, path: &str) -> bool {
        let mut prefix = String::new();
        for part in path.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
            if self.used.contains(&prefix) {
                return true;
            }
        }
        false
    }

    // ---- reading values ----------------------------------------------

    fn source_note(&self, path: &str) -> String {
        self.from_env
            .iter()
            .find(|(p, _)| path == p.as_str() || path.starts_with(&format!("{p}.")))
            .map(|(_, name)| format!(" (from {name})"))
            .unwrap_or_default()
    }

    fn wrong(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            key: path.to_owned(),
            source_note: self.source_note(path),
            message: message.into(),
        }
    }

    fn unsupported(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Unsupported {
            key: path.to_owned(),
            source_note: self.source_note(path),
            message: message.into(),
        }
    }

    /// The value at `path`, marking it read; `None` when absent or null.
    fn take(&mut self, path: &str) -> Option<Yaml> {
        self.used.insert(path.to_owned());
        match self.lookup(path) {
            None | Some(Yaml::Null) => None,
            Some(value) => Some(value.clone()),
        }
    }

    /// Whether `path` holds anything but null or an empty mapping.
    fn present(&self, path: &str) -> bool {
        match self.lookup(path) {
            None | Some(Yaml::Null) => false,
            Some(Yaml::Hash(map)) => !map.is_empty(),
            Some(_) => true,
        }
    }

    /// The keys of the section at `path` (a mapping, or absent).
    fn section_keys(&self, path: &str) -> Result<Vec<String>, ConfigError> {
        match self.lookup(path) {
            None | Some(Yaml::Null) => Ok(Vec::new()),
            Some(Yaml::Hash(map)) => Ok(map.keys().filter_map(yaml_text).collect()),
            Some(other) => Err(self.wrong(
                path,
                format!("expected a mapping of keys, found {}", describe(other)),
            )),
        }
    }

    fn string(&mut self, path: &str) -> Result<Option<String>, ConfigError> {
        match self.take(path) {
            None => Ok(None),
            Some(value) => match yaml_text(&value) {
                Some(text) => Ok(Some(text)),
                None => Err(self.wrong(
                    path,
                    format!("expected a string, found {}", describe(&value)),
                )),
            },
        }
    }

    fn boolean(&mut self, path: &str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.take(path) else {
            return Ok(None);
        };
        // YAML 1.1's words too, as registry:2's parser (yaml.v2) reads them.
        let parsed = match &value {
            Yaml::Boolean(b) => Some(*b),
            Yaml::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => Some(true),
                "false" | "no" | "off" | "n" => Some(false),
                _ => None,
            },
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.wrong(
                path,
                format!("expected true or false, found {}", describe(&value)),
            )
        })
    }

    fn uint(&mut self, path: &str) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.take(path) else {
            return Ok(None);
        };
        let parsed = match &value {
            Yaml::Integer(i) => u64::try_from(*i).ok(),
            Yaml::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.wrong(
                path,
                format!(
                    "expected a whole number of 0 or more, found {}",
                    describe(&value)
                ),
            )
        })
    }

    /// A whole number of MiB, as bytes.
    fn mib(&mut self, path: &str) -> Result<Option<u64>, ConfigError> {
        match self.uint(path)? {
            None => Ok(None),
            Some(mib) if mib <= u64::MAX >> 20 => Ok(Some(mib << 20)),
            Some(mib) => {
                Err(self.wrong(path, format!("{mib} MiB is more bytes than fit in 64 bits")))
            }
        }
    }

    fn ratio(&mut self, path: &str) -> Result<Option<f64>, ConfigError> {
        let Some(value) = self.take(path) else {
            return Ok(None);
        };
        let parsed = match &value {
            Yaml::Integer(i) => Some(*i as f64),
            Yaml::Real(s) | Yaml::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            _ => Err(self.wrong(
                path,
                format!("expected a number of 0 or more, found {}", describe(&value)),
            )),
        }
    }

    fn duration(&mut self, path: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.take(path) else {
            return Ok(None);
        };
        let parsed = match &value {
            Yaml::Integer(0) => Some(Duration::ZERO),
            Yaml::String(s) => parse_go_duration(s),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.wrong(
                path,
                format!(
                    "expected a duration such as 10s, 5m or 168h, found {}",
                    describe(&value)
                ),
            )
        })
    }

    /// A list of strings (a single string counts as a list of one).
    fn strings(&mut self, path: &str) -> Result<Vec<String>, ConfigError> {
        let Some(value) = self.take(path) else {
            return Ok(Vec::new());
        };
        let items = match &value {
            Yaml::Array(items) => items.iter().map(yaml_text).collect::<Option<Vec<_>>>(),
            other => yaml_text(other).map(|s| vec![s]),
        };
        items.ok_or_else(|| {
            self.wrong(
                path,
                format!("expected a list of strings, found {}", describe(&value)),
            )
        })
    }

    // ---- the keys ----------------------------------------------------

    fn interpret(&mut self, from_file: bool) -> Result<ServeOptions, ConfigError> {
        let mut options = ServeOptions::default();
        self.refuse_missing_features()?;
        self.version(from_file)?;
        self.log(&mut options)?;
        self.storage(&mut options, from_file)?;
        self.http(&mut options)?;
        self.auth(&mut options)?;
        self.health(&mut options)?;
        self.blockreg(&mut options)?;
        for (section, what) in [
            ("notifications", "notifications are not supported yet: no events are sent"),
            ("redis", "redis is not used by blockreg; ignored"),
            ("reporting", "error reporting (bugsnag, newrelic) is not supported; ignored"),
            ("validation", "manifest validation settings are not supported; blockreg validates manifests its own way (see --refuse-foreign-layers)"),
            ("compatibility", "compatibility settings are not supported; ignored"),
            ("middleware", "middleware is not supported: blockreg serves every blob itself"),
        ] {
            if self.present(section) {
                self.warnings.push(format!("config key {section}: {what}"));
            }
            self.used.insert(section.to_owned());
        }
        Ok(options)
    }

    /// Sections whose absence would make the registry something else than
    /// asked.
    fn refuse_missing_features(&mut self) -> Result<(), ConfigError> {
        self.used.insert("proxy".to_owned());
        if self.present("proxy") {
            return Err(self.unsupported(
                "proxy",
                "pull-through caching (proxy) is not supported yet; remove the proxy section \
                 to run a registry that stores what is pushed to it",
            ));
        }
        Ok(())
    }

    fn version(&mut self, from_file: bool) -> Result<(), ConfigError> {
        match self.take("version") {
            None if from_file => self
                .warnings
                .push("config key version is missing; reading the file as version 0.1".to_owned()),
            None => {}
            Some(value) => {
                let text = yaml_text(&value).unwrap_or_default();
                if text != "0.1" {
                    return Err(self.wrong(
                        "version",
                        format!(
                            "only version 0.1 (registry:2's format) is read, found {}",
                            describe(&value)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn log(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        self.section_keys("log")?;
        let level = match self.string("log.level")? {
            Some(level) => Some(("log.level", level)),
            None => self.string("loglevel")?.map(|level| ("loglevel", level)),
        };
        if let Some((path, level)) = level {
            options.log.level = match level.to_ascii_lowercase().as_str() {
                "panic" | "fatal" | "error" => "error",
                "warn" | "warning" => "warn",
                "info" => "info",
                "debug" => "debug",
                "trace" => "trace",
                _ => {
                    return Err(self.wrong(
                        path,
                        format!("expected error, warn, info, debug or trace, found {level:?}"),
                    ))
                }
            }
            .to_owned();
        }
        match self.string("log.formatter")?.as_deref() {
            None | Some("text") => {}
            Some("json") => options.log.json = true,
            Some("logstash") => {
                options.log.json = true;
                self.warnings
                    .push("config key log.formatter: logstash is written as plain json".to_owned());
            }
            Some(other) => {
                return Err(self.wrong(
                    "log.formatter",
                    format!("expected text, json or logstash, found {other:?}"),
                ))
            }
        }
        if let Some(disabled) = self.boolean("log.accesslog.disabled")? {
            options.log.access_log = !disabled;
        }
        for (path, what) in [
            (
                "log.fields",
                "extra log fields are not supported yet; ignored",
            ),
            ("log.hooks", "log hooks (mail) are not supported; ignored"),
            ("log.reportcaller", "not supported; ignored"),
        ] {
            if self.present(path) {
                self.warnings.push(format!("config key {path}: {what}"));
            }
            self.used.insert(path.to_owned());
        }
        Ok(())
    }

    fn storage(&mut self, options: &mut ServeOptions, from_file: bool) -> Result<(), ConfigError> {
        const NOT_DRIVERS: [&str; 6] = [
            "filesystem",
            "delete",
            "maintenance",
            "cache",
            "redirect",
            "tag",
        ];
        for name in self.section_keys("storage")? {
            if !NOT_DRIVERS.contains(&name.as_str()) {
                let path = format!("storage.{name}");
                return Err(self.unsupported(
                    &path,
                    format!(
                        "the {name} storage driver is not supported yet: blockreg stores on the \
                         local filesystem (storage.filesystem.rootdirectory)"
                    ),
                ));
            }
        }
        if let Some(root) = self.string("storage.filesystem.rootdirectory")? {
            options.serve.data_dir = PathBuf::from(root);
        }
        if self.uint("storage.filesystem.maxthreads")?.is_some() {
            self.notes.push(
                "config key storage.filesystem.maxthreads: not needed by blockreg; ignored"
                    .to_owned(),
            );
        }
        match self.boolean("storage.delete.enabled")? {
            Some(enabled) => options.serve.settings.delete_enabled = enabled,
            // registry:2 refuses deletes unless told otherwise; a file
            // written for it keeps that meaning here.
            None if from_file => {
                options.serve.settings.delete_enabled = false;
                self.notes.push(
                    "storage.delete.enabled is not set: deletion is off, as in registry:2"
                        .to_owned(),
                );
            }
            None => {}
        }
        let purging = &mut options.serve.upload_purging;
        let base = "storage.maintenance.uploadpurging";
        if let Some(enabled) = self.boolean(&format!("{base}.enabled"))? {
            purging.enabled = enabled;
        }
        if let Some(age) = self.duration(&format!("{base}.age"))? {
            purging.age = age;
        }
        if let Some(interval) = self.duration(&format!("{base}.interval"))? {
            purging.interval = interval;
        }
        if let Some(dry_run) = self.boolean(&format!("{base}.dryrun"))? {
            purging.dry_run = dry_run;
        }
        if self.boolean("storage.maintenance.readonly.enabled")? == Some(true) {
            return Err(self.unsupported(
                "storage.maintenance.readonly.enabled",
                "read-only mode is not supported yet",
            ));
        }
        self.used.insert("storage.maintenance.readonly".to_owned());
        for (path, what) in [
            (
                "storage.cache",
                "blockreg keeps no blob descriptor cache; ignored",
            ),
            (
                "storage.redirect",
                "blockreg serves blobs itself, never by redirect; ignored",
            ),
            ("storage.tag", "not needed by blockreg; ignored"),
        ] {
            if self.present(path) {
                self.notes.push(format!("config key {path}: {what}"));
            }
            self.used.insert(path.to_owned());
        }
        Ok(())
    }

    fn http(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        self.section_keys("http")?;
        if let Some(addr) = self.string("http.addr")? {
            options.addr = parse_listen_addr(&addr).map_err(|m| self.wrong("http.addr", m))?;
        }
        match self.string("http.net")?.as_deref() {
            None | Some("tcp") | Some("") => {}
            Some("unix") => {
                return Err(
                    self.unsupported("http.net", "unix sockets are not supported yet; use tcp")
                )
            }
            Some(other) => {
                return Err(self.wrong("http.net", format!("expected tcp, found {other:?}")))
            }
        }
        if let Some(prefix) = self.string("http.prefix")? {
            if !prefix.is_empty() && prefix != "/" {
                return Err(self.unsupported(
                    "http.prefix",
                    "a path prefix is not supported yet: blockreg serves /v2/ at the root",
                ));
            }
        }
        if let Some(host) = self.string("http.host")? {
            let rest = host
                .strip_prefix("https://")
                .or_else(|| host.strip_prefix("http://"));
            if rest.is_none_or(|rest| rest.is_empty()) {
                return Err(self.wrong(
                    "http.host",
                    format!("expected a URL such as https://registry.example.com, found {host:?}"),
                ));
            }
            self.notes.push(
                "config key http.host: blockreg's Location headers are relative; not needed"
                    .to_owned(),
            );
        }
        if self.string("http.secret")?.is_some() {
            self.notes.push(
                "config key http.secret: not needed (upload sessions are kept on the server); ignored"
                    .to_owned(),
            );
        }
        if self.boolean("http.relativeurls")?.is_some() {
            self.notes.push(
                "config key http.relativeurls: blockreg's Location headers are always relative"
                    .to_owned(),
            );
        }
        if self.duration("http.draintimeout")?.is_some() {
            self.warnings.push(
                "config key http.draintimeout: not used; on shutdown requests in flight get \
                 blockreg.request_timeout_secs"
                    .to_owned(),
            );
        }
        self.headers(options)?;
        if let Some(disabled) = self.boolean("http.http2.disabled")? {
            options.serve.http2 = !disabled;
        }
        self.tls(options)?;
        self.debug(options)
    }

    fn headers(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        for name in self.section_keys("http.headers")? {
            let path = format!("http.headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.wrong(&path, "not a valid header name"))?;
            for value in self.strings(&path)? {
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    self.wrong(&path, format!("{value:?} is not a valid header value"))
                })?;
                options.serve.headers.push((header.clone(), value));
            }
        }
        self.used.insert("http.headers".to_owned());
        Ok(())
    }

    fn tls(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        self.section_keys("http.tls")?;
        if self.present("http.tls.letsencrypt") {
            return Err(self.unsupported(
                "http.tls.letsencrypt",
                "Let's Encrypt is not supported; give http.tls.certificate and http.tls.key",
            ));
        }
        self.used.insert("http.tls.letsencrypt".to_owned());
        let certificate = self.string("http.tls.certificate")?;
        let key = self.string("http.tls.key")?;
        let client_cas = self.strings("http.tls.clientcas")?;
        let minimum = match self.string("http.tls.minimumtls")?.as_deref() {
            None | Some("tls1.2") => TlsVersion::Tls12,
            Some("tls1.3") => TlsVersion::Tls13,
            Some(old @ ("tls1.0" | "tls1.1")) => {
                self.warnings.push(format!(
                    "config key http.tls.minimumtls: {old} is not offered (rustls speaks TLS 1.2 and 1.3); the minimum is tls1.2"
                ));
                TlsVersion::Tls12
            }
            Some(other) => {
                return Err(self.wrong(
                    "http.tls.minimumtls",
                    format!("expected tls1.2 or tls1.3, found {other:?}"),
                ))
            }
        };
        if !self.strings("http.tls.ciphersuites")?.is_empty() {
            self.warnings.push(
                "config key http.tls.ciphersuites: not supported; rustls's default suites are used"
                    .to_owned(),
            );
        }
        match (certificate, key) {
            (Some(certificate), Some(key)) => {
                options.serve.tls = Some(TlsConfig {
                    certificate: certificate.into(),
                    key: key.into(),
                    client_cas: client_cas.into_iter().map(PathBuf::from).collect(),
                    minimum,
                });
            }
            (None, None) if client_cas.is_empty() => {}
            (None, None) => {
                return Err(self.wrong(
                    "http.tls.clientcas",
                    "client certificates need TLS: set http.tls.certificate and http.tls.key",
                ))
            }
            (Some(_), None) => {
                return Err(self.wrong(
                    "http.tls.key",
                    "missing: http.tls.certificate needs its key",
                ))
            }
            (None, Some(_)) => {
                return Err(self.wrong(
                    "http.tls.certificate",
                    "missing: http.tls.key needs its certificate",
                ))
            }
        }
        Ok(())
    }

    fn debug(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        self.section_keys("http.debug")?;
        let addr = match self.string("http.debug.addr")? {
            Some(addr) => {
                Some(parse_listen_addr(&addr).map_err(|m| self.wrong("http.debug.addr", m))?)
            }
            None => None,
        };
        let enabled = self
            .boolean("http.debug.prometheus.enabled")?
            .unwrap_or(false);
        let path = self.string("http.debug.prometheus.path")?;
        if let Some(path) = &path {
            if !path.starts_with('/') {
                return Err(self.wrong(
                    "http.debug.prometheus.path",
                    format!("expected a path starting with /, found {path:?}"),
                ));
            }
        }
        let prometheus_path = enabled.then(|| path.unwrap_or_else(|| "/metrics".to_owned()));
        match addr {
            Some(addr) => {
                options.serve.debug = Some(DebugConfig {
                    addr,
                    prometheus_path,
                })
            }
            None if enabled => {
                return Err(self.wrong(
                    "http.debug.prometheus.enabled",
                    "metrics are served on the debug server: set http.debug.addr too",
                ))
            }
            None => {}
        }
        Ok(())
    }

    /// `auth:`: one of htpasswd and token. Any other method is refused: a
    /// registry started without the authentication its file asks for would
    /// be open to anyone.
    fn auth(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        let methods: Vec<String> = self
            .section_keys("auth")?
            .into_iter()
            .filter(|m| self.present(&format!("auth.{m}")))
            .collect();
        self.used.insert("auth".to_owned());
        if methods.len() > 1 {
            return Err(self.wrong(
                "auth",
                format!(
                    "only one authentication method may be configured, found {}",
                    methods.join(", ")
                ),
            ));
        }
        let Some(method) = methods.first() else {
            return Ok(());
        };
        let required = |doc: &mut Self, key: &str| -> Result<String, ConfigError> {
            let path = format!("auth.{method}.{key}");
            match doc.string(&path)? {
                Some(value) if !value.is_empty() => Ok(value),
                _ => Err(doc.wrong(&path, format!("missing: required by auth.{method}"))),
            }
        };
        options.serve.auth.method = Some(match method.as_str() {
            "htpasswd" => {
                let realm = required(self, "realm")?;
                let path = required(self, "path")?;
                AuthMethod::Htpasswd {
                    realm,
                    path: path.into(),
                }
            }
            "token" => {
                let realm = required(self, "realm")?;
                let service = required(self, "service")?;
                let issuer = required(self, "issuer")?;
                let bundle = required(self, "rootcertbundle")?;
                for key in ["autoredirect", "jwks", "signingalgorithms"] {
                    let path = format!("auth.token.{key}");
                    if self.present(&path) {
                        self.warnings.push(format!(
                            "config key {path}: not supported; tokens are verified against \
                             auth.token.rootcertbundle with RS256/384/512 or ES256/384"
                        ));
                    }
                    self.used.insert(path);
                }
                AuthMethod::Token {
                    realm,
                    service,
                    issuer,
                    root_cert_bundle: bundle.into(),
                }
            }
            other => {
                let key = format!("auth.{other}");
                return Err(self.unsupported(
                    &key,
                    format!(
                        "{key} is not supported: use auth.htpasswd or auth.token, or remove the \
                         auth section to run without authentication (on a trusted network only)"
                    ),
                ));
            }
        });
        Ok(())
    }

    /// `blockreg.access`: per-repository rules (zot's model; README).
    /// Patterns may hold dots, so the section is read as one tree rather
    /// than by dotted key paths.
    fn access(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        const BASE: &str = "blockreg.access";
        let Some(section) = self.take(BASE) else {
            return Ok(());
        };
        let Yaml::Hash(section) = section else {
            return Err(self.wrong(
                BASE,
                format!("expected a mapping, found {}", describe(&section)),
            ));
        };
        let mut rules = AccessRules::default();
        for (k, value) in &section {
            let name = yaml_text(k).unwrap_or_default();
            let path = format!("{BASE}.{name}");
            match name.as_str() {
                "admins" => rules.admins = self.yaml_strings(&path, value)?,
                "groups" => {
                    let Yaml::Hash(groups) = value else {
                        return Err(self.wrong(&path, "expected a mapping of group name to users"));
                    };
                    for (group, members) in groups {
                        let group = yaml_text(group).unwrap_or_default();
                        let members = self.yaml_strings(&format!("{path}.{group}"), members)?;
                        rules.groups.insert(group, members);
                    }
                }
                "repositories" => {
                    let Yaml::Hash(patterns) = value else {
                        return Err(self.wrong(&path, "expected a mapping of pattern to rules"));
                    };
                    for (pattern, rule) in patterns {
                        let pattern = yaml_text(pattern).unwrap_or_default();
                        rules.repositories.push(self.repository_rule(
                            &format!("{path}.{pattern}"),
                            pattern,
                            rule,
                        )?);
                    }
                }
                _ => self
                    .warnings
                    .push(format!("unknown config key {path}; ignored")),
            }
        }
        for policy_groups in rules
            .repositories
            .iter()
            .flat_map(|r| r.policies.iter().flat_map(|p| p.groups.iter()))
        {
            if !rules.groups.contains_key(policy_groups) {
                return Err(self.wrong(
                    &format!("{BASE}.repositories"),
                    format!("group {policy_groups:?} is not defined in {BASE}.groups"),
                ));
            }
        }
        options.serve.auth.rules = Some(rules);
        Ok(())
    }

    fn repository_rule(
        &self,
        path: &str,
        pattern: String,
        value: &Yaml,
    ) -> Result<RepositoryRule, ConfigError> {
        let Yaml::Hash(map) = value else {
            return Err(self.wrong(path, "expected policies, default and anonymous"));
        };
        let mut rule = RepositoryRule {
            pattern,
            ..RepositoryRule::default()
        };
        for (k, v) in map {
            let name = yaml_text(k).unwrap_or_default();
            let here = format!("{path}.{name}");
            match name.as_str() {
                "default" => rule.default = self.yaml_actions(&here, v)?,
                "anonymous" => rule.anonymous = self.yaml_actions(&here, v)?,
                "policies" => {
                    let Yaml::Array(policies) = v else {
                        return Err(
                            self.wrong(&here, "expected a list of {users, groups, actions}")
                        );
                    };
                    for (i, policy) in policies.iter().enumerate() {
                        let here = format!("{here}[{i}]");
                        let Yaml::Hash(fields) = policy else {
                            return Err(self.wrong(&here, "expected users, groups and actions"));
                        };
                        let mut parsed = Policy::default();
                        for (k, v) in fields {
                            let field = yaml_text(k).unwrap_or_default();
                            let there = format!("{here}.{field}");
                            match field.as_str() {
                                "users" => parsed.users = self.yaml_strings(&there, v)?,
                                "groups" => parsed.groups = self.yaml_strings(&there, v)?,
                                "actions" => parsed.actions = self.yaml_actions(&there, v)?,
                                _ => {
                                    return Err(self.wrong(
                                        &there,
                                        "unknown key; expected users, groups or actions",
                                    ))
                                }
                            }
                        }
                        rule.policies.push(parsed);
                    }
                }
                _ => {
                    return Err(self.wrong(
                        &here,
                        "unknown key; expected policies, default or anonymous",
                    ))
                }
            }
        }
        Ok(rule)
    }

    /// `blockreg.gc`: garbage collection (`host/src/gc.rs`). What the host
    /// can check is checked here (durations, numbers, the shape of the
    /// rules); the guest checks the globs and regular expressions when it
    /// collects. The grace period against the request timeout is checked
    /// by `serve`, after the flags.
    fn gc(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        const BASE: &str = "blockreg.gc";
        self.section_keys(BASE)?;
        let gc = &mut options.serve.gc;
        if let Some(enabled) = self.boolean("blockreg.gc.enabled")? {
            gc.enabled = enabled;
        }
        if let Some(interval) = self.duration("blockreg.gc.interval")? {
            if interval.is_zero() {
                return Err(self.wrong(
                    "blockreg.gc.interval",
                    "must be more than 0s (blockreg.gc.enabled: false turns collection off)",
                ));
            }
            gc.interval = interval;
        }
        if let Some(grace) = self.duration("blockreg.gc.grace")? {
            gc.grace = grace;
        }
        if let Some(delete) = self.boolean("blockreg.gc.delete_untagged")? {
            gc.delete_untagged = delete;
        }
        if let Some(dry_run) = self.boolean("blockreg.gc.dry_run")? {
            gc.dry_run = dry_run;
        }
        if let Some(percent) = self.uint("blockreg.gc.io_percent")? {
            gc.io_percent = match u8::try_from(percent) {
                Ok(p @ 1..=100) => p,
                _ => {
                    return Err(self.wrong(
                        "blockreg.gc.io_percent",
                        format!("{percent}: expected a percentage from 1 to 100"),
                    ))
                }
            };
        }
        let path = "blockreg.gc.retention";
        let rules = match self.take(path) {
            None => Vec::new(),
            Some(Yaml::Array(items)) => items,
            Some(other) => {
                return Err(self.wrong(
                    path,
                    format!(
                        "expected a list of rules (repositories, keep_last, keep_within, \
                         keep_tags), found {}",
                        describe(&other)
                    ),
                ))
            }
        };
        let mut retention = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            retention.push(self.retention_rule(&format!("{path}[{i}]"), rule)?);
        }
        options.serve.gc.retention = retention;
        Ok(())
    }

    fn retention_rule(&self, path: &str, value: &Yaml) -> Result<RetentionRule, ConfigError> {
        let Yaml::Hash(map) = value else {
            return Err(self.wrong(
                path,
                format!(
                    "expected a mapping of repositories, keep_last, keep_within, keep_tags and \
                     delete_untagged_after, found {}",
                    describe(value)
                ),
            ));
        };
        let mut rule = RetentionRule::default();
        for (k, v) in map {
            let name = yaml_text(k).unwrap_or_default();
            let here = format!("{path}.{name}");
            match name.as_str() {
                "repositories" => rule.repositories = self.yaml_strings(&here, v)?,
                "keep_tags" => rule.keep_tags = self.yaml_strings(&here, v)?,
                "keep_last" => {
                    let n = match v {
                        Yaml::Integer(i) => u32::try_from(*i).ok(),
                        Yaml::String(s) => s.trim().parse().ok(),
                        _ => None,
                    };
                    rule.keep_last = Some(n.ok_or_else(|| {
                        self.wrong(
                            &here,
                            format!("expected a whole number of tags, found {}", describe(v)),
                        )
                    })?);
                }
                "keep_within" | "delete_untagged_after" => {
                    let d = match v {
                        Yaml::Integer(0) => Some(Duration::ZERO),
                        Yaml::String(s) => parse_go_duration(s),
                        _ => None,
                    };
                    let d = Some(d.ok_or_else(|| {
                        self.wrong(
                            &here,
                            format!(
                                "expected a duration such as 72h or 720h, found {}",
                                describe(v)
                            ),
                        )
                    })?);
                    if name == "keep_within" {
                        rule.keep_within = d;
                    } else {
                        rule.delete_untagged_after = d;
                    }
                }
                _ => {
                    return Err(self.wrong(
                        &here,
                        "unknown key; expected repositories, keep_last, keep_within, keep_tags \
                         or delete_untagged_after",
                    ))
                }
            }
        }
        if rule.repositories.is_empty() {
            return Err(self.wrong(
                path,
                "repositories is missing: name the repositories the rule covers (globs such as \
                 ci/** or team-*/app)",
            ));
        }
        if rule.keeps_nothing() {
            return Err(self.wrong(
                path,
                "the rule keeps no tag and would empty every repository it covers (or does \
                 nothing): set keep_last, keep_within or keep_tags, or delete_untagged_after \
                 alone",
            ));
        }
        Ok(rule)
    }

    /// A list of strings at `path` inside a tree already taken.
    fn yaml_strings(&self, path: &str, value: &Yaml) -> Result<Vec<String>, ConfigError> {
        let items = match value {
            Yaml::Array(items) => items.iter().map(yaml_text).collect::<Option<Vec<_>>>(),
            Yaml::Null => Some(Vec::new()),
            other => yaml_text(other).map(|s| vec![s]),
        };
        items.ok_or_else(|| {
            self.wrong(
                path,
                format!("expected a list of strings, found {}", describe(value)),
            )
        })
    }

    fn yaml_actions(&self, path: &str, value: &Yaml) -> Result<Actions, ConfigError> {
        let names = self.yaml_strings(path, value)?;
        Actions::parse(names.iter().map(String::as_str)).map_err(|m| self.wrong(path, m))
    }

    fn health(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        self.section_keys("health")?;
        let base = "health.storagedriver";
        let enabled = self.boolean(&format!("{base}.enabled"))?.unwrap_or(false);
        let mut check = StorageCheck::default();
        if let Some(interval) = self.duration(&format!("{base}.interval"))? {
            if interval.is_zero() {
                return Err(self.wrong(&format!("{base}.interval"), "must be more than 0s"));
            }
            check.interval = interval;
        }
        if let Some(threshold) = self.uint(&format!("{base}.threshold"))? {
            // registry:2 reads 0 as "the first failure counts".
            check.threshold = u32::try_from(threshold.max(1))
                .map_err(|_| self.wrong(&format!("{base}.threshold"), "too large"))?;
        }
        if enabled {
            options.serve.health.storage = Some(check);
        }
        for path in ["health.file", "health.http", "health.tcp"] {
            if self.present(path) {
                self.warnings.push(format!(
                    "config key {path}: only health.storagedriver is supported; ignored"
                ));
            }
            self.used.insert(path.to_owned());
        }
        Ok(())
    }

    /// `blockreg:`, what registry:2 lacks: one key per `serve` flag, named
    /// as the flag with `_` for `-`.
    fn blockreg(&mut self, options: &mut ServeOptions) -> Result<(), ConfigError> {
        self.section_keys("blockreg")?;
        let serve = &mut options.serve;
        let settings = &mut serve.settings;
        if let Some(bytes) = self.mib("blockreg.cache_mib")? {
            settings.cache_bytes = bytes;
        }
        if let Some(ratio) = self.ratio("blockreg.max_correction_ratio")? {
            settings.max_correction_ratio = ratio;
        }
        if let Some(bytes) = self.mib("blockreg.max_decoded_mib")? {
            settings.max_decoded_bytes = bytes;
        }
        if let Some(ratio) = self.ratio("blockreg.max_decoded_ratio")? {
            settings.max_decoded_ratio = ratio;
        }
        if let Some(refuse) = self.boolean("blockreg.refuse_foreign_layers")? {
            settings.accept_foreign_layers = !refuse;
        }
        if let Some(conversion) = self.boolean("blockreg.conversion")? {
            serve.background_conversion = conversion;
        }
        if let Some(guest) = self.string("blockreg.guest")? {
            serve.guest = GuestSource::File(guest.into());
        }
        let limits = &mut serve.limits;
        if let Some(bytes) = self.mib("blockreg.max_memory_mib")? {
            limits.max_memory_bytes = usize::try_from(bytes)
                .map_err(|_| self.wrong("blockreg.max_memory_mib", "too large"))?;
        }
        if let Some(secs) = self.uint("blockreg.request_timeout_secs")? {
            limits.request_timeout = Duration::from_secs(secs);
        }
        if let Some(bytes) = self.uint("blockreg.max_body_bytes")? {
            limits.max_body_bytes = bytes;
        }
        if let Some(n) = self.uint("blockreg.max_concurrency")? {
            if n == 0 {
                return Err(self.wrong("blockreg.max_concurrency", "must be at least 1"));
            }
            limits.max_concurrency = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.uint("blockreg.max_write_concurrency")? {
            limits.max_write_concurrency = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(secs) = self.uint("blockreg.body_idle_timeout_secs")? {
            limits.body_idle_timeout = Duration::from_secs(secs);
        }
        if let Some(rate) = self.uint("blockreg.min_body_rate")? {
            limits.min_body_rate = rate;
        }
        if let Some(secs) = self.uint("blockreg.header_read_timeout_secs")? {
            limits.header_read_timeout = Duration::from_secs(secs);
        }
        let clients = &mut limits.clients;
        if let Some(rate) = self.uint("blockreg.client_request_rate")? {
            clients.request_rate = u32::try_from(rate)
                .map_err(|_| self.wrong("blockreg.client_request_rate", "too large"))?;
        }
        if let Some(burst) = self.uint("blockreg.client_request_burst")? {
            clients.request_burst = u32::try_from(burst)
                .map_err(|_| self.wrong("blockreg.client_request_burst", "too large"))?;
        }
        if let Some(n) = self.uint("blockreg.client_max_uploads")? {
            clients.max_uploads = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.uint("blockreg.auth_failures_per_minute")? {
            clients.auth_failures_per_minute = u32::try_from(n)
                .map_err(|_| self.wrong("blockreg.auth_failures_per_minute", "too large"))?;
        }
        self.access(options)?;
        self.gc(options)?;
        if options.serve.auth.rules.is_some() && options.serve.auth.method.is_none() {
            return Err(self.wrong(
                "blockreg.access",
                "rules need an authentication method: set auth.htpasswd or auth.token",
            ));
        }
        Ok(())
    }
}

/// A scalar as text (what a Go string field would receive).
fn yaml_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(value: &Yaml) -> String {
    match value {
        Yaml::Array(_) => "a list".to_owned(),
        Yaml::Hash(_) => "a mapping".to_owned(),
        Yaml::Null => "nothing".to_owned(),
        other => {
            yaml_text(other).map_or_else(|| "an unreadable value".to_owned(), |t| format!("{t:?}"))
        }
    }
}

/// A listen address as Go writes it: `host:port`, `:port` (every
/// interface), `[v6]:port`, or a name that resolves.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let expected = || format!("expected host:port or :port, found {text:?}");
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| expected())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(expected());
    }
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A duration as the config file writes it (Go's syntax: `90s`, `1h30m`,
/// `0s`), for command-line flags that take the same values.
///
/// # Errors
///
/// When `text` is not such a duration; the message says what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_go_duration(text).ok_or_else(|| {
        format!("expected a duration such as 0s, 30m, 1h or 1h30m (units ns us ms s m h), found {text:?}")
    })
}

/// Go's `time.ParseDuration` for what configs use: a sequence of numbers
/// with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h` (`1h30m`, `1.5s`), or `0`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        load(Some(&path), env)
    }

    /// What Debian's docker-registry package ships in
    /// /etc/docker/registry/config.yml, minus its auth section.
    const DEBIAN: &str = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

    #[test]
    fn debians_registry_config_is_accepted() {
        let loaded = parse(DEBIAN, &[]).unwrap();
        let o = &loaded.options;
        assert_eq!(o.addr, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(o.serve.data_dir, PathBuf::from("/var/lib/docker-registry"));
        assert!(o.serve.settings.delete_enabled);
        assert_eq!(o.serve.headers.len(), 1);
        assert_eq!(o.serve.headers[0].0.as_str(), "x-content-type-options");
        assert_eq!(
            o.serve.health.storage,
            Some(StorageCheck {
                interval: Duration::from_secs(10),
                threshold: 3
            })
        );
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("log.fields"));
    }

    #[test]
    fn debians_config_with_its_htpasswd_section_is_read() {
        let with_auth = format!(
            "{DEBIAN}auth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry\n"
        );
        let loaded = parse(&with_auth, &[]).unwrap();
        assert_eq!(
            loaded.options.serve.auth.method,
            Some(AuthMethod::Htpasswd {
                realm: "basic-realm".into(),
                path: "/etc/docker/registry".into()
            })
        );
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    }

    #[test]
    fn token_auth_needs_all_four_keys_and_one_method_only() {
        let token = "version: 0.1\nauth:\n  token:\n    realm: https://a/token\n    service: reg\n    issuer: iss\n    rootcertbundle: /etc/ca.pem\n";
        let loaded = parse(token, &[]).unwrap();
        assert!(matches!(
            loaded.options.serve.auth.method,
            Some(AuthMethod::Token { ref service, .. }) if service == "reg"
        ));
        let err = parse(&token.replace("    issuer: iss\n", ""), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key auth.token.issuer:"), "{err}");
        let both = format!("{token}  htpasswd:\n    realm: r\n    path: /p\n");
        let err = parse(&both, &[]).unwrap_err().to_string();
        assert!(err.contains("only one authentication method"), "{err}");
        let err = parse("version: 0.1\nauth:\n  silly:\n    realm: r\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.silly is not supported"), "{err}");
    }

    #[test]
    fn access_rules_are_read_with_dotted_patterns_and_checked() {
        let base = "version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: /p\n";
        let loaded = parse(
            &format!(
                "{base}blockreg:
  access:
    admins: [root]
    groups:
      devs: [bob, carol]
    repositories:
      \"my.app/**\":
        anonymous: [pull]
        default: [pull]
        policies:
          - users: [dave]
            groups: [devs]
            actions: [pull, push]
"
            ),
            &[],
        )
        .unwrap();
        let rules = loaded.options.serve.auth.rules.unwrap();
        assert_eq!(rules.admins, ["root"]);
        assert_eq!(rules.groups["devs"], ["bob", "carol"]);
        let rule = &rules.repositories[0];
        assert_eq!(rule.pattern, "my.app/**");
        assert!(rule.anonymous.pull && !rule.anonymous.push);
        assert_eq!(rule.policies[0].users, ["dave"]);
        assert!(rule.policies[0].actions.push);

        let err = parse(
            &format!("{base}blockreg:\n  access:\n    repositories:\n      x:\n        default: [read]\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config key blockreg.access.repositories.x.default:")
                && err.contains("\"read\""),
            "{err}"
        );
        let err = parse(
            &format!("{base}blockreg:\n  access:\n    repositories:\n      x:\n        policies:\n          - groups: [nope]\n            actions: [pull]\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("group \"nope\" is not defined"), "{err}");
        let err = parse(
            "version: 0.1\nblockreg:\n  access:\n    admins: [root]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("need an authentication method"), "{err}");
    }

    #[test]
    fn the_distribution_example_config_is_accepted() {
        let example = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";
        let loaded = parse(example, &[]).unwrap();
        assert!(
            !loaded.options.serve.settings.delete_enabled,
            "registry:2 disables deletion unless told otherwise"
        );
        assert_eq!(loaded.options.addr.port(), 5000);
    }

    #[test]
    fn environment_variables_override_the_file_and_are_typed_as_yaml() {
        let loaded = parse(
            "version: 0.1\nhttp:\n  addr: 127.0.0.1:5000\nstorage:\n  delete:\n    enabled: true\n",
            &[
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
                ("REGISTRY_BLOCKREG_CACHE_MIB", "64"),
                ("REGISTRY_LOG_LEVEL", "debug"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        let o = &loaded.options;
        assert_eq!(o.addr, "127.0.0.1:6000".parse().unwrap());
        assert!(!o.serve.settings.delete_enabled);
        assert_eq!(o.serve.settings.cache_bytes, 64 << 20);
        assert_eq!(o.log.level, "debug");
    }

    #[test]
    fn a_wrong_value_names_its_key_and_the_variable_it_came_from() {
        let err = parse(
            "version: 0.1\nstorage:\n  delete:\n    enabled: maybe\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config key storage.delete.enabled:"),
            "{err}"
        );
        let err = parse("version: 0.1\n", &[("REGISTRY_HTTP_ADDR", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key http.addr (from REGISTRY_HTTP_ADDR):"),
            "{err}"
        );
        let err = parse(
            "version: 0.1\nhealth:\n  storagedriver:\n    interval: 10\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("health.storagedriver.interval"), "{err}");
    }

    #[test]
    fn unknown_keys_are_warned_about_once_per_section() {
        let loaded = parse(
            "version: 0.1\nhttp:\n  adress: :5000\nfrobnicate:\n  a: 1\n  b: 2\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            loaded.warnings,
            vec![
                "unknown config key http.adress; ignored".to_owned(),
                "unknown config key frobnicate; ignored".to_owned(),
            ]
        );
    }

    #[test]
    fn other_storage_drivers_and_read_only_mode_are_refused() {
        let err = parse("version: 0.1\nstorage:\n  s3:\n    bucket: b\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.s3") && err.contains("not supported yet"),
            "{err}"
        );
        let err = parse(
            "version: 0.1\nstorage:\n  maintenance:\n    readonly:\n      enabled: true\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("read-only"), "{err}");
    }

    #[test]
    fn tls_debug_and_blockreg_sections_are_read() {
        let loaded = parse(
            "version: 0.1
http:
  tls:
    certificate: /etc/c.pem
    key: /etc/k.pem
    clientcas: [/etc/ca1.pem, /etc/ca2.pem]
    minimumtls: tls1.3
  debug:
    addr: 127.0.0.1:5002
    prometheus:
      enabled: true
storage:
  maintenance:
    uploadpurging:
      enabled: true
      age: 72h
      interval: 1h30m
      dryrun: true
blockreg:
  max_concurrency: 8
  conversion: no
  max_decoded_ratio: 50
",
            &[],
        )
        .unwrap();
        let serve = &loaded.options.serve;
        let tls = serve.tls.as_ref().unwrap();
        assert_eq!(tls.client_cas.len(), 2);
        assert_eq!(tls.minimum, TlsVersion::Tls13);
        let debug = serve.debug.as_ref().unwrap();
        assert_eq!(debug.prometheus_path.as_deref(), Some("/metrics"));
        assert_eq!(serve.upload_purging.age, Duration::from_secs(72 * 3600));
        assert_eq!(serve.upload_purging.interval, Duration::from_secs(5400));
        assert!(serve.upload_purging.enabled && serve.upload_purging.dry_run);
        assert!(!loaded.warnings.iter().any(|w| w.contains("uploadpurging")));
        assert_eq!(serve.limits.max_concurrency, 8);
        assert!(!serve.background_conversion);
        assert_eq!(serve.settings.max_decoded_ratio, 50.0);
    }

    #[test]
    fn the_gc_section_is_read_with_its_retention_rules() {
        let loaded = parse(
            "version: 0.1
blockreg:
  gc:
    enabled: true
    interval: 6h
    grace: 2h
    delete_untagged: yes
    dry_run: true
    io_percent: 20
    retention:
      - repositories: [\"ci/**\", team-*/app]
        keep_last: 5
        keep_within: 168h
        keep_tags: [\"v[0-9]+\\\\.[0-9]+\", latest]
        delete_untagged_after: 720h
      - repositories: \"**\"
        keep_tags: [\".*\"]
      - repositories: [scratch/*]
        delete_untagged_after: 24h
",
            &[],
        )
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let gc = &loaded.options.serve.gc;
        assert!(gc.enabled && gc.delete_untagged && gc.dry_run);
        assert_eq!(gc.io_percent, 20);
        assert_eq!(gc.interval, Duration::from_secs(6 * 3600));
        assert_eq!(gc.grace, Duration::from_secs(7200));
        assert_eq!(
            gc.retention,
            vec![
                RetentionRule {
                    repositories: vec!["ci/**".into(), "team-*/app".into()],
                    keep_last: Some(5),
                    keep_within: Some(Duration::from_secs(168 * 3600)),
                    keep_tags: vec!["v[0-9]+\\.[0-9]+".into(), "latest".into()],
                    delete_untagged_after: Some(Duration::from_secs(720 * 3600)),
                },
                RetentionRule {
                    repositories: vec!["**".into()],
                    keep_tags: vec![".*".into()],
                    ..RetentionRule::default()
                },
                RetentionRule {
                    repositories: vec!["scratch/*".into()],
                    delete_untagged_after: Some(Duration::from_secs(24 * 3600)),
                    ..RetentionRule::default()
                },
            ]
        );
        let defaults = parse("version: 0.1\n", &[]).unwrap();
        assert_eq!(
            defaults.options.serve.gc,
            crate::config::GarbageCollection::default()
        );
    }

    #[test]
    fn gc_values_come_from_the_environment_too() {
        let loaded = parse(
            "version: 0.1\n",
            &[
                ("REGISTRY_BLOCKREG_GC_ENABLED", "false"),
                ("REGISTRY_BLOCKREG_GC_GRACE", "90m"),
                (
                    "REGISTRY_BLOCKREG_GC_RETENTION",
                    "[{repositories: [ci/**], keep_last: 2}]",
                ),
            ],
        )
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let gc = &loaded.options.serve.gc;
        assert!(!gc.enabled);
        assert_eq!(gc.grace, Duration::from_secs(5400));
        assert_eq!(gc.retention[0].keep_last, Some(2));
        let err = parse(
            "version: 0.1\n",
            &[("REGISTRY_BLOCKREG_GC_INTERVAL", "soon")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "config key blockreg.gc.interval (from REGISTRY_BLOCKREG_GC_INTERVAL):"
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_gc_values_name_their_key() {
        let gc = |body: &str| {
            parse(&format!("version: 0.1\nblockreg:\n  gc:\n{body}"), &[])
                .unwrap_err()
                .to_string()
        };
        for (body, key, says) in [
            ("    interval: 0s\n", "blockreg.gc.interval:", "more than 0s"),
            ("    grace: an hour\n", "blockreg.gc.grace:", "duration"),
            ("    delete_untagged: maybe\n", "blockreg.gc.delete_untagged:", "true or false"),
            ("    io_percent: 0\n", "blockreg.gc.io_percent:", "1 to 100"),
            ("    io_percent: 101\n", "blockreg.gc.io_percent:", "1 to 100"),
            ("    retention: {keep_last: 1}\n", "blockreg.gc.retention:", "list of rules"),
            (
                "    retention:\n      - repositories: [a]\n        keep_last: -1\n",
                "blockreg.gc.retention[0].keep_last:",
                "whole number",
            ),
            (
                "    retention:\n      - repositories: [a]\n        delete_untagged_after: soon\n",
                "blockreg.gc.retention[0].delete_untagged_after:",
                "duration",
            ),
            (
                "    retention:\n      - repositories: [a]\n",
                "blockreg.gc.retention[0]:",
                "does nothing",
            ),
            (
                "    retention:\n      - repositories: [a]\n        keep_within: 3 days\n",
                "blockreg.gc.retention[0].keep_within:",
                "duration",
            ),
            (
                "    retention:\n      - repositories: [a]\n        keep_last: 1\n        keep: 2\n",
                "blockreg.gc.retention[0].keep:",
                "unknown key",
            ),
            (
                "    retention:\n      - keep_last: 1\n",
                "blockreg.gc.retention[0]:",
                "repositories is missing",
            ),
            (
                "    retention:\n      - repositories: [a]\n        keep_last: 1\n      - repositories: [b]\n        keep_last: 0\n",
                "blockreg.gc.retention[1]:",
                "keeps no tag",
            ),
        ] {
            let err = gc(body);
            assert!(
                err.starts_with(&format!("config key {key}")) && err.contains(says),
                "{body:?}: {err}"
            );
        }
        let loaded = parse("version: 0.1\nblockreg:\n  gc:\n    every: 1h\n", &[]).unwrap();
        assert_eq!(
            loaded.warnings,
            vec!["unknown config key blockreg.gc.every; ignored".to_owned()]
        );
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
