//! Parent-side scenarios that every transport's two-process tests run the same way
//! against a target child (`region_command` / `message_command`: a region "buf" filled
//! with pattern 1).

use std::sync::Arc;

use std::time::{Duration, Instant};

use dlslime::memory::RemoteRegion;
use dlslime::{Assignment, Endpoint, Future, Status};
use serde_json::Value;

use super::{check_pattern, fill_pattern, message, pattern, registered, Peer};

const MIB: usize = 1 << 20;

/// The initiator side of a test: an endpoint connected to a target child, with one
/// registered local buffer.
pub trait Initiator {
    fn endpoint(&self) -> Arc<dyn Endpoint>;
    /// (local handle, the child's "buf" as a remote handle)
    fn handles(&self) -> (u32, u32);
    fn buf(&mut self) -> &mut [u8];
    /// Sends a command to the child and returns its answer.
    fn cmd(&mut self, c: &str) -> String;

    fn a(&self, remote_off: u64, local_off: u64, len: u64) -> Assignment {
        let (local, remote) = self.handles();
        Assignment::new(local, remote, remote_off, local_off, len)
    }
}

/// The initiator side of the endpoint tests: `ep` with one registered local buffer,
/// connected to a target child that registered its region as "buf".
pub struct Rig<E> {
    pub peer: Peer,
    // Before `buf`: dropping the endpoint ends its use of the region first.
    pub ep: Arc<E>,
    pub buf: Vec<u8>,
    pub local: u32,
    pub remote: u32,
    /// The child's `endpoint_info`.
    pub peer_info: Value,
}

impl<E: Endpoint + 'static> Rig<E> {
    /// Registers a zeroed `local_len`-byte buffer "local" on `ep` and connects it to the
    /// target child `peer` (its `info`, then our `connect`).
    pub fn connect(mut peer: Peer, ep: Arc<E>, local_len: usize) -> Rig<E> {
        // SAFETY: `buf` moves into the returned `Rig` (its heap block stays put), which
        // drops `ep` before `buf` (field order): the region outlives every operation.
        let (buf, local) = unsafe { registered(ep.memory_pool(), "local", vec![0u8; local_len]) };
        let peer_info = peer.dial(&*ep);
        let remote = ep.remote_pool().handle("buf").unwrap();
        Rig {
            peer,
            ep,
            buf,
            local,
            remote,
            peer_info,
        }
    }

    /// The child's "buf" registered again as "forged", with a wrong key.
    pub fn forged(&self) -> u32 {
        self.remote_variant("forged", |r| RemoteRegion {
            key: r.key ^ 0x5a5a,
            ..r
        })
    }

    /// The child's "buf" registered again as "wide", published 4× longer than it is.
    pub fn wide(&self) -> u32 {
        self.remote_variant("wide", |r| RemoteRegion {
            len: r.len * 4,
            ..r
        })
    }

    fn remote_variant(&self, name: &str, f: impl FnOnce(RemoteRegion) -> RemoteRegion) -> u32 {
        let real = self.ep.remote_pool().get(self.remote).unwrap();
        self.ep.remote_pool().register(name, f(real)).unwrap()
    }

    /// Tells the child to exit and waits for its clean exit.
    pub fn finish(mut self) {
        self.peer.send("exit");
        self.peer.join();
    }
}

impl<E: Endpoint + 'static> Initiator for Rig<E> {
    fn endpoint(&self) -> Arc<dyn Endpoint> {
        self.ep.clone()
    }

    fn handles(&self) -> (u32, u32) {
        (self.local, self.remote)
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    fn cmd(&mut self, c: &str) -> String {
        self.peer.cmd(c)
    }
}

/// read (with the original's offset order), write, and write_with_imm of several
/// assignments (one notification, after the data). Needs 8 KiB + 4 KiB on both sides.
pub fn one_sided_opcodes(r: &mut impl Initiator) {
    let ep = r.endpoint();
    // read: remote[0..4096] -> local[8..]
    ep.read(&[r.a(0, 8, 4096)], None).unwrap().wait().unwrap();
    assert_eq!(check_pattern(&r.buf()[8..8 + 4096], 1), None);
    // the original's offset-order example: read([(h, hr, 0, 8, 8)]) -> local[8:16] = remote[0:8]
    assert_eq!(&r.buf()[8..16], &pattern(8, 1)[..]);
    // write: local -> remote[4096..], checked by the peer
    fill_pattern(&mut r.buf()[..8192], 2);
    ep.write(&[r.a(4096, 0, 8192)], None)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(r.cmd("check 4096 8192 2"), "ok");
    // write_with_imm with several assignments delivers one notification, after the data
    fill_pattern(&mut r.buf()[..300], 3);
    let f = ep
        .write_with_imm(&[r.a(0, 0, 100), r.a(100, 100, 200)], 77, None)
        .unwrap();
    f.wait().unwrap();
    assert_eq!(r.cmd("imm 1"), "imms 77");
    assert_eq!(r.cmd("check 0 300 3"), "ok");
}

