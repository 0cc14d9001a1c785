//! `blockreg`: parses the command line and calls into the `host` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use host::{GuestSettings, GuestSource, Limits, ServeOptions, TlsConfig, TlsVersion};

/// A container registry whose protocol logic runs in a WebAssembly component.
#[derive(Parser)]
#[command(name = "blockreg", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `serve`, the default when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry over HTTP or HTTPS (the default).
    Serve(Box<ServeArgs>),
    /// Print the store's size and deduplication figures.
    Stats(StatsArgs),
    /// Verify the store (block index against packs, recipes, and with
    /// --read-data every blob against its digest); exit 1 when damaged.
    Check(CheckArgs),
    /// Collect garbage: remove blobs no manifest names (past the grace
    /// period), untagged manifests and tags as configured, and the packs
    /// they leave dead. Safe while a server serves the same directory.
    Gc(GcArgs),
    /// Run a wasi:cli command component (the wasm32-wasip2 test runner).
    Run(RunArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// registry:2 configuration file (config.yml) with an optional
    /// `blockreg:` section. REGISTRY_* environment variables override its
    /// keys; flags given on the command line override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value_t = ServeOptions::default().addr)]
    addr: SocketAddr,
    /// Data directory, created if missing.
    #[arg(long, default_value_os_t = ServeOptions::default().serve.data_dir)]
    data: PathBuf,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key);
    /// reloaded when the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; must lie outside the data directory.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Guest component to serve instead of the embedded one; reloaded when
    /// the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE.wasm")]
    guest: Option<PathBuf>,
    /// Linear memory limit of one guest instance, in MiB.
    #[arg(long, default_value_t = Limits::default().max_memory_bytes >> 20)]
    max_memory_mib: usize,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = Limits::default().request_timeout.as_secs())]
    request_timeout_secs: u64,
    /// Largest accepted request body, in bytes (default 16 GiB).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: u64,
    /// Guest instances alive at once; further requests wait.
    #[arg(long, default_value_t = Limits::default().max_concurrency)]
    max_concurrency: usize,
    /// Of those, how many may serve writes (POST, PUT, PATCH, or any request
    /// with a body); the rest are kept for reads. Default: three quarters of
    /// --max-concurrency.
    #[arg(long)]
    max_write_concurrency: Option<usize>,
    /// Seconds a request body may send nothing before it fails with 408
    /// and its slot is freed (0: no limit on slow bodies).
    #[arg(long, default_value_t = Limits::default().body_idle_timeout.as_secs())]
    body_idle_timeout_secs: u64,
    /// Slowest sustained request body rate in bytes per second, averaged over
    /// about --body-idle-timeout-secs; a slower body fails with 408 (0: off).
    #[arg(long, default_value_t = Limits::default().min_body_rate)]
    min_body_rate: u64,
    /// Seconds a client may take to send a request's headers, and that an
    /// idle keep-alive connection is kept open (0: no limit).
    #[arg(long, default_value_t = Limits::default().header_read_timeout.as_secs())]
    header_read_timeout_secs: u64,
    /// Requests per second one client (IP address) may sustain; more get
    /// 429 with Retry-After (0: no limit).
    #[arg(long, default_value_t = Limits::default().clients.request_rate)]
    client_request_rate: u32,
    /// Requests one client may send at once above --client-request-rate
    /// (0: as many as the rate).
    #[arg(long, default_value_t = Limits::default().clients.request_burst)]
    client_request_burst: u32,
    /// Uploads (writes) one client may have in flight; more get 429 (0: no
    /// limit).
    #[arg(long, default_value_t = Limits::default().clients.max_uploads)]
    client_max_uploads: usize,
    /// Failed htpasswd logins one client may make per minute; then 429
    /// until the minute is over (0: no limit).
    #[arg(long, default_value_t = Limits::default().clients.auth_failures_per_minute)]
    auth_failures_per_minute: u32,
    /// Refuse DELETE of manifests, tags and blobs (405 UNSUPPORTED).
    #[arg(long)]
    no_delete: bool,
    /// Byte budget of the cache of recreated blobs, in MiB.
    #[arg(long, default_value_t = GuestSettings::default().cache_bytes >> 20)]
    cache_mib: u64,
    /// Store a gzip blob as raw blocks when its recreation data exceeds this
    /// share of its decoded size.
    #[arg(long, default_value_t = GuestSettings::default().max_correction_ratio)]
    max_correction_ratio: f64,
    /// Store a compressed blob as opaque blocks of its own bytes when it
    /// decodes to more than this many MiB (bounds conversion memory).
    #[arg(long, default_value_t = GuestSettings::default().max_decoded_bytes >> 20)]
    max_decoded_mib: u64,
    /// Store a compressed blob as opaque blocks of its own bytes when it
    /// decodes to more than this multiple of its size (decompression bombs).
    #[arg(long, default_value_t = GuestSettings::default().max_decoded_ratio)]
    max_decoded_ratio: f64,
    /// Refuse image manifests that reference non-distributable layers
    /// (descriptors with `urls`) unless their blobs were pushed here.
    #[arg(long)]
    refuse_foreign_layers: bool,
    /// Keep pushed blobs as they are: no background conversion to blocks.
    #[arg(long)]
    no_conversion: bool,
    /// No garbage collection in the background (`blockreg gc` still
    /// collects when run).
    #[arg(long)]
    no_gc: bool,
}

