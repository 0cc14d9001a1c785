//! `blockreg`: parses the command line and calls into the `host` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use host::{GuestSettings, GuestSource, Limits, ServeConfig};

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
    /// Serve the registry over HTTP (the default).
    Serve(ServeArgs),
    /// Print the store's size and deduplication figures.
    Stats(StatsArgs),
    /// Run a wasi:cli command component (the wasm32-wasip2 test runner).
    Run(RunArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5001")]
    addr: SocketAddr,
    /// Data directory, created if missing.
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Guest component to serve instead of the embedded one; reloaded when
    /// the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE.wasm")]
    guest: Option<PathBuf>,
    /// Linear memory limit of one guest instance, in MiB.
    #[arg(long, default_value_t = 512)]
    max_memory_mib: usize,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = 1800)]
    request_timeout_secs: u64,
    /// Largest accepted request body, in bytes (default 16 GiB).
    #[arg(long, default_value_t = 16 << 30)]
    max_body_bytes: u64,
    /// Guest instances alive at once; further requests wait.
    #[arg(long, default_value_t = 256)]
    max_concurrency: usize,
    /// Of those, how many may serve writes (POST, PUT, PATCH, or any request
    /// with a body); the rest are kept for reads. Default: three quarters of
    /// --max-concurrency.
    #[arg(long)]
    max_write_concurrency: Option<usize>,
    /// Seconds a request body may send nothing before it fails with 408
    /// and its slot is freed (0: no limit on slow bodies).
    #[arg(long, default_value_t = 60)]
    body_idle_timeout_secs: u64,
    /// Slowest sustained request body rate in bytes per second, averaged over
    /// about --body-idle-timeout-secs; a slower body fails with 408 (0: off).
    #[arg(long, default_value_t = 1024)]
    min_body_rate: u64,
    /// Seconds a client may take to send a request's headers, and that an
    /// idle keep-alive connection is kept open (0: no limit).
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
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
    let cli = Cli::parse();
    // Guest file I/O blocks the worker thread that runs the request (see
    // ctx.rs), so keep more workers than cores: a request waiting on fsync
    // must not hold up the sockets of the others.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cores * 4).max(8))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        Command::Stats(args) => {
            let stats = host::store_stats(&args.data, &guest_source(args.guest)).await?;
            if args.json {
                println!("{}", stats.to_json());
            } else {
                println!("{stats}");
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    host::init_logging();
    let config = ServeConfig {
        data_dir: args.data,
        guest: guest_source(args.guest),
        limits: Limits {
            max_memory_bytes: args.max_memory_mib << 20,
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            max_body_bytes: args.max_body_bytes,
            max_concurrency: args.max_concurrency,
            max_write_concurrency: args.max_write_concurrency,
            body_idle_timeout: Duration::from_secs(args.body_idle_timeout_secs),
            min_body_rate: args.min_body_rate,
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        },
        settings: GuestSettings {
            delete_enabled: !args.no_delete,
            cache_bytes: args.cache_mib << 20,
            max_correction_ratio: args.max_correction_ratio,
            max_decoded_bytes: args.max_decoded_mib << 20,
            max_decoded_ratio: args.max_decoded_ratio,
            accept_foreign_layers: !args.refuse_foreign_layers,
        },
        background_conversion: !args.no_conversion,
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    host::serve(listener, config, host::shutdown_signal()).await
}
