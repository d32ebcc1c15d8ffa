//! The CLI: `server` startup failures, env precedence, hostname binds, graceful shutdown,
//! and the `start`/`status`/`stop` lifecycle with its runtime dir.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(NANOCTRL);
    cmd.args(args)
        .env("NANOCTRL_RUNTIME_DIR", dir)
        .env_remove("NANOCTRL_REDIS_URL")
        .env_remove("NANOCTRL_TOKEN")
        .env("NANOCTRL_RUST_LOG", "info")
        .stdin(Stdio::null());
    output_with_deadline(cmd, Duration::from_secs(60))
}

fn output_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nanoctrl");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            libc_kill(pid as i32, 9);
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    }
}

fn libc_kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned (or read from its own runtime dir).
    unsafe { libc::kill(pid, sig) };
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that a command exited with `code` and printed `what` (stdout or stderr).
#[track_caller]
fn says(out: &Output, code: i32, what: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "{t}");
    assert!(t.contains(what), "expected {what:?} in: {t}");
}

/// Kills whatever server a `start` left behind when the test ends, pass or fail.
struct StartedGuard<'a>(&'a Path);
impl Drop for StartedGuard<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("nanoctrl.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                libc_kill(pid, 9);
            }
        }
    }
}

/// `nanoctrl <verb>` bound to 127.0.0.1:`port` with `redis_url`, then `more`.
fn loopback<'a>(
    verb: &'a str,
    port: &'a str,
    redis_url: &'a str,
    more: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec![
        verb,
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--redis-url",
        redis_url,
    ];
    v.extend_from_slice(more);
    v
}

fn dead_redis_url() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

