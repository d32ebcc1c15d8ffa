//! GPU tests: real CUDA device memory. NOT part of `cargo test` / `make test` (CI has no
//! GPU): `make test-gpu` (scripts/test-gpu.sh) runs them, and prints NOT RUN and fails
//! where there is no CUDA device. Every test here first asserts a device is present, so
//! a run without one can never pass.
//!
//! * device ↔ device over TCP between two processes (staging through pinned buffers),
//!   1 KiB … 1 GiB (capped by free device memory), content checked on the device;
//! * a peer killed mid-transfer: the pending operation fails, nothing hangs;
//! * stream ordering of the CUDA copier: a memset queued on a stream is seen by a copy
//!   queued after it on that stream;
//! * CUDA IPC between two processes: one exports a device region, the other opens it
//!   and copies device to device, content checked;
//! * shared memory and RDMA refuse device regions (Unsupported), TCP accepts them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{check_pattern, check_reply, fill_pattern, Peer};
use cudarc::driver::sys;
use dlslime::memory::device::alloc::{DeviceAlloc, MemoryKind};
use dlslime::memory::device::{
    self, dmabuf, ipc, stream, Copier, CudaCopier, Location, StagingPool,
};
use dlslime::transport::shm::{ShmConfig, ShmEndpoint};
use dlslime::transport::tcp::{TcpConfig, TcpContext, TcpEndpoint};
use dlslime::{Assignment, Endpoint, MemoryPool, Status};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn ok(r: sys::CUresult, what: &str) {
    assert_eq!(r, sys::CUresult::CUDA_SUCCESS, "{what}");
}

/// Device 0 must exist: a run without a GPU fails here (scripts/test-gpu.sh says NOT RUN
/// before it gets this far).
fn gpu() -> &'static device::Driver {
    let d = device::driver().expect("make test-gpu needs a CUDA driver");
    assert!(d.device_count().unwrap() > 0, "no CUDA device");
    d.bind(0).unwrap();
    d
}

/// A device allocation on device 0, freed on drop.
struct DevBuf {
    ptr: usize,
    len: usize,
}

/// A non-blocking CUDA stream on device 0, destroyed on drop.
struct Stream(sys::CUstream);

impl Stream {
    fn new() -> Stream {
        gpu();
        let mut s: sys::CUstream = std::ptr::null_mut();
        // SAFETY: a context is current (gpu()); the out-param is a local. Flag 1:
        // CU_STREAM_NON_BLOCKING.
        ok(unsafe { sys::cuStreamCreate(&mut s, 1) }, "cuStreamCreate");
        Stream(s)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: created in `new` and destroyed only here, after everything that used it
        // (declared after it, so dropped before it).
        let _ = unsafe { sys::cuStreamDestroy_v2(self.0) };
    }
}

impl DevBuf {
    fn new(len: usize) -> DevBuf {
        gpu();
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: a context is current (gpu()); the out-param is a local.
        ok(unsafe { sys::cuMemAlloc_v2(&mut p, len) }, "cuMemAlloc");
        DevBuf {
            ptr: p as usize,
            len,
        }
    }

    fn upload(&self, host: &[u8]) {
        gpu();
        // SAFETY: host and device ranges are valid for host.len() <= len bytes.
        ok(
            unsafe { sys::cuMemcpyHtoD_v2(self.ptr as _, host.as_ptr().cast(), host.len()) },
            "cuMemcpyHtoD",
        );
    }

    fn download(&self, off: usize, len: usize) -> Vec<u8> {
        gpu();
        let mut v = vec![0u8; len];
        // SAFETY: valid ranges.
        ok(
            unsafe { sys::cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), (self.ptr + off) as _, len) },
            "cuMemcpyDtoH",
        );
        v
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc above; no operation uses it any more.
        unsafe {
            let _ = sys::cuMemFree_v2(self.ptr as _);
        }
    }
}

/// The deadline of an operation in these tests (device copies are slow under load).
const DEADLINE: Option<Duration> = Some(Duration::from_secs(120));

/// The first `len` bytes of local region `local` and of remote region `remote`.
fn whole(local: u32, remote: u32, len: usize) -> [Assignment; 1] {
    [Assignment::new(local, remote, 0, 0, len as u64)]
}

fn ctx() -> Arc<TcpContext> {
    TcpContext::new(TcpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .unwrap()
}

/// An endpoint of `transport` ("tcp" or "shm") over a fresh pool.
fn endpoint(transport: &str) -> Arc<dyn Endpoint> {
    match transport {
        "shm" => Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap()),
        _ => TcpEndpoint::new(&ctx(), MemoryPool::new()).unwrap(),
    }
}

