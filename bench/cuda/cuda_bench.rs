//! GPU benchmark (needs a CUDA device; prints NOT RUN and exits 2 without one):
//! device-to-device bandwidth of the TCP endpoint (staging through the pinned pool)
//! against, in the same run, the floors: `cuMemcpyDtoD` on the device, pinned D2H + H2D
//! (what staging costs without a socket), and the same TCP endpoint on host memory (the
//! issue's target: TCP staging >= 0.8x host TCP for >= 16 MiB).
//!
//! usage: cargo run --release --example cuda_bench -- [--max-mib N] (default 256)
//!        ... -- --host-staged [--max-mib N]: no GPU needed; TCP on host memory against
//!        the same memory staged through the host copier (the pipeline's own cost).
//! Also the shared-memory endpoint between two processes (this binary re-run as the
//! peer, `--child`), device to device through CUDA IPC (issue target: >= 0.9x D2D
//! for >= 64 MiB); the row says `staged` if the parts did not go through IPC.
//! Prints a table and CSV rows (`csv,<size>,<name>,<GB/s>`).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys;
use dlslime::memory::device::{self, Copier, CudaCopier, HostCopier, StagingPool};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool};

#[path = "../common.rs"]
mod bench_common;

fn ok(r: sys::CUresult, what: &str) {
    assert_eq!(r, sys::CUresult::CUDA_SUCCESS, "{what}");
}

fn dev_alloc(len: usize) -> usize {
    let mut p: sys::CUdeviceptr = 0;
    // SAFETY: a context is current (bound in main); out-param local.
    ok(unsafe { sys::cuMemAlloc_v2(&mut p, len) }, "cuMemAlloc");
    p as usize
}

/// Best-of-`reps` GB/s of `f` moving `bytes`.
fn gbps(bytes: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    bytes as f64 / best.as_secs_f64() / 1e9
}

fn pair(pa: Arc<MemoryPool>, pb: Arc<MemoryPool>) -> (Arc<TcpEndpoint>, Arc<TcpEndpoint>) {
    let cfg = || TcpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let a = TcpEndpoint::new(&TcpContext::new(cfg()).unwrap(), pa).unwrap();
    let b = TcpEndpoint::new(&TcpContext::new(cfg()).unwrap(), pb).unwrap();
    a.connect(&b.endpoint_info()).unwrap();
    b.connect(&a.endpoint_info()).unwrap();
    (a, b)
}

/// `--host-staged`: no GPU needed. The TCP endpoint on host memory against the same
/// memory registered as staged (the host copier), so every byte takes the staging
/// pipeline: what the pool, the chunking and the copy thread cost over plain TCP.
fn host_staged(max: usize) {
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![1u8; max]).collect();
    let pools: Vec<Arc<MemoryPool>> = (0..4).map(|_| MemoryPool::new()).collect();
    for (i, (b, p)) in bufs.iter_mut().zip(&pools).enumerate() {
        // SAFETY: the vectors live until this function returns, after the last operation.
        unsafe {
            if i < 2 {
                p.register(Some("m"), b.as_mut_ptr(), max).unwrap();
            } else {
                p.register_staged(Some("m"), b.as_mut_ptr(), max, Arc::new(HostCopier::new()))
                    .unwrap();
            }
        }
    }
    let (ha, _hb) = pair(pools[0].clone(), pools[1].clone());
    let (sa, _sb) = pair(pools[2].clone(), pools[3].clone());
    let (rh, rs) = (
        ha.remote_pool().handle("m").unwrap(),
        sa.remote_pool().handle("m").unwrap(),
    );
    println!(
        "host-staged: staging pool {:?}, chunk {} B, {} buffers, depth {}",
        StagingPool::global().memory(),
        StagingPool::global().config().chunk,
        StagingPool::global().config().buffers,
        StagingPool::global().config().depth
    );
    println!(
        "{:>10} {:>10} {:>10} {:>8}",
        "size", "tcp host", "tcp staged", "ratio"
    );
    let mut size = 64 << 10;
    while size <= max {
        let reps = if size >= 64 << 20 { 3 } else { 10 };
        let write = |ep: &Arc<TcpEndpoint>, r: u32| {
            ep.write(
                &[Assignment::new(0, r, 0, 0, size as u64)],
                Some(Duration::from_secs(300)),
            )
            .unwrap()
            .wait()
            .unwrap()
        };
        let host = gbps(size, reps, || write(&ha, rh));
        let staged = gbps(size, reps, || write(&sa, rs));
        println!(
            "{size:>10} {host:>10.2} {staged:>10.2} {:>8.2}",
            staged / host
        );
        println!("csv,{size},tcp_host,{host:.3}");
        println!("csv,{size},tcp_host_staged,{staged:.3}");
        size *= 4;
    }
}

/// `--child <bytes>`: the shared-memory peer, a device region "d" of that size; its
/// endpoint info out, the parent's in, then serves until stdin closes.
fn shm_child(len: usize) {
    let d = device::driver().unwrap();
    d.bind(0).unwrap();
    let buf = dev_alloc(len);
    let pool = MemoryPool::new();
    // SAFETY: the allocation lives until the process exits.
    unsafe { pool.register(Some("d"), buf as *mut u8, len) }.unwrap();
    let ep = ShmEndpoint::new(pool, ShmConfig::default()).unwrap();
    for _ in bench_common::info_to_parent(&ep) {}
    ep.shutdown();
}