#[test]
fn server_exits_nonzero_naming_the_url_when_redis_is_unreachable() {
    let url = dead_redis_url();
    let mut cmd = Command::new(NANOCTRL);
    cmd.args(loopback("server", &free_port().to_string(), &url, &[]))
        .env_remove("NANOCTRL_REDIS_URL");
    let out = output_with_deadline(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("Failed to connect to Redis at") && t.contains(&url),
        "{t}"
    );
    assert!(t.contains("NANOCTRL_REDIS_URL"), "{t}");

    // The environment overrides the flag (original precedence).
    let redis = Redis::start();
    let mut cmd = Command::new(NANOCTRL);
    cmd.args(loopback(
        "server",
        &free_port().to_string(),
        &redis.url,
        &[],
    ))
    .env("NANOCTRL_REDIS_URL", &url);
    let out = output_with_deadline(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(text(&out).contains(&url), "{}", text(&out));

    // A malformed URL is also a clear error.
    let mut cmd = Command::new(NANOCTRL);
    cmd.args([
        "server",
        "--port",
        &free_port().to_string(),
        "--redis-url",
        "not-a-url",
    ])
    .env_remove("NANOCTRL_REDIS_URL");
    let out = output_with_deadline(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(text(&out).contains("not-a-url"), "{}", text(&out));
}

#[test]
fn env_redis_url_wins_hostname_bind_works_and_sigterm_is_graceful() {
    let redis = Redis::start();
    let port = free_port();
    let dir = TempDir::new("nanoctrl-srv-env");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new(NANOCTRL)
        .args([
            "--host",
            "localhost",
            "--port",
            &port.to_string(),
            "--redis-url",
            &dead_redis_url(),
        ])
        .env("NANOCTRL_REDIS_URL", &redis.url)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(child);
    wait_for(Duration::from_secs(20), "nanoctrl on localhost", || {
        health(port).then_some(())
    });
    libc_kill(guard.0.id() as i32, libc::SIGTERM);
    let status = wait_for(Duration::from_secs(15), "graceful exit", || {
        guard.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "SIGTERM should exit 0, got {status:?}");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("shutdown signal received"), "{log}");
}

#[test]
fn start_status_stop_lifecycle() {
    let redis = Redis::start();
    let dir = TempDir::new("nanoctrl-rt");
    let _guard = StartedGuard(dir.path());
    let port = free_port().to_string();
    let start_args = loopback("start", &port, &redis.url, &["--wait", "20"]);

    says(
        &run(dir.path(), &["status"]),
        1,
        "nanoctrl is not running (no pid file)",
    );

    let out = run(dir.path(), &start_args);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("nanoctrl started (pid="), "{t}");
    assert!(
        t.contains("Local node IP:") && t.contains("address:") && t.contains("log:"),
        "{t}"
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("nanoctrl.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("nanoctrl.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["pid"], pid);
    assert_eq!(meta["address"], format!("127.0.0.1:{port}"));
    assert_eq!(meta["cmd"][1], "server");
    assert!(meta["log"].as_str().unwrap().ends_with("nanoctrl.log"));
    assert!(meta["started_at"].as_f64().unwrap() > 1.0e9);
    assert!(health(port.parse().unwrap()));

    // Idempotent.
    says(
        &run(dir.path(), &start_args),
        0,
        &format!("nanoctrl is already running (pid={pid})"),
    );

    let out = run(dir.path(), &["status"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!("pid: {pid}"))
            && t.contains("process: running")
            && t.contains("health: ok"),
        "{t}"
    );
    let out = run(
        dir.path(),
        &["status", "--address", &format!("127.0.0.1:{}", free_port())],
    );
    assert!(text(&out).contains("health: down ("), "{}", text(&out));

    says(
        &run(dir.path(), &["stop"]),
        0,
        &format!("nanoctrl stopped (pid={pid})"),
    );
    assert!(!dir.path().join("nanoctrl.pid").exists());
    assert!(!dir.path().join("nanoctrl.meta.json").exists());
    let log = std::fs::read_to_string(dir.path().join("nanoctrl.log")).unwrap();
    assert!(
        log.contains("NanoCtrl stopped"),
        "SIGTERM drained gracefully: {log}"
    );

    let out = run(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    says(&run(dir.path(), &["stop"]), 0, "nanoctrl is not running");

    // A stale pid file: status says not running (rc 1); start replaces it.
    std::fs::write(dir.path().join("nanoctrl.pid"), "999999999\n").unwrap();
    says(&run(dir.path(), &["status"]), 1, "process: not running");
    says(&run(dir.path(), &start_args), 0, "nanoctrl started");

    // Something healthy at the address but no pid file: not started twice.
    let pid_file = dir.path().join("nanoctrl.pid");
    let saved = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    says(
        &run(dir.path(), &start_args),
        0,
        "appears to be already running",
    );
    std::fs::write(&pid_file, saved).unwrap();
    assert!(run(dir.path(), &["stop"]).status.success());
}

#[test]
fn start_reports_early_exit_with_the_log_tail() {
    let dir = TempDir::new("nanoctrl-rt-fail");
    let _guard = StartedGuard(dir.path());
    let url = dead_redis_url();
    let port = free_port().to_string();
    let out = run(
        dir.path(),
        &loopback("start", &port, &url, &["--wait", "30"]),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("Failed to connect to Redis at") && t.contains(&url),
        "{t}"
    );
    assert!(
        !dir.path().join("nanoctrl.pid").exists(),
        "pid file cleaned up"
    );
}

#[test]
fn stop_escalates_only_with_force() {
    let dir = TempDir::new("nanoctrl-rt-force");
    // A process that ignores SIGTERM stands in for a wedged server.
    let stubborn = Command::new("sh")
        .args(["-c", "trap '' TERM; exec sleep 60"])
        .spawn()
        .unwrap();
    let mut g = KillOnDrop(stubborn);
    std::thread::sleep(Duration::from_millis(200)); // let the trap install
    std::fs::write(dir.path().join("nanoctrl.pid"), format!("{}\n", g.0.id())).unwrap();
    says(
        &run(dir.path(), &["stop", "--timeout", "0.6"]),
        1,
        "rerun with --force",
    );
    assert!(g.0.try_wait().unwrap().is_none(), "still running");
    let out = run(dir.path(), &["stop", "--timeout", "0.6", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_for(Duration::from_secs(10), "kill", || g
        .0
        .try_wait()
        .ok()
        .flatten())
    .code()
    .is_none());
    assert!(!dir.path().join("nanoctrl.pid").exists());
}

#[test]
fn runtime_dir_precedence() {
    let xdg = TempDir::new("nanoctrl-xdg");
    let own = TempDir::new("nanoctrl-own");
    let sub = xdg.path().join("nanoctrl");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("nanoctrl.pid"), "999999999\n").unwrap();
    let status = |envs: &[(&str, &Path)]| {
        let mut cmd = Command::new(NANOCTRL);
        cmd.arg("status")
            .env_remove("NANOCTRL_RUNTIME_DIR")
            .env_remove("XDG_RUNTIME_DIR");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        text(&output_with_deadline(cmd, Duration::from_secs(30)))
    };
    // XDG_RUNTIME_DIR/nanoctrl is used when NANOCTRL_RUNTIME_DIR is unset...
    assert!(status(&[("XDG_RUNTIME_DIR", xdg.path())]).contains("pid: 999999999"));
    // ...and NANOCTRL_RUNTIME_DIR wins over it.
    let t = status(&[
        ("XDG_RUNTIME_DIR", xdg.path()),
        ("NANOCTRL_RUNTIME_DIR", own.path()),
    ]);
    assert!(t.contains("no pid file"), "{t}");
}

#[test]
fn version_and_help() {
    let out = output_with_deadline(
        {
            let mut c = Command::new(NANOCTRL);
            c.arg("--version");
            c
        },
        Duration::from_secs(10),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nanoctrl 0.1.0"
    );
    let mut c = Command::new(NANOCTRL);
    c.arg("--help");
    let help = text(&output_with_deadline(c, Duration::from_secs(10)));
    for verb in ["server", "start", "stop", "status", "--redis-url"] {
        assert!(help.contains(verb), "{help}");
    }
}

/// `start` with a token and a password in the Redis URL: neither shows in the server's
/// command line (visible to every user in `ps`), in `nanoctrl.meta.json` or in the log;
/// `status` needs the token for its health check; the server refuses callers without it.
#[test]
fn start_keeps_secrets_out_of_argv_meta_and_log() {
    let redis = Redis::start_with(&["--requirepass", "redis-pw-9"], ":redis-pw-9");
    let dir = TempDir::new("nanoctrl-cli-secret");
    let _guard = StartedGuard(dir.path());
    let port = free_port().to_string();
    let token = "cli-token-4c1a";
    let out = run(
        dir.path(),
        &loopback(
            "start",
            &port,
            &redis.url,
            &["--token", token, "--wait", "20"],
        ),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("nanoctrl started"), "{t}");
    assert!(
        !t.contains("health check timed out"),
        "the health check sends the token: {t}"
    );
    let pid: u32 = std::fs::read_to_string(dir.path().join("nanoctrl.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let meta = std::fs::read_to_string(dir.path().join("nanoctrl.meta.json")).unwrap();
    for (what, text) in [("argv", &cmdline), ("meta", &meta)] {
        assert!(!text.contains(token), "{what}: {text}");
        assert!(!text.contains("redis-pw-9"), "{what}: {text}");
        assert!(
            text.contains("***"),
            "{what} shows the URL redacted: {text}"
        );
    }
    let port: u16 = port.parse().unwrap();
    assert!(!health_with(port, None));
    assert!(health_with(port, Some(token)));
    let out = run(dir.path(), &["status"]);
    assert!(
        text(&out).contains("health: down (unexpected response: HTTP/1.1 401"),
        "{}",
        text(&out)
    );
    let mut cmd = Command::new(NANOCTRL);
    cmd.args(["status"])
        .env("NANOCTRL_RUNTIME_DIR", dir.path())
        .env("NANOCTRL_TOKEN", token);
    let out = output_with_deadline(cmd, Duration::from_secs(30));
    assert!(text(&out).contains("health: ok"), "{}", text(&out));
    let out = run(dir.path(), &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = std::fs::read_to_string(dir.path().join("nanoctrl.log")).unwrap();
    assert!(!log.contains(token) && !log.contains("redis-pw-9"), "{log}");
    assert!(log.contains("requires a bearer token"), "{log}");
}
