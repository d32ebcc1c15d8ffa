//! Command line: `nanoctrl [server|start|stop|status|obs]`, flags and behaviour of the original.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command as Proc, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::auth::{self, Token};
use crate::conn_limit::ConnLimits;
use crate::net;
use crate::runtime_dir::{process_alive, signal, Meta, RuntimeFiles};

pub const REDIS_URL_ENV: &str = "NANOCTRL_REDIS_URL";
pub const TOKEN_ENV: &str = "NANOCTRL_TOKEN";
const POLL: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(
    name = "nanoctrl",
    version,
    about = "NanoCtrl control-plane server (Redis-backed)"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, run the server in the foreground with these flags.
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server in the foreground.
    Server(ServerArgs),
    /// Start the server in the background (pid/meta files in the runtime dir).
    Start(StartArgs),
    /// Stop a server started with `start`.
    Stop(StopArgs),
    /// Show the state of a server started with `start`.
    Status(StatusArgs),
    /// A live table of the PeerAgents' observability snapshots (like `top`).
    Obs(crate::obs_cli::ObsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Bind address: an IP or a hostname.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Redis URL (`redis://[user:password@]host:port[/db]`), or several separated by
    /// commas (a primary and its replicas: NanoCtrl follows whichever is the primary).
    /// NANOCTRL_REDIS_URL, when set, takes precedence (as in the original).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most HTTP connections open at once; more are closed as they are accepted.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Most HTTP connections open at once from one client address.
    #[arg(long, default_value_t = 512)]
    pub max_connections_per_ip: usize,
    /// Seconds after which a connection that moves no byte is closed.
    #[arg(long, default_value_t = 60.0)]
    pub idle_timeout: f64,
    #[command(flatten)]
    pub auth: TokenArgs,
    /// Redis credentials (`user:password`, or `password` for the default user) handed to
    /// clients that presented the token, with the Redis address (`/start_peer_agent`
    /// `redis_url`, `/get_redis_address`). Default: those of --redis-url. An open
    /// NanoCtrl (no token) never hands out credentials.
    #[arg(long, env = "NANOCTRL_AGENT_REDIS_AUTH", hide_env_values = true)]
    pub agent_redis_auth: Option<String>,
}

/// The bearer token, for the server and for the CLI's health checks.
#[derive(Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// Bearer token every request must carry (`Authorization: Bearer <token>`); without
    /// one NanoCtrl is open. A flag is visible in `ps`: prefer NANOCTRL_TOKEN or
    /// --token-file.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// File whose first line is the token.
    #[arg(long, env = "NANOCTRL_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    pub fn token(&self) -> Result<Option<Token>, String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Token::new(t).map(Some).map_err(|e| format!("--token: {e}")),
            (None, Some(p)) => auth::read_token_file(p).map(Some),
            (None, None) => Ok(None),
        }
    }
}

impl ServerArgs {
    /// The Redis URL actually used: the environment overrides the flag.
    pub fn effective_redis_url(&self) -> String {
        match std::env::var(REDIS_URL_ENV) {
            Ok(v) if !v.is_empty() => v,
            _ => self.redis_url.clone(),
        }
    }

    /// The connection limits, checked.
    pub fn conn_limits(&self) -> Result<ConnLimits, String> {
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("--max-connections and --max-connections-per-ip must be at least 1".into());
        }
        let idle = Duration::try_from_secs_f64(self.idle_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "--idle-timeout {}: want a positive number of seconds",
                    self.idle_timeout
                )
            })?;
        Ok(ConnLimits {
            max: self.max_connections,
            per_ip: self.max_connections_per_ip,
            idle,
        })
    }
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Host for the health check (default: the bind host unless 0.0.0.0, else this node's IP).
    #[arg(long)]
    pub health_host: Option<String>,
    /// Port for the health check (default: --port).
    #[arg(long)]
    pub health_port: Option<u16>,
    /// Server log (appended); default `<runtime dir>/nanoctrl.log`.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Seconds to wait for the health check to pass.
    #[arg(long, default_value_t = 8.0)]
    pub wait: f64,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM.
    #[arg(long, default_value_t = 8.0)]
    pub timeout: f64,
    /// Send SIGKILL if SIGTERM did not stop it in time.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// `host:port` (or `http://host:port`) to health-check instead of the recorded one.
    #[arg(long)]
    pub address: Option<String>,
    #[command(flatten)]
    pub auth: TokenArgs,
}

