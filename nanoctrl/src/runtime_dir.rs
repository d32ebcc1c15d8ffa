//! Where `start`/`stop`/`status` keep their state: the pid file, the meta file and the
//! default log, in the original's runtime dir with the original's file names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `$NANOCTRL_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/nanoctrl`, else `/tmp/nanoctrl`.
pub fn runtime_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = non_empty("NANOCTRL_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = non_empty("XDG_RUNTIME_DIR") {
        return Path::new(&d).join("nanoctrl");
    }
    PathBuf::from("/tmp/nanoctrl")
}

/// Contents of `nanoctrl.meta.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    pub pid: u32,
    /// `host:port` the health check targets.
    pub address: String,
    pub cmd: Vec<String>,
    pub log: String,
    /// Unix seconds.
    pub started_at: f64,
}

pub struct RuntimeFiles {
    pub dir: PathBuf,
    pub pid: PathBuf,
    pub meta: PathBuf,
    pub log: PathBuf,
}

impl RuntimeFiles {
    pub fn new() -> Self {
        let dir = runtime_dir();
        Self {
            pid: dir.join("nanoctrl.pid"),
            meta: dir.join("nanoctrl.meta.json"),
            log: dir.join("nanoctrl.log"),
            dir,
        }
    }

    pub fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid).ok()?.trim().parse().ok()
    }

    pub fn read_meta(&self) -> Option<Meta> {
        serde_json::from_str(&std::fs::read_to_string(&self.meta).ok()?).ok()
    }

    pub fn write(&self, meta: &Meta) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&self.pid, format!("{}\n", meta.pid))?;
        std::fs::write(
            &self.meta,
            serde_json::to_string_pretty(meta).unwrap_or_default(),
        )
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.pid);
        let _ = std::fs::remove_file(&self.meta);
    }
}

/// Is `pid` a live process? `kill(pid, 0)`, with zombies counted as dead: a server whose
/// parent has not reaped it yet must not make `stop` wait for nothing.
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; it delivers nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // State is the first field after the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                != Some('Z')
        }
        Err(_) => true,
    }
}

/// Send `sig` to `pid`; false if the process was already gone.
pub fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: plain kill(2) on a pid we read from our own pid file.
    unsafe { libc::kill(pid, sig) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(0));
        assert!(!process_alive(i32::MAX));
    }
}
