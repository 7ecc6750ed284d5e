//! The `spool` binary: the daemon (`spool serve`) and the operator's tools (`spool check-config`, `spool healthcheck`
//! and the gRPC client subcommands in [`cli`]: enqueue, queues, job, dead, pause, resume, schedules, schedule). It owns
//! configuration (file, `SPOOL_*` environment, flags), logging, wiring the engine to its doors, signal handling and
//! the ordered shutdown. It holds no business logic: that is the engine's.

mod cli;
mod config;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use config::{Config, LogFormat};

/// Spool: a durable task-queue broker.
#[derive(Debug, Parser)]
#[command(
    name = "spool",
    version,
    about = "Spool, a durable task-queue broker: run it (`spool serve`), check its config, or drive a running one over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// Configuration file; without one, the embedded defaults apply (see config/spool.toml).
        #[arg(long, short, env = "SPOOL_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides `server.data_dir`).
        #[arg(long, env = "SPOOL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Validate a configuration file (with `SPOOL_*` overrides applied) and print what is wrong.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// See the workspace manifest for why not the system allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(command) => cli::run(command),
        Command::CheckConfig { file } => match Config::load(Some(&file), std::env::vars()) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config, data_dir } => {
            let mut cfg = match Config::load(config.as_deref(), std::env::vars()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(dir) = data_dir {
                cfg.server.data_dir = dir;
            }
            init_logging(&cfg);
            match serve::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Logging is up by now, so the error goes where the operator's logs go (text or JSON).
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    // Colour codes only help a person at a terminal; in files and log shippers they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