/// Sends posted before the child posts its receives are held, not lost, and matched in
/// order: one message of each length in `lens` (seeded 100, 101, ...), received by the
/// child into buffers of `cap` bytes.
pub fn sends_before_receives(r: &mut impl Initiator, lens: &[usize], cap: usize) {
    let msgs: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(k, &n)| message(n, 100 + k as u8))
        .collect();
    let ep = r.endpoint();
    let sends: Vec<_> = msgs
        .iter()
        // SAFETY: the messages in `msgs` stay alive and unmodified until their sends are
        // waited below.
        .map(|m| unsafe { ep.send(m.as_ptr(), m.len(), None).unwrap() })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let want: Vec<String> = lens
        .iter()
        .enumerate()
        .map(|(k, n)| format!("ok:{n}:{}", 100 + k))
        .collect();
    assert_eq!(
        r.cmd(&format!("recv {} {cap}", lens.len())),
        format!("recvd {}", want.join(","))
    );
    for s in sends {
        s.wait().unwrap();
    }
}

/// `n` write_with_imm of mixed sizes (every tenth 2 MiB, the rest 64 B), none waited
/// before the next is issued: the child's `imm n` sees each immediate once, in order.
/// Needs 2 MiB on both sides.
pub fn immediates_in_order(r: &mut impl Initiator, n: i32) {
    let ep = r.endpoint();
    let futs: Vec<_> = (0..n)
        .map(|i| {
            let len = if i % 10 == 0 { 2 * MIB as u64 } else { 64 };
            ep.write_with_imm(&[r.a(0, 0, len)], i, None).unwrap()
        })
        .collect();
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(
        r.cmd(&format!("imm {n}")),
        format!("imms {}", want.join(","))
    );
    for f in futs {
        f.wait().unwrap();
    }
}

/// A 100-byte message into a 10-byte receive fails that receive and its send with
/// `Truncated`, and the 5-byte message after it still matches the next receive. Both
/// are sent `settle` before the child posts its receives; the sender's future stays
/// pending until then.
pub fn truncation_fails_both_sides(r: &mut impl Initiator, settle: Duration) {
    let ep = r.endpoint();
    let big = message(100, 1);
    // SAFETY: `big` stays alive and unmodified until `f` has failed (waited below).
    let f = unsafe { ep.send(big.as_ptr(), big.len(), None).unwrap() };
    let small = message(5, 2);
    // SAFETY: `small` stays alive and unmodified until `g` completes (waited below).
    let g = unsafe { ep.send(small.as_ptr(), small.len(), None).unwrap() };
    std::thread::sleep(settle);
    assert_eq!(f.status(), Status::Pending);
    assert_eq!(r.cmd("recv 2 10"), "recvd Truncated:0:-,ok:5:2");
    assert_eq!(f.wait().unwrap_err().status(), Status::Truncated);
    g.wait().unwrap();
}

/// The target still serves: our first `len` bytes, filled with pattern `seed`, written to
/// the start of its region arrive as they are.
pub fn still_serves(r: &mut impl Initiator, len: u64, seed: u8) {
    r.endpoint()
        .write(&[r.a(0, 0, len)], None)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(r.cmd(&format!("check 0 {len} {seed}")), "ok");
}

/// A receive posted before the child sends 3000 bytes seeded 9 gets them whole.
pub fn receive_from_the_child(r: &mut impl Initiator) {
    let mut inbox = vec![0u8; 4096];
    // SAFETY: `inbox` is not touched until `rf.wait()` returns, and outlives it.
    let rf = unsafe {
        r.endpoint()
            .recv(inbox.as_mut_ptr(), inbox.len(), None)
            .unwrap()
    };
    assert_eq!(r.cmd("send 3000 9"), "ok");
    rf.wait().unwrap();
    assert_eq!(rf.nbytes(), 3000);
    assert_eq!(inbox[0], 9);
    assert_eq!(check_pattern(&inbox[1..3000], 9), None);
}