pub fn split_address(addr: &str) -> Option<(String, u16)> {
    let a = addr.trim_start_matches("http://").trim_end_matches('/');
    let (h, p) = a.rsplit_once(':')?;
    Some((
        h.trim_matches(|c| c == '[' || c == ']').to_string(),
        p.parse().ok()?,
    ))
}

fn health_target(args: &StartArgs) -> (String, u16) {
    let host = args.health_host.clone().unwrap_or_else(|| {
        let h = args.server.host.as_str();
        if h == "0.0.0.0" || h == "::" || h == "[::]" {
            net::local_node_ip()
        } else {
            h.to_string()
        }
    });
    (host, args.health_port.unwrap_or(args.server.port))
}

pub fn start(args: StartArgs) -> ExitCode {
    let token = match args.server.auth.token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = token.as_ref().map(Token::as_str);
    let files = RuntimeFiles::new();
    if let Some(pid) = files.read_pid() {
        if process_alive(pid) {
            println!("nanoctrl is already running (pid={pid})");
            return ExitCode::SUCCESS;
        }
        files.remove(); // stale
    }
    let (hhost, hport) = health_target(&args);
    let address = format!("{hhost}:{hport}");
    if net::health_check(&hhost, hport, token, Duration::from_millis(800)).is_ok() {
        println!("nanoctrl appears to be already running at http://{address} (no pid file managed by this CLI)");
        return ExitCode::SUCCESS;
    }

    if let Err(e) = std::fs::create_dir_all(&files.dir) {
        eprintln!("cannot create runtime dir {}: {e}", files.dir.display());
        return ExitCode::FAILURE;
    }
    let log_path = args.log_file.clone().unwrap_or_else(|| files.log.clone());
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open log file {}: {e}", log_path.display());
            return ExitCode::FAILURE;
        }
    };
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot locate own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let s = &args.server;
    // Secrets travel in the child's environment, not its argv (visible in `ps` and
    // recorded in nanoctrl.meta.json): the Redis URL (the environment wins over the
    // flag, which shows it redacted) and the token.
    let redis_url = s.effective_redis_url();
    let shown_urls: Vec<String> = crate::redis_conn::split_urls(&redis_url)
        .iter()
        .map(|u| net::redact(u))
        .collect();
    let mut cmd: Vec<String> = vec![
        exe.display().to_string(),
        "server".into(),
        "--host".into(),
        s.host.clone(),
        "--port".into(),
        s.port.to_string(),
        "--redis-url".into(),
        shown_urls.join(","),
        "--max-body-bytes".into(),
        s.max_body_bytes.to_string(),
        "--max-connections".into(),
        s.max_connections.to_string(),
        "--max-connections-per-ip".into(),
        s.max_connections_per_ip.to_string(),
        "--idle-timeout".into(),
        s.idle_timeout.to_string(),
    ];
    if let (None, Some(p)) = (&s.auth.token, &s.auth.token_file) {
        cmd.extend(["--token-file".into(), p.display().to_string()]);
    }
    let (out, err) = match (log.try_clone(), log.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            eprintln!("cannot duplicate log file handle");
            return ExitCode::FAILURE;
        }
    };
    // A new process group, so the terminal's Ctrl-C for this CLI does not reach it.
    let mut proc = Proc::new(&cmd[0]);
    proc.args(&cmd[1..])
        .env(REDIS_URL_ENV, &redis_url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(t) = &s.auth.token {
        proc.env(TOKEN_ENV, t);
    }
    let mut child = match std::os::unix::process::CommandExt::process_group(&mut proc, 0).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("failed to spawn {}: {e}", cmd[0]);
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    let meta = Meta {
        pid,
        address: address.clone(),
        cmd,
        log: log_path.display().to_string(),
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    };
    if let Err(e) = files.write(&meta) {
        eprintln!(
            "warning: cannot write pid/meta files in {}: {e}",
            files.dir.display()
        );
    }

    let deadline = Instant::now() + Duration::from_secs_f64(args.wait.max(0.0));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            files.remove();
            eprintln!(
                "nanoctrl exited during startup ({status}); last log lines from {}:",
                log_path.display()
            );
            for line in tail_from(&log_path, log_offset, 80) {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
        if net::health_check(&hhost, hport, token, Duration::from_millis(800)).is_ok() {
            println!("Local node IP: {}", net::local_node_ip());
            println!("nanoctrl started (pid={pid})");
            println!("address: http://{address}");
            println!("log: {}", log_path.display());
            return ExitCode::SUCCESS;
        }
        if Instant::now() >= deadline {
            println!("nanoctrl started (pid={pid}) but health check timed out");
            println!("address: http://{address}");
            println!("log: {}", log_path.display());
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(POLL);
    }
}

/// The last `n` lines written to `path` after byte `offset`.
fn tail_from(path: &PathBuf, offset: u64, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return vec![];
    }
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

pub fn status(args: StatusArgs) -> ExitCode {
    let files = RuntimeFiles::new();
    let Some(pid) = files.read_pid() else {
        println!("nanoctrl is not running (no pid file)");
        return ExitCode::FAILURE;
    };
    let meta = files.read_meta();
    let address = args
        .address
        .or_else(|| meta.as_ref().map(|m| m.address.clone()))
        .unwrap_or_default();
    let token = match args.auth.token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = process_alive(pid);
    println!("pid: {pid}");
    println!(
        "process: {}",
        if running { "running" } else { "not running" }
    );
    println!("address: {address}");
    let health = match split_address(&address) {
        Some((h, p)) => net::health_check(
            &h,
            p,
            token.as_ref().map(Token::as_str),
            Duration::from_millis(800),
        ),
        None => Err(format!("invalid address '{address}'")),
    };
    match health {
        Ok(()) => println!("health: ok"),
        Err(e) => println!("health: down ({e})"),
    }
    println!(
        "log: {}",
        meta.map(|m| m.log)
            .unwrap_or_else(|| files.log.display().to_string())
    );
    if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn stop(args: StopArgs) -> ExitCode {
    let files = RuntimeFiles::new();
    let Some(pid) = files.read_pid() else {
        println!("nanoctrl is not running");
        return ExitCode::SUCCESS;
    };
    if !process_alive(pid) {
        files.remove();
        println!("nanoctrl is not running (removed stale pid file, pid={pid})");
        return ExitCode::SUCCESS;
    }
    signal(pid, libc::SIGTERM);
    if wait_gone(pid, Duration::from_secs_f64(args.timeout.max(0.0))) {
        files.remove();
        println!("nanoctrl stopped (pid={pid})");
        return ExitCode::SUCCESS;
    }
    if args.force {
        signal(pid, libc::SIGKILL);
        if wait_gone(pid, Duration::from_secs(5)) {
            files.remove();
            println!("nanoctrl killed (pid={pid})");
            return ExitCode::SUCCESS;
        }
        eprintln!("nanoctrl (pid={pid}) survived SIGKILL");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "nanoctrl (pid={pid}) did not stop within {}s; rerun with --force",
        args.timeout
    );
    ExitCode::FAILURE
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !process_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_server_flags() {
        let cli =
            Cli::try_parse_from(["nanoctrl", "--port", "4000", "--host", "localhost"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.server.port, 4000);
        assert_eq!(cli.server.host, "localhost");
    }

    #[test]
    fn start_flags_parse() {
        let cli = Cli::try_parse_from([
            "nanoctrl",
            "start",
            "--port",
            "1",
            "--health-host",
            "h",
            "--health-port",
            "2",
            "--log-file",
            "/x",
            "--wait",
            "1.5",
        ])
        .unwrap();
        let Some(Command::Start(s)) = cli.command else {
            panic!()
        };
        assert_eq!((s.server.port, s.health_port, s.wait), (1, Some(2), 1.5));
    }

    #[test]
    fn addresses_split() {
        assert_eq!(
            split_address("http://127.0.0.1:3000"),
            Some(("127.0.0.1".into(), 3000))
        );
        assert_eq!(split_address("[::1]:3000"), Some(("::1".into(), 3000)));
        assert_eq!(split_address("nohost"), None);
    }
}
