//! This agent's owner token: NanoCtrl lets only the holder of an alias's owner token
//! re-register it, heartbeat it, clean it up or post its topology while the agent is
//! live, so nobody can take a live alias over (see NanoCtrl's `owner.rs`).
//!
//! Each incarnation makes a new random token and registers with it. It also keeps the
//! token in a private file (`$XDG_RUNTIME_DIR/dlslime-owners/`, else
//! `/tmp/dlslime-owners-<uid>/`; the directory 0700, the file 0600, both checked to be
//! ours), named after the scope and alias, with its pid. A process restarted on the same
//! host after a crash finds the file of its dead predecessor and presents that token to
//! clean the old record up at once, instead of waiting for its heartbeats to time out.
//! The file is removed at shutdown.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use serde_json::{json, Value};

/// A new owner token: 32 random bytes, hex.
pub(super) fn new_token() -> String {
    let b: [u8; 32] = rand::random();
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The private directory, created if needed; None when it is not safely ours.
fn dir() -> Option<PathBuf> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let d = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x).join("dlslime-owners"),
        None => std::env::temp_dir().join(format!("dlslime-owners-{uid}")),
    };
    let _ = DirBuilder::new().mode(0o700).create(&d);
    // not a symlink, a directory, ours, nobody else's to read or write
    let m = std::fs::symlink_metadata(&d).ok()?;
    (m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0).then_some(d)
}

/// The file of `(scope, alias)`: named by a FNV-1a hash (stable across versions, so a
/// newer build finds an older one's file), the names themselves inside.
fn file(scope: Option<&str>, alias: &str) -> Option<PathBuf> {
    let bytes = scope.unwrap_or("").bytes().chain([0]).chain(alias.bytes());
    let h = bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    Some(dir()?.join(format!("{h:016x}.json")))
}

/// Reads the file of `(scope, alias)` if it is that alias's (a hash collision is not).
fn read(scope: Option<&str>, alias: &str) -> Option<(PathBuf, Value)> {
    let p = file(scope, alias)?;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
    let mine = v["scope"].as_str() == Some(scope.unwrap_or("")) && v["alias"] == alias;
    mine.then_some((p, v))
}

/// Records `token` as this process's, for `(scope, alias)`. Best effort.
pub(super) fn remember(scope: Option<&str>, alias: &str, token: &str) {
    let Some(p) = file(scope, alias) else { return };
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    let v = json!({"scope": scope.unwrap_or(""), "alias": alias, "token": token,
                   "pid": std::process::id()});
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(v.to_string().as_bytes()));
    if written.is_err() || std::fs::rename(&tmp, &p).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The token of a dead predecessor on this host (its pid is gone), if its file is here.
pub(super) fn predecessor(scope: Option<&str>, alias: &str) -> Option<String> {
    let (_, v) = read(scope, alias)?;
    let pid = v["pid"].as_i64()?;
    if pid == std::process::id() as i64 || pid_alive(pid) {
        return None;
    }
    v["token"].as_str().map(str::to_string)
}

/// Removes the file if it still holds `token` (a successor may have replaced it).
pub(super) fn forget(scope: Option<&str>, alias: &str, token: &str) {
    if let Some((p, v)) = read(scope, alias) {
        if v["token"] == token {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Whether process `pid` exists (on this host). Unknown counts as alive.
pub(super) fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i32::MAX as i64 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence; no memory is involved.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_predecessor_forget() {
        let scope = format!("owner-test-{}", std::process::id());
        let (a, t) = ("alias", new_token());
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        remember(Some(&scope), a, &t);
        // our own pid is alive: not a predecessor
        assert_eq!(predecessor(Some(&scope), a), None);
        let (p, _) = read(Some(&scope), a).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        // a dead pid: the token is handed over
        let dead = json!({"scope": scope, "alias": a, "token": t, "pid": i32::MAX - 7});
        std::fs::write(&p, dead.to_string()).unwrap();
        assert_eq!(predecessor(Some(&scope), a).as_deref(), Some(t.as_str()));
        assert_eq!(predecessor(Some(&scope), "other"), None);
        forget(Some(&scope), a, "not-mine");
        assert!(p.exists());
        forget(Some(&scope), a, &t);
        assert!(!p.exists());
    }
}