#[derive(Args)]
struct StatsArgs {
    /// Data directory.
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Guest component to ask instead of the embedded one.
    #[arg(long, value_name = "FILE.wasm")]
    guest: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Data directory.
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Also read every blob back in full and check it against its digest.
    #[arg(long)]
    read_data: bool,
    /// Guest component to ask instead of the embedded one.
    #[arg(long, value_name = "FILE.wasm")]
    guest: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GcArgs {
    /// Data directory (default: the config file's
    /// storage.filesystem.rootdirectory, else ./data).
    #[arg(long, default_value_os_t = ServeOptions::default().serve.data_dir)]
    data: PathBuf,
    /// Only count what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep unreferenced blobs and untagged manifests used within this long
    /// (30m, 1h, 2h30m; default: the config file's blockreg.gc.grace, else
    /// 1h). A blob is unreferenced from its push until its manifest
    /// arrives: a grace shorter than the longest push, such as 0s, may
    /// remove the blobs of a push in progress, which then fails.
    #[arg(long, value_name = "DURATION", value_parser = host::config_file::parse_duration)]
    grace: Option<Duration>,
    /// Also remove manifests no tag reaches, once past the grace period.
    #[arg(long)]
    delete_untagged: bool,
    /// Percent of the time the writing steps may work, pausing for the
    /// rest so that requests of a server on the same store are not slowed
    /// (default: the config file's blockreg.gc.io_percent, else 50; 100
    /// runs flat out).
    #[arg(long, value_name = "1-100", value_parser = clap::value_parser!(u8).range(1..=100))]
    io_percent: Option<u8>,
    /// registry:2 configuration file (what `serve --config` takes): its
    /// blockreg.gc section (grace, delete_untagged, retention rules), data
    /// directory and guest apply. REGISTRY_* environment variables
    /// override its keys; flags override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Guest component to run the collection with instead of the embedded
    /// one.
    #[arg(long, value_name = "FILE.wasm")]
    guest: Option<PathBuf>,
    /// Print the collection's record as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The command component.
    file: PathBuf,
    /// Arguments passed to it after argv[0].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn guest_source(guest: Option<PathBuf>) -> GuestSource {
    guest.map_or(GuestSource::Embedded, GuestSource::File)
}

fn main() -> ExitCode {
    // The matches are kept to tell flags given from defaults (they override
    // the config file only when given).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Before any thread starts (see malloc.rs).
    host::malloc::limit_arenas();
    // Guest file I/O blocks the worker thread that runs the request (see
    // ctx.rs), so keep more workers than cores: a request waiting on fsync
    // must not hold up the sockets of the others.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Request threads run below the converter (started from this thread by
    // `serve`), so conversion keeps up under load (see convert.rs).
    let mut base_nice = host::current_nice();
    if matches!(cli.command, Some(Command::Gc(_))) {
        // A collection run by hand is maintenance beside a serving server:
        // every thread of it, this one included (it drives the runtime),
        // runs at the lowest priority, below the server's request threads,
        // so requests keep the CPU it would take.
        base_nice = 19 - host::REQUEST_NICE;
        host::lower_request_thread_priority(base_nice);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cores * 4).max(8))
        .on_thread_start(move || host::lower_request_thread_priority(base_nice))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, &matches));
    // Lets file operations still on blocking threads finish, without
    // waiting on ones that never end (such as a read of the inherited stdin).
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => {
            let serve_matches = match matches.subcommand() {
                Some(("serve", sub)) => sub,
                _ => matches,
            };
            serve(*args, serve_matches)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Stats(args) => {
            let stats = host::store_stats(&args.data, &guest_source(args.guest)).await?;
            if args.json {
                println!("{}", stats.to_json());
            } else {
                println!("{stats}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let report = host::store_check(
                &args.data,
                &guest_source(args.guest),
                args.read_data,
                || eprintln!("waiting for the store lock: a garbage collection is running"),
            )
            .await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gc(args) => {
            let gc_matches = matches.subcommand_matches("gc").unwrap_or(matches);
            let json = args.json;
            let (config, warnings) = gc_config(args, gc_matches, std::env::vars())?;
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            let collection = host::collect_garbage(&config, || {
                eprintln!(
                    "waiting for the store lock: a conversion in progress or another collection holds it"
                );
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&collection)?);
            } else {
                println!("{collection}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let status = host::run_command(&args.file, &args.args).await?;
            // Statuses outside 0..=255 wrap, as they would for a process.
            Ok(ExitCode::from(status as u8))
        }
    }
}

async fn serve(args: ServeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let loaded = serve_options(args, matches, std::env::vars())?;
    let options = loaded.options;
    host::init_logging(&options.log);
    for note in &loaded.notes {
        tracing::info!("{note}");
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("binding {}", options.addr))?;
    host::serve(listener, options.serve, host::shutdown_signal()).await
}

/// The options `serve` runs with: defaults, then the config file and the
/// `REGISTRY_*` variables of `env` (`host::config_file`), then the flags
/// given on the command line.
fn serve_options(
    args: ServeArgs,
    matches: &ArgMatches,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<host::config_file::Loaded> {
    let mut loaded = host::config_file::load(args.config.as_deref(), env)?;
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let options = &mut loaded.options;
    if given("addr") {
        options.addr = args.addr;
    }
    let serve = &mut options.serve;
    if given("data") {
        serve.data_dir = args.data;
    }
    if let (Some(certificate), Some(key)) = (args.tls_cert, args.tls_key) {
        let file = serve.tls.take();
        serve.tls = Some(TlsConfig {
            certificate,
            key,
            client_cas: file
                .as_ref()
                .map(|t| t.client_cas.clone())
                .unwrap_or_default(),
            minimum: file.map_or(TlsVersion::default(), |t| t.minimum),
        });
    }
    if let Some(guest) = args.guest {
        serve.guest = GuestSource::File(guest);
    }
    let limits = &mut serve.limits;
    if given("max_memory_mib") {
        limits.max_memory_bytes = args.max_memory_mib << 20;
    }
    if given("request_timeout_secs") {
        limits.request_timeout = Duration::from_secs(args.request_timeout_secs);
    }
    if given("max_body_bytes") {
        limits.max_body_bytes = args.max_body_bytes;
    }
    if given("max_concurrency") {
        limits.max_concurrency = args.max_concurrency;
    }
    if args.max_write_concurrency.is_some() {
        limits.max_write_concurrency = args.max_write_concurrency;
    }
    if given("body_idle_timeout_secs") {
        limits.body_idle_timeout = Duration::from_secs(args.body_idle_timeout_secs);
    }
    if given("min_body_rate") {
        limits.min_body_rate = args.min_body_rate;
    }
    if given("header_read_timeout_secs") {
        limits.header_read_timeout = Duration::from_secs(args.header_read_timeout_secs);
    }
    if given("client_request_rate") {
        limits.clients.request_rate = args.client_request_rate;
    }
    if given("client_request_burst") {
        limits.clients.request_burst = args.client_request_burst;
    }
    if given("client_max_uploads") {
        limits.clients.max_uploads = args.client_max_uploads;
    }
    if given("auth_failures_per_minute") {
        limits.clients.auth_failures_per_minute = args.auth_failures_per_minute;
    }
    let settings = &mut serve.settings;
    if args.no_delete {
        settings.delete_enabled = false;
    }
    if given("cache_mib") {
        settings.cache_bytes = args.cache_mib << 20;
    }
    if given("max_correction_ratio") {
        settings.max_correction_ratio = args.max_correction_ratio;
    }
    if given("max_decoded_mib") {
        settings.max_decoded_bytes = args.max_decoded_mib << 20;
    }
    if given("max_decoded_ratio") {
        settings.max_decoded_ratio = args.max_decoded_ratio;
    }
    if args.refuse_foreign_layers {
        settings.accept_foreign_layers = false;
    }
    if args.no_conversion {
        serve.background_conversion = false;
    }
    if args.no_gc {
        serve.gc.enabled = false;
    }
    Ok(loaded)
}

/// What `blockreg gc` runs with: defaults, then the config file and the
/// `REGISTRY_*` variables of `env`, then the flags given; and the warnings
/// to print (the file's, and a grace period a push could outlast).
fn gc_config(
    args: GcArgs,
    matches: &ArgMatches,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<(host::ServeConfig, Vec<String>)> {
    let loaded = host::config_file::load(args.config.as_deref(), env)?;
    let mut warnings = loaded.warnings;
    let mut config = loaded.options.serve;
    if matches.value_source("data") == Some(ValueSource::CommandLine) {
        config.data_dir = args.data;
    }
    if let Some(guest) = args.guest {
        config.guest = GuestSource::File(guest);
    }
    if let Some(grace) = args.grace {
        config.gc.grace = grace;
    }
    if args.delete_untagged {
        config.gc.delete_untagged = true;
    }
    if let Some(percent) = args.io_percent {
        config.gc.io_percent = percent;
    }
    // The file's `dry_run` is the server's schedule; a manual run does what
    // its own flag says.
    config.gc.dry_run = args.dry_run;
    warnings.extend(host::grace_warning(&config.gc, &config.limits));
    Ok((config, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `argv` as `blockreg` would and builds the serve options.
    fn options(argv: &[&str], env: &[(&str, &str)]) -> anyhow::Result<ServeOptions> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let (args, sub) = match cli.command {
            Some(Command::Serve(args)) => (*args, matches.subcommand_matches("serve").unwrap()),
            None => (cli.serve, &matches),
            Some(_) => panic!("not serve"),
        };
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Ok(serve_options(args, sub, env)?.options)
    }

    #[test]
    fn without_a_config_file_the_options_are_the_defaults() {
        let o = options(&["blockreg"], &[]).unwrap();
        let d = ServeOptions::default();
        assert_eq!(o.addr, d.addr);
        assert_eq!(o.serve.data_dir, d.serve.data_dir);
        assert_eq!(o.serve.limits, d.serve.limits);
        assert_eq!(o.serve.settings, d.serve.settings);
    }

    #[test]
    fn flags_given_beat_the_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            "version: 0.1\nhttp:\n  addr: 127.0.0.1:7001\nstorage:\n  filesystem:\n    rootdirectory: /file\n  delete:\n    enabled: true\nblockreg:\n  cache_mib: 10\n  max_concurrency: 9\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let env = [
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:7002"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/env"),
        ];
        let o = options(
            &[
                "blockreg",
                "serve",
                "--config",
                config,
                "--addr",
                "127.0.0.1:7003",
                "--no-delete",
                "--cache-mib",
                "20",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(o.addr, "127.0.0.1:7003".parse().unwrap(), "flag beats env");
        assert_eq!(o.serve.data_dir, PathBuf::from("/env"), "env beats file");
        assert!(!o.serve.settings.delete_enabled, "flag beats file");
        assert_eq!(o.serve.settings.cache_bytes, 20 << 20);
        assert_eq!(
            o.serve.limits.max_concurrency, 9,
            "a default flag leaves the file's value"
        );
        let o = options(&["blockreg", "--config", config], &[]).unwrap();
        assert_eq!(o.addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(o.serve.data_dir, PathBuf::from("/file"));
    }

    /// Parses `argv` as `blockreg gc` and builds what it runs with.
    fn gc_options(
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<(host::ServeConfig, Vec<String>)> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let Some(Command::Gc(args)) = cli.command else {
            panic!("not gc")
        };
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        gc_config(args, matches.subcommand_matches("gc").unwrap(), env)
    }

    #[test]
    fn gc_takes_the_config_files_section_and_flags_beat_it() {
        let (config, warnings) = gc_options(&["blockreg", "gc"], &[]).unwrap();
        assert_eq!(config.gc, host::GarbageCollection::default());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(warnings.is_empty(), "{warnings:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /file\nblockreg:\n  gc:\n    grace: 2h\n    dry_run: true\n    retention:\n      - repositories: [ci/**]\n        keep_last: 2\n",
        )
        .unwrap();
        let config_path = file.to_str().unwrap();
        let (config, _) = gc_options(&["blockreg", "gc", "--config", config_path], &[]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/file"));
        assert_eq!(config.gc.grace, Duration::from_secs(7200));
        assert!(!config.gc.dry_run, "the file's dry_run is the server's");
        assert_eq!(config.gc.retention.len(), 1);
        assert_eq!(config.gc.retention[0].keep_last, Some(2));

        let (config, warnings) = gc_options(
            &[
                "blockreg",
                "gc",
                "--config",
                config_path,
                "--data",
                "/flag",
                "--grace",
                "0s",
                "--delete-untagged",
                "--dry-run",
                "--io-percent",
                "100",
            ],
            &[("REGISTRY_BLOCKREG_GC_GRACE", "3h")],
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/flag"));
        assert_eq!(config.gc.grace, Duration::ZERO, "flag beats env and file");
        assert!(config.gc.delete_untagged && config.gc.dry_run);
        assert_eq!(config.gc.io_percent, 100);
        assert!(
            warnings.is_empty(),
            "a dry run removes nothing: {warnings:?}"
        );

        let (config, warnings) = gc_options(&["blockreg", "gc", "--grace", "0s"], &[]).unwrap();
        assert_eq!(config.gc.grace, Duration::ZERO);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("may be removed"), "{warnings:?}");
        let (config, _) =
            gc_options(&["blockreg", "gc"], &[("REGISTRY_BLOCKREG_GC_GRACE", "3h")]).unwrap();
        assert_eq!(
            config.gc.grace,
            Duration::from_secs(3 * 3600),
            "env beats the default"
        );
    }

    #[test]
    fn gc_refuses_a_duration_it_cannot_read() {
        let err = gc_options(&["blockreg", "gc", "--grace", "10"], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected a duration"), "{err}");
    }

    #[test]
    fn no_gc_turns_the_background_collection_off() {
        assert!(options(&["blockreg"], &[]).unwrap().serve.gc.enabled);
        assert!(
            !options(&["blockreg", "--no-gc"], &[])
                .unwrap()
                .serve
                .gc
                .enabled
        );
    }

    #[test]
    fn tls_flags_go_together() {
        assert!(options(&["blockreg", "--tls-cert", "c.pem"], &[]).is_err());
        let o = options(
            &["blockreg", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            &[],
        )
        .unwrap();
        assert_eq!(o.serve.tls.unwrap().key, PathBuf::from("k.pem"));
    }
}
