//! Who owns an attempt, and until when: the process id, the lease clock, and the
//! liveness test the reclaim rules use.
//!
//! Every process that can touch a ring's headers maps the same memory, so they are on
//! one host: `CLOCK_MONOTONIC` and process ids mean the same to all of them. (Processes
//! in different pid namespaces sharing a ring see each other as dead; their attempts are
//! then reclaimed early, which costs a retry, never a torn read: a reader only keeps bytes
//! its commit confirmed.)

use std::time::Duration;

/// `CLOCK_MONOTONIC` now, in nanoseconds (the clock of every process on the host).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The lease deadline `lease` from now (`u64::MAX` for no lease).
pub fn lease_until(lease: Option<Duration>) -> u64 {
    match lease {
        None => u64::MAX,
        Some(d) => now_ns().saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
    }
}

/// Whether process `pid` can still run (`kill(pid, 0)`, EPERM meaning it exists; a
/// zombie, killed but not reaped yet, counts as dead).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as i32, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) S ..."; the comm may contain spaces and parentheses.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(st) => !matches!(
            st.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => true,
    }
}

/// The reclaim rule: an attempt's owner can no longer finish it once its lease passed
/// or its process is gone.
pub fn owner_gone(pid: u32, lease_until: u64) -> bool {
    lease_until <= now_ns() || !pid_alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_and_leases() {
        assert!(pid_alive(std::process::id()));
        // pid_max is at most 2^22 on Linux
        assert!(!pid_alive((1 << 22) + 12345));
        assert!(!owner_gone(std::process::id(), u64::MAX));
        assert!(owner_gone(std::process::id(), now_ns() - 1));
        assert!(owner_gone((1 << 22) + 12345, u64::MAX));
        // a zombie (exited, not reaped) is dead
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let t = std::time::Instant::now();
        while pid_alive(pid) {
            assert!(t.elapsed() < Duration::from_secs(10), "child never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert_eq!(lease_until(None), u64::MAX);
        let l = lease_until(Some(Duration::from_secs(1)));
        assert!(l > now_ns() && l <= now_ns() + 1_000_000_000);
    }
}