fn max_len() -> usize {
    std::env::var("DLSLIME_GPU_TEST_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

// The child: a device region "buf" registered with the plain call (its location learned
// from the pointer), checked and filled on command.
common::peer_entry!(fn gpu_peer(parent) {
    let len = max_len();
    let buf = DevBuf::new(len);
    let ep = endpoint(&std::env::var("GPU_TRANSPORT").unwrap_or_default());
    // SAFETY: `buf` outlives the endpoint's use (shutdown below, before it drops).
    let h = unsafe { ep.register_memory_region("buf", buf.ptr as *mut u8, len) }.unwrap();
    assert_eq!(
        ep.memory_pool().region(h).unwrap().location,
        Location::Device(0)
    );
    parent.connect_endpoint(&*ep);
    while let Some(line) = parent.recv() {
        let v: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| v[i].parse::<usize>().unwrap();
        match v[0] {
            "check" => parent.send(&check_reply(&buf.download(n(1), n(2)), n(3) as u64)),
            "fill" => {
                let mut host = vec![0u8; n(1)];
                fill_pattern(&mut host, n(2) as u64);
                buf.upload(&host);
                parent.send("ok");
            }
            "export" => {
                let e = ipc::export(0, buf.ptr).unwrap();
                let hex: String = e.handle.iter().map(|b| format!("{b:02x}")).collect();
                parent.send(&format!("ipc {hex} {}", e.offset));
            }
            "exit" => break,
            other => panic!("unknown command {other}"),
        }
    }
    ep.shutdown();
});

fn rig() -> (Peer, Arc<dyn Endpoint>, DevBuf, u32, u32) {
    rig_on("tcp")
}

fn rig_on(transport: &str) -> (Peer, Arc<dyn Endpoint>, DevBuf, u32, u32) {
    rig_with(transport, endpoint(transport))
}

/// The rig over `ep`, an endpoint of `transport` the caller made.
fn rig_with(transport: &str, ep: Arc<dyn Endpoint>) -> (Peer, Arc<dyn Endpoint>, DevBuf, u32, u32) {
    gpu();
    let len = max_len();
    let mut peer = Peer::spawn(
        "gpu_peer",
        &[
            ("DLSLIME_GPU_TEST_MAX", len.to_string()),
            ("GPU_TRANSPORT", transport.to_string()),
        ],
    );
    let buf = DevBuf::new(len);
    // SAFETY: `buf` outlives every operation (each is waited for before it drops).
    let local = unsafe { ep.register_memory_region("local", buf.ptr as *mut u8, len) }.unwrap();
    peer.connect_endpoint(&*ep);
    let remote = ep.remote_pool().handle("buf").unwrap();
    (peer, ep, buf, local, remote)
}

#[test]
fn device_to_device_over_tcp_staging() {
    assert_eq!(StagingPool::global().memory(), device::HostMemory::Pinned);
    device_to_device("tcp");
}

#[test]
fn device_to_device_over_shm_cuda_ipc() {
    let shm = Arc::new(ShmEndpoint::new(MemoryPool::new(), ShmConfig::default()).unwrap());
    let parts = device_to_device_on(rig_with("shm", shm.clone()), "shm");
    // Every part went through CUDA IPC (one cuMemcpy each), none through bounce slots.
    let s = shm.stats();
    assert_eq!(s.ipc.load(std::sync::atomic::Ordering::Relaxed), parts);
    assert_eq!(
        s.staged_chunks.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

fn device_to_device(transport: &str) {
    device_to_device_on(rig_on(transport), transport);
}

#[test]
fn host_region_against_a_device_region_over_shm() {
    let (mut peer, ep, _buf, _local, remote) = rig_on("shm");
    let len = max_len().min(64 * MIB);
    let mut host = vec![0u8; len];
    fill_pattern(&mut host, 5);
    // SAFETY: `host` outlives every operation (each is waited for).
    let h = unsafe { ep.register_memory_region("host", host.as_mut_ptr(), len) }.unwrap();
    ep.write(&whole(h, remote, len), DEADLINE)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(peer.cmd(&format!("check 0 {len} 5")), "ok");
    assert_eq!(peer.cmd(&format!("fill {len} 6")), "ok");
    ep.read(&whole(h, remote, len), DEADLINE)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(check_pattern(&host, 6), None);
    peer.send("exit");
    ep.shutdown();
}

#[test]
fn operations_are_ordered_on_a_stream() {
    let (mut peer, ep, _buf, _local, remote) = rig();
    let len = max_len().min(256 * MIB);
    let s = Stream::new();
    assert_eq!(peer.cmd(&format!("fill {len} 31")), "ok");
    let other = DevBuf::new(len);
    // SAFETY: `other` outlives the operations on it (waited for below).
    let h2 = unsafe { ep.register_memory_region("other", other.ptr as *mut u8, len) }.unwrap();
    // After: a read, then signal_stream, then a copy queued on the stream: the copy must
    // see the read's bytes although the host never waited for the read.
    let f = ep.read(&whole(h2, remote, len), DEADLINE).unwrap();
    // SAFETY: a live stream; it outlives the operation (synchronized below).
    unsafe { stream::signal_stream(s.0 as usize, &f) }.unwrap();
    let mut pinned: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: context current; out-param local.
    ok(
        unsafe { sys::cuMemHostAlloc(&mut pinned, len, 0) },
        "cuMemHostAlloc",
    );
    // SAFETY: valid ranges; live stream.
    ok(
        unsafe { sys::cuMemcpyDtoHAsync_v2(pinned, other.ptr as _, len, s.0) },
        "cuMemcpyDtoHAsync",
    );
    // SAFETY: live stream.
    ok(
        unsafe { sys::cuStreamSynchronize(s.0) },
        "cuStreamSynchronize",
    );
    assert!(
        f.done(),
        "the stream ran past an operation that was not done"
    );
    f.wait().unwrap();
    // SAFETY: `pinned` holds len bytes the copy wrote.
    let got = unsafe { std::slice::from_raw_parts(pinned as *const u8, len) };
    assert_eq!(
        check_pattern(got, 31),
        None,
        "copy queued after signal_stream"
    );
    // SAFETY: allocated above; the stream is idle.
    let _ = unsafe { sys::cuMemFreeHost(pinned) };
    peer.send("exit");
    ep.shutdown();
}

#[test]
fn the_write_sends_what_the_stream_produced() {
    let (mut peer, ep, buf, local, remote) = rig();
    let len = max_len().min(256 * MIB);
    let s = Stream::new();
    let mut host = vec![0u8; len];
    fill_pattern(&mut host, 44);
    // A large async upload queued on the stream, then wait_stream: the write must send
    // the uploaded bytes, not what was there before.
    buf.upload(&vec![0u8; len]);
    // SAFETY: pinned-or-pageable source (pageable: the driver stages it); live stream.
    ok(
        unsafe { sys::cuMemcpyHtoDAsync_v2(buf.ptr as _, host.as_ptr().cast(), len, s.0) },
        "cuMemcpyHtoDAsync",
    );
    // SAFETY: a live stream of device 0.
    unsafe { stream::wait_stream(s.0 as usize) }.unwrap();
    ep.write(&whole(local, remote, len), DEADLINE)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(peer.cmd(&format!("check 0 {len} 44")), "ok");
    peer.send("exit");
    ep.shutdown();
}

#[test]
fn dmabuf_export_and_allocation() {
    gpu();
    let a = DeviceAlloc::new(MemoryKind::Cuda, 0, 4 * MIB).unwrap();
    let pool = MemoryPool::new();
    // SAFETY: `a` outlives the pool's use; nothing moves bytes here.
    let h = unsafe { pool.register_device(Some("a"), a.ptr() as *mut u8, a.len()) }.unwrap();
    assert_eq!(pool.region(h).unwrap().location, Location::Device(0));
    assert_eq!(
        DeviceAlloc::new(MemoryKind::CudaFabric, 0, MIB)
            .err()
            .unwrap()
            .status(),
        Status::Unsupported
    );
    match dmabuf::export(0, a.ptr() + 4096, MIB) {
        Ok(b) => {
            assert_eq!(b.offset, (a.ptr() as u64 + 4096) % 4096);
            println!("dma-buf export: ok (fd {:?})", b.fd);
        }
        Err(e) => {
            assert_eq!(e.status(), Status::Unsupported, "{e}");
            println!("dma-buf export unsupported here: {e}");
        }
    }
    pool.unregister(h).unwrap();
}

#[test]
fn rdma_registers_device_memory() {
    use dlslime::transport::rdma::RdmaContext;
    gpu();
    let ctx = match RdmaContext::open(Default::default()) {
        Ok(c) => c,
        Err(e) => {
            println!("rdma_registers_device_memory NOT RUN: no RDMA device ({e})");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "NOT RUN under CI"
            );
            return;
        }
    };
    let a = DevBuf::new(4 * MIB);
    let pool = MemoryPool::new();
    pool.attach_registrar(ctx.registrar()).unwrap();
    // SAFETY: `a` outlives the pool's use.
    match unsafe { pool.register(Some("d"), a.ptr as *mut u8, a.len) } {
        Ok(h) => {
            let r = pool.region(h).unwrap();
            assert!(r.device.is_some() && r.location == Location::Device(0));
            println!("GPUDirect registration: ok (rkey {:#x})", r.key);
        }
        Err(e) => {
            assert_eq!(e.status(), Status::Unsupported, "{e}");
            assert!(e.message().contains("nvidia-peermem"), "{e}");
            println!("GPUDirect unavailable here (typed): {e}");
        }
    }
}

/// Writes and reads every size; returns the number of operations.
fn device_to_device_on(rig: (Peer, Arc<dyn Endpoint>, DevBuf, u32, u32), transport: &str) -> u64 {
    let (mut peer, ep, buf, local, remote) = rig;
    let mut ops = 0;
    let mut len = KIB;
    let mut seed = 1;
    while len <= max_len() {
        let mut host = vec![0u8; len];
        fill_pattern(&mut host, seed);
        buf.upload(&host);
        let f = ep
            .write(&whole(local, remote, len), Some(Duration::from_secs(300)))
            .unwrap();
        f.wait().unwrap();
        assert_eq!(
            peer.cmd(&format!("check 0 {len} {seed}")),
            "ok",
            "device write of {len}"
        );
        assert_eq!(peer.cmd(&format!("fill {len} {}", seed + 1000)), "ok");
        let f = ep
            .read(&whole(local, remote, len), Some(Duration::from_secs(300)))
            .unwrap();
        f.wait().unwrap();
        assert_eq!(
            check_pattern(&buf.download(0, len), seed + 1000),
            None,
            "device read of {len}"
        );
        println!("device<->device over {transport}: {len} bytes ok");
        len *= 4;
        seed += 1;
        ops += 2;
    }
    peer.send("exit");
    ep.shutdown();
    ops
}

#[test]
fn peer_killed_mid_transfer_fails_the_operation() {
    peer_killed("tcp");
}

#[test]
fn peer_killed_mid_transfer_over_shm() {
    peer_killed("shm");
}

fn peer_killed(transport: &str) {
    let (mut peer, ep, _buf, local, remote) = rig_on(transport);
    let len = max_len().min(512 * MIB);
    let f = ep
        .write(&whole(local, remote, len), Some(Duration::from_secs(60)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    peer.kill();
    let e = f.wait_for(Duration::from_secs(30));
    match e {
        Ok(()) => println!("the write finished before the kill (nothing to check)"),
        Err(e) => assert!(
            matches!(e.status(), Status::PeerDisconnected | Status::Timeout),
            "{e}"
        ),
    }
    assert_eq!(StagingPool::global().stats().in_use, 0);
    ep.shutdown();
}

#[test]
fn stream_ordering_of_the_cuda_copier() {
    gpu();
    let buf = DevBuf::new(64 * MIB);
    let stream = Stream::new();
    // Queue a large memset, then copy through a copier on the same stream: the copy must
    // see the memset's bytes even though the host did not wait for it.
    // SAFETY: valid device range, live stream.
    ok(
        unsafe { sys::cuMemsetD8Async(buf.ptr as _, 0xAB, buf.len, stream.0) },
        "cuMemsetD8Async",
    );
    // SAFETY: `stream` is a live stream of device 0 until destroyed below.
    let c = unsafe { CudaCopier::on_stream(0, stream.0 as usize) }.unwrap();
    let mut host = vec![0u8; buf.len];
    // SAFETY: valid ranges.
    unsafe { c.copy_to_host(buf.ptr, host.as_mut_ptr(), buf.len) }.unwrap();
    assert!(host.iter().all(|&b| b == 0xAB));
}

#[test]
fn cuda_ipc_between_two_processes() {
    let (mut peer, ep, buf, _local, _remote) = rig();
    let len = 4 * MIB;
    assert_eq!(peer.cmd(&format!("fill {len} 77")), "ok");
    peer.send("export");
    let line = peer.recv();
    let v: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(v[0], "ipc");
    let mut handle = [0u8; ipc::IPC_HANDLE_LEN];
    for (i, b) in handle.iter_mut().enumerate() {
        *b = u8::from_str_radix(&v[1][2 * i..2 * i + 2], 16).unwrap();
    }
    let export = ipc::IpcExport {
        handle,
        offset: v[2].parse().unwrap(),
    };
    let m = ipc::IpcMapping::open(0, &export).unwrap();
    // SAFETY: both are live device ranges of at least `len` bytes.
    unsafe { ipc::copy_device(buf.ptr, m.ptr(), len, 0) }.unwrap();
    assert_eq!(check_pattern(&buf.download(0, len), 77), None);
    drop(m);
    peer.send("exit");
    ep.shutdown();
}

#[test]
fn local_range_refuses_device_regions() {
    gpu();
    let buf = DevBuf::new(MIB);
    let pool = MemoryPool::new();
    // SAFETY: `buf` outlives the pool's use; nothing moves bytes here.
    let h = unsafe { pool.register(Some("d"), buf.ptr as *mut u8, MIB) }.unwrap();
    assert_eq!(pool.region(h).unwrap().location, Location::Device(0));
    assert_eq!(
        pool.local_range(h, 0, 1).unwrap_err().status(),
        Status::Unsupported
    );
    assert!(pool.local_range_or_staged(h, 0, 1).is_ok());
    assert!(pool.mr_info()["d"]["device"] == 0);
}