/// `threads` threads each write, then read back, 40 windows of 4 KiB at once; the
/// child's region and ours must hold `threads * 40 * 4096` bytes.
pub fn concurrent_operations(r: &mut impl Initiator, threads: usize) {
    let (win, per) = (4096usize, 40);
    fill_pattern(r.buf(), 11);
    let ep = r.endpoint();
    let (local, remote) = r.handles();
    let a = move |t: usize, i: usize| {
        let off = ((t * per + i) * win) as u64;
        [Assignment::new(local, remote, off, off, win as u64)]
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            let ep = ep.clone();
            s.spawn(move || {
                let futs: Vec<_> = (0..per)
                    .map(|i| ep.write(&a(t, i), None).unwrap())
                    .collect();
                for f in futs {
                    f.wait().unwrap();
                }
            });
        }
    });
    assert_eq!(r.cmd(&format!("check 0 {} 11", threads * per * win)), "ok");
    r.buf().iter_mut().for_each(|b| *b = 0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let ep = ep.clone();
            s.spawn(move || {
                for i in 0..per {
                    ep.read(&a(t, i), None).unwrap().wait().unwrap();
                }
            });
        }
    });
    assert_eq!(check_pattern(r.buf(), 11), None);
}

/// Waits for an operation the target must refuse (a range outside its region, a wrong
/// key): it fails with `RemoteAccess`.
pub fn refused_by_the_target(op: dlslime::Result<Future>) {
    let e = op.unwrap().wait().unwrap_err();
    assert_eq!(e.status(), Status::RemoteAccess, "{e}");
}

/// The child's region of `len` bytes still holds pattern 1.
pub fn target_untouched(r: &mut impl Initiator, len: usize) {
    assert_eq!(
        r.cmd(&format!("check 0 {len} 1")),
        "ok",
        "target memory was modified"
    );
}

/// Local checks fail at submission, before anything reaches the peer: ranges outside
/// our `local_len`-byte buffer, an unknown local handle.
pub fn local_checks_fail_at_once(r: &impl Initiator, local_len: u64) {
    let ep = r.endpoint();
    let fails = |a: Assignment| ep.write(&[a], None).unwrap_err().status();
    assert_eq!(fails(r.a(0, local_len - 10, 11)), Status::OutOfRange);
    assert_eq!(fails(r.a(local_len, 0, 1)), Status::OutOfRange);
    let (_, remote) = r.handles();
    assert_eq!(
        fails(Assignment::new(99, remote, 0, 0, 1)),
        Status::UnknownHandle
    );
}

/// Deadlines end waits and operations with `Timeout`; `cancel_all` fails the pending
/// operations with `Cancelled`, leaves completed ones alone and the endpoint usable;
/// `shutdown` is idempotent, wakes waiters with `Cancelled`, leaves completed operations
/// alone and refuses new ones with `ShutDown`.
pub fn deadlines_cancel_and_shutdown(r: &impl Initiator) {
    let ep = r.endpoint();
    let t = Instant::now();
    let f = ep.imm_recv(Some(Duration::from_millis(200))).unwrap();
    assert_eq!(
        f.wait_for(Duration::from_millis(20)).unwrap_err().status(),
        Status::Timeout
    );
    assert_eq!(f.status(), Status::Pending);
    assert_eq!(f.wait().unwrap_err().status(), Status::Timeout);
    assert_eq!(f.status(), Status::Timeout);
    assert!(t.elapsed() < Duration::from_secs(5));
    let mut b = vec![0u8; 16];
    // SAFETY: `b` is untouched until the (timed-out) wait below ends the library's access.
    let g = unsafe {
        ep.recv(b.as_mut_ptr(), 16, Some(Duration::from_millis(100)))
            .unwrap()
    };
    assert_eq!(g.wait().unwrap_err().status(), Status::Timeout);
    // cancel_all leaves completed operations alone
    let done = ep.read(&[r.a(0, 0, 64)], None).unwrap();
    done.wait().unwrap();
    let pending = ep.imm_recv(None).unwrap();
    assert_eq!(ep.cancel_all(), 1);
    assert_eq!(pending.wait().unwrap_err().status(), Status::Cancelled);
    assert_eq!(done.status(), Status::Ok);
    // the endpoint stays usable after cancel_all
    ep.read(&[r.a(0, 0, 64)], None).unwrap().wait().unwrap();
    // shutdown is idempotent and wakes waiters
    let waiter = ep.imm_recv(None).unwrap();
    let w2 = waiter.clone();
    let h = std::thread::spawn(move || w2.wait());
    std::thread::sleep(Duration::from_millis(50));
    ep.shutdown();
    ep.shutdown();
    assert_eq!(h.join().unwrap().unwrap_err().status(), Status::Cancelled);
    assert_eq!(done.status(), Status::Ok);
    assert_eq!(
        ep.read(&[r.a(0, 0, 1)], None).unwrap_err().status(),
        Status::ShutDown
    );
}