/// The parent's side of the shm pair: the child's endpoint and ours over `pool`.
fn shm_pair(pool: Arc<MemoryPool>, len: usize) -> (ShmEndpoint, bench_common::InfoChild) {
    let exe = std::env::current_exe().unwrap();
    let mut child = bench_common::spawn_info_child(&exe, &[&len.to_string()]);
    let ep = ShmEndpoint::new(pool, ShmConfig::default()).unwrap();
    writeln!(child.stdin, "{}", ep.endpoint_info()).unwrap();
    ep.connect(&child.info).unwrap();
    (ep, child)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        shm_child(args[i + 1].parse().unwrap());
        return;
    }
    let max_mib: usize = args
        .iter()
        .position(|a| a == "--max-mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let max = max_mib << 20;
    if args.iter().any(|a| a == "--host-staged") {
        host_staged(max);
        return;
    }
    let d = match device::driver() {
        Ok(d) if d.device_count().unwrap_or(0) > 0 => d,
        Ok(_) => {
            println!("bench/cuda NOT RUN: no CUDA device");
            std::process::exit(2);
        }
        Err(e) => {
            println!("bench/cuda NOT RUN: {}", e.message());
            std::process::exit(2);
        }
    };
    d.bind(0).unwrap();
    let (src, dst) = (dev_alloc(max), dev_alloc(max));
    let mut host_a = vec![1u8; max];
    let mut host_b = vec![0u8; max];
    let copier = CudaCopier::new(0).unwrap();
    // Pinned host buffer for the D2H+H2D floor.
    let mut pinned: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: context current; out-param local.
    ok(
        unsafe { sys::cuMemHostAlloc(&mut pinned, max, 0) },
        "cuMemHostAlloc",
    );

    // Device endpoints: src registered on A, dst on B (locations learned from pointers).
    let (pa, pb) = (MemoryPool::new(), MemoryPool::new());
    // SAFETY: the allocations live until the process exits.
    let (ls, ld) = unsafe {
        (
            pa.register(Some("d"), src as *mut u8, max).unwrap(),
            pb.register(Some("d"), dst as *mut u8, max).unwrap(),
        )
    };
    let (da, _db) = pair(pa, pb);
    let rd = da.remote_pool().handle("d").unwrap();
    // Host endpoints for the same-run host TCP floor.
    let (ph, qh) = (MemoryPool::new(), MemoryPool::new());
    // SAFETY: the vectors live until main returns, after the last operation.
    let (lh, _) = unsafe {
        (
            ph.register(Some("h"), host_a.as_mut_ptr(), max).unwrap(),
            qh.register(Some("h"), host_b.as_mut_ptr(), max).unwrap(),
        )
    };
    let (ha, _hb) = pair(ph, qh);
    let rh = ha.remote_pool().handle("h").unwrap();
    let _ = ld;
    // Shared memory to another process: CUDA IPC.
    let ps = MemoryPool::new();
    // SAFETY: as above.
    let lsh = unsafe { ps.register(Some("s"), src as *mut u8, max) }.unwrap();
    let (sa, peer) = shm_pair(ps, max);
    let rs = sa.remote_pool().handle("d").unwrap();

    println!(
        "staging pool: {:?}, chunk {} B, {} buffers",
        StagingPool::global().memory(),
        StagingPool::global().config().chunk,
        StagingPool::global().config().buffers
    );
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "size", "D2D", "D2H+H2D", "tcp host", "tcp dev", "dev/host", "shm ipc", "ipc/D2D"
    );
    let mut size = 64 << 10;
    while size <= max {
        let reps = if size >= 64 << 20 { 3 } else { 10 };
        let d2d = gbps(size, reps, || {
            // SAFETY: valid device ranges.
            ok(
                unsafe { sys::cuMemcpyDtoD_v2(dst as _, src as _, size) },
                "DtoD",
            );
            // SAFETY: synchronous copy ordering on the legacy stream; wait for it.
            ok(unsafe { sys::cuCtxSynchronize() }, "sync");
        });
        let bounce = gbps(size, reps, || {
            // SAFETY: valid ranges (pinned host buffer of `max` bytes).
            unsafe {
                copier.copy_to_host(src, pinned.cast(), size).unwrap();
                copier.copy_from_host(pinned.cast(), dst, size).unwrap();
            }
        });
        let write = |ep: &dyn Endpoint, l: u32, r: u32| {
            ep.write(
                &[Assignment::new(l, r, 0, 0, size as u64)],
                Some(Duration::from_secs(300)),
            )
            .unwrap()
            .wait()
            .unwrap()
        };
        let tcp_host = gbps(size, reps, || write(&*ha, lh, rh));
        let tcp_dev = gbps(size, reps, || write(&*da, ls, rd));
        let ipc0 = sa.stats().ipc.load(std::sync::atomic::Ordering::Relaxed);
        let shm_dev = gbps(size, reps, || write(&sa, lsh, rs));
        let via_ipc = sa.stats().ipc.load(std::sync::atomic::Ordering::Relaxed) > ipc0;
        println!(
            "{:>10} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>8.2}{}",
            size,
            d2d,
            bounce,
            tcp_host,
            tcp_dev,
            tcp_dev / tcp_host,
            shm_dev,
            shm_dev / d2d,
            if via_ipc { "" } else { " staged (no IPC)" }
        );
        for (name, v) in [
            ("d2d", d2d),
            ("d2h_h2d", bounce),
            ("tcp_host", tcp_host),
            ("tcp_device", tcp_dev),
            (if via_ipc { "shm_ipc" } else { "shm_staged" }, shm_dev),
        ] {
            println!("csv,{size},{name},{v:.3}");
        }
        size *= 4;
    }
    sa.shutdown();
    drop(peer.stdin);
    let mut child = peer.child;
    let _ = child.wait();
}
