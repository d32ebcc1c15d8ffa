//! NanoCtrl: the dlslime control-plane HTTP server. Redis is the source of truth;
//! routes, shapes, keys and CLI follow the original (see README.md for the differences).

mod cli;
mod error;
mod models;
mod net;
mod redis_store;
mod routes;
mod runtime_dir;
mod server;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ServerArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_server(cli.server),
        Some(Command::Server(a)) => run_server(a),
        Some(Command::Start(a)) => cli::start(a),
        Some(Command::Stop(a)) => cli::stop(a),
        Some(Command::Status(a)) => cli::status(a),
    }
}

fn run_server(args: ServerArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOCTRL_RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: `start` sends this stream to a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let redis_url = args.effective_redis_url();
    if redis_url != args.redis_url {
        tracing::info!(
            "using {} from {} (overrides --redis-url)",
            redis_url,
            cli::REDIS_URL_ENV
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = server::ServerConfig {
        host: args.host,
        port: args.port,
        redis_url,
        max_body_bytes: args.max_body_bytes,
    };
    match rt.block_on(server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
