//! NanoCtrl: the dlslime control-plane server. Redis is the source of truth;
//! routes, shapes, keys and CLI follow the original (see README.md for the differences).

mod auth;
mod body;
mod cli;
mod conn_limit;
mod error;
mod limits;
mod log_sink;
mod models;
mod net;
mod obs_cli;
mod owner;
mod prometheus;
mod redis_conn;
mod redis_store;
mod routes;
mod runtime_dir;
mod server;
mod throttle;

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
        Some(Command::Obs(a)) => obs_cli::run(a),
    }
}

fn run_server(args: ServerArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOCTRL_RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logging never blocks a request: lines go through a bounded queue to a writer
    // thread (dropped and counted if stderr does not keep up).
    let (writer, _flush_on_exit) = log_sink::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colours only on a terminal: `start` sends this stream to a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let token = match args.auth.token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let conn_limits = match args.conn_limits() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let redis_url = args.effective_redis_url();
    if redis_url != args.redis_url {
        tracing::info!(
            "using the Redis URL from {} (overrides --redis-url)",
            cli::REDIS_URL_ENV
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = server::ServerConfig {
        host: args.host,
        port: args.port,
        redis_urls: redis_conn::split_urls(&redis_url),
        max_body_bytes: args.max_body_bytes,
        conn_limits,
        token,
        agent_redis_auth: args
            .agent_redis_auth
            .as_deref()
            .map(net::Credentials::parse),
    };
    match rt.block_on(server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
