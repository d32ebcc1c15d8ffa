//! The floor of an RPC echo of a large payload over shared memory: two copies across two
//! processes, measured in the same run as the echo (`rpc_native_bench`).

use std::time::{Duration, Instant};

use crate::floor::{await_value, post, PingPong};

/// A shared mapping of `len` bytes in an inheritable memfd; returns (fd, base).
fn shared_area(len: usize) -> (i32, *mut u8) {
    // SAFETY: plain system calls on a NUL-terminated name and the fd they return; the
    // results are checked.
    unsafe {
        let fd = libc::memfd_create(c"copyecho".as_ptr(), 0);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        (fd, map_area(fd, len))
    }
}

fn map_area(fd: i32, len: usize) -> *mut u8 {
    // SAFETY: a fresh shared mapping of `len` bytes of `fd` (at least that long): it aliases
    // no Rust memory, and failure is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as *mut u8
}

/// The floor of an echo that copies its payload twice across two processes: the parent
/// copies `size` bytes from private memory into a shared request buffer and raises
/// `ping`; the child (spinning) copies the request into a shared reply buffer and raises
/// `pong`. Unlike two memcpys in one thread, every line crosses between the two cores
/// (the writer takes lines the other side read last), which is what an RPC echo over
/// shared memory pays at the least. `n` round trips against `exe --child copyecho <fd>
/// <size> <n>` ([`child`]); returns their times.
pub fn times(exe: &std::path::Path, size: usize, n: u32) -> Vec<Duration> {
    let len = 4096 + 2 * size;
    let (fd, base) = shared_area(len);
    let mut child = std::process::Command::new(exe)
        .args([
            "--child",
            "copyecho",
            &fd.to_string(),
            &size.to_string(),
            &n.to_string(),
        ])
        .spawn()
        .unwrap();
    let pp = PingPong { base };
    let msg = vec![5u8; size];
    let mut out = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let t = Instant::now();
        // SAFETY: the request buffer is `size` bytes at offset 4096 of the mapping, which
        // the child reads only after `ping` says it is written (and before `pong`).
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), base.add(4096), size) };
        post(pp.ping(), i, false);
        await_value(pp.pong(), i, false);
        out.push(t.elapsed());
    }
    child.wait().unwrap();
    // SAFETY: the mapping made above, unused from here on.
    unsafe { libc::munmap(base as *mut libc::c_void, len) };
    out
}

/// The child of [`times`]; `args` are `<fd> <size> <n>`.
pub fn child(args: &[String]) {
    let fd: i32 = args[0].parse().unwrap();
    let size: usize = args[1].parse().unwrap();
    let n: u32 = args[2].parse().unwrap();
    let base = map_area(fd, 4096 + 2 * size);
    let pp = PingPong { base };
    for i in 1..=n {
        await_value(pp.ping(), i, false);
        // SAFETY: request and reply buffers are distinct `size`-byte ranges of the mapping;
        // the parent does not touch them between its `ping` and our `pong`.
        unsafe { std::ptr::copy_nonoverlapping(base.add(4096), base.add(4096 + size), size) };
        post(pp.pong(), i, false);
    }
}
