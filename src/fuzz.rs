//! Entry points for the fuzz targets (`fuzz/`, `make fuzz`) and their stable smoke test
//! (`tests/fuzz_smoke.rs`): one function per decoder that reads bytes from a peer or from
//! the control plane. Each takes arbitrary bytes and runs them through the code the
//! receiving side runs. Garbage is expected to be refused with an error; a panic means a
//! decoder crashed or broke one of the properties checked here (the oracles: an accepted
//! range lies inside a region with the presented key, an accepted message lies inside its
//! slot or entry, what decodes re-encodes to the same bytes).
//!
//! Not part of the API (hidden from the docs; may change at any time). NanoCtrl's request
//! bodies are fuzzed from the `nanoctrl` crate's side (`fuzz/fuzz_targets/nanoctrl_body.rs`).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::memory::{MemoryPool, RemotePool};
use crate::rpc::config::RpcConfig;
use crate::rpc::remote_error::RemoteError;
use crate::rpc::wire as rpc_wire;
use crate::transport::info;
use crate::transport::shm::ring::{self, Entry};
use crate::transport::tcp::wire as tcp_wire;
use crate::Status;

/// The first bytes a stranger sends to a TCP acceptor, as it reads them: the plain hello
/// (`magic | version | status | reserved | context_id`, 24 bytes), the auth challenge (64)
/// and the proof (32) (`docs/tcp-wire-format.md`). A wrong magic or version is refused;
/// a decoded hello re-encodes to the same bytes (reserved bytes aside); no proof made
/// without the pair key's secret is ever accepted.
pub fn tcp_hello(data: &[u8]) {
    use crate::transport::auth::{Identity, Proof, CHALLENGE_LEN, PROOF_LEN};
    use crate::transport::tcp::handshake;
    static ID: OnceLock<Identity> = OnceLock::new();
    let Some(b) = data.get(..tcp_wire::HELLO_LEN) else {
        return; // the acceptor's read fails: connection refused
    };
    let b: &[u8; tcp_wire::HELLO_LEN] = b.try_into().unwrap();
    let h = match handshake::check_hello(b) {
        Ok(h) => h,
        Err(e) => {
            match tcp_wire::Hello::decode(b) {
                None => assert_ne!(
                    b[..8],
                    tcp_wire::MAGIC,
                    "a hello with our magic must decode"
                ),
                Some(h) => {
                    assert_eq!(e.status(), Status::VersionMismatch);
                    assert_ne!(h.version, tcp_wire::WIRE_VERSION);
                }
            }
            return;
        }
    };
    let again = h.encode();
    assert_eq!(again[..12], b[..12]);
    assert_eq!(again[16..], b[16..]);
    let _ = Status::from_code(h.status as i32);
    let rest = &data[tcp_wire::HELLO_LEN..];
    let Some(c) = rest.get(..CHALLENGE_LEN) else {
        return;
    };
    let id = ID.get_or_init(Identity::generate);
    let Ok((acceptor, bound, _answer)) = handshake::respond(id, 7, b, c.try_into().unwrap()) else {
        return; // a degenerate dialer key: refused
    };
    let Some(p) = rest.get(CHALLENGE_LEN..CHALLENGE_LEN + PROOF_LEN) else {
        return;
    };
    let proof = Proof::decode(p.try_into().unwrap());
    assert!(
        acceptor.check_proof(&proof, &bound).is_err(),
        "a proof made without the secret was accepted"
    );
}

/// Three regions a peer may address in [`tcp_frames`]: two disjoint buffers and one
/// nested in the first (registered separately, with its own key).
struct Target {
    pool: Arc<MemoryPool>,
    /// `(addr, len, key)` of each region.
    regions: Vec<(u64, u64, u64)>,
}

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let pool = MemoryPool::new();
        let a: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let b: &'static mut [u8] = Box::leak(vec![0u8; 512].into_boxed_slice());
        let (pa, pb) = (a.as_mut_ptr(), b.as_mut_ptr());
        // SAFETY: leaked buffers: valid for the whole process, never referenced again.
        let handles = unsafe {
            [
                pool.register(Some("a"), pa, 4096).unwrap(),
                pool.register(Some("a.inner"), pa.add(1024), 512).unwrap(),
                pool.register(Some("b"), pb, 512).unwrap(),
            ]
        };
        let regions = handles
            .iter()
            .map(|&h| {
                let r = pool.region(h).unwrap();
                (r.addr as u64, r.len as u64, r.key)
            })
            .collect();
        Target { pool, regions }
    })
}

/// A stream of TCP request frames as a target endpoint reads them: 48-byte headers,
/// payloads skipped as the server drains them, each access checked against the regions
/// of `target()`. To let the fuzzer reach accepted accesses, the harness reads a
/// header's `addr` as an offset from the first region and its `key` as
/// `region index (low 2 bits) | xor mask (the rest)` over that region's real key; the
/// oracle then says which accesses must be accepted: exactly those inside a region whose
/// key was presented.
pub fn tcp_frames(data: &[u8]) {
    let t = target();
    let mut r = Cursor::new(data);
    while let Ok(Some(h)) = tcp_wire::read_header(&mut r) {
        let _ = h.status();
        let Some(op) = h.op() else {
            return; // the server closes the connection on an unknown opcode
        };
        let addr = t.regions[0].0.wrapping_add(h.addr);
        let key = t.regions[(h.key & 3) as usize % t.regions.len()].2 ^ (h.key >> 2);
        let got = t.pool.validate_access(addr, h.size, key);
        let want = t.regions.iter().any(|&(ra, rl, rk)| {
            rk == key
                && addr >= ra
                && (addr as u128) + (h.size as u128) <= (ra as u128) + (rl as u128)
        });
        assert_eq!(
            got.is_ok(),
            want,
            "validate_access({addr:#x}, {}, {key:#x}) disagrees with the regions",
            h.size
        );
        use tcp_wire::Opcode::*;
        let payload = match op {
            Write | WriteImm => h.size,
            Send if h.flags & tcp_wire::FLAG_PAYLOAD != 0 => h.size,
            Reply => return, // unexpected on a request connection: closed
            _ => 0,
        };
        let left = data.len() as u64 - r.position();
        if payload > left {
            return; // the peer hung up mid-payload
        }
        r.set_position(r.position() + payload);
    }
}

/// One RPC notification and the mailbox slot it points at, as a session dispatches it:
/// `imm (i32 LE) | slot bytes`. Checks the slot index and kind, the 16-byte header, that
/// the payload lies in the slot, then the payload decoders (bulk descriptor, exception
/// JSON).
pub fn rpc_message(data: &[u8]) {
    let cfg = RpcConfig::default();
    let Some(imm) = data.get(..4) else { return };
    let imm = i32::from_le_bytes(imm.try_into().unwrap());
    // Every bit of the immediate means something: it re-encodes to itself. Its fence is
    // taken as this session's (a foreign one is dropped before anything else is read).
    let (slot, kind, fence) = rpc_wire::decode_imm(imm);
    assert_eq!(rpc_wire::encode_imm(slot, kind, fence), imm);
    if kind == rpc_wire::IMM_CLOSE || slot >= cfg.slot_count || kind > rpc_wire::IMM_CLOSE {
        return;
    }
    // The slot as the peer left it: its bytes, the rest as before (zero).
    let mut mem = vec![0u8; cfg.slot_size];
    let n = (data.len() - 4).min(cfg.slot_size);
    mem[..n].copy_from_slice(&data[4..4 + n]);
    let h = rpc_wire::Header::decode(mem[..rpc_wire::HEADER_LEN].try_into().unwrap());
    if !rpc_wire::fits_slot(&h, cfg.slot_size) {
        return;
    }
    let mut payload = &mem[rpc_wire::HEADER_LEN..h.total_len as usize];
    let _ = rpc_wire::base_tag(h.tag);
    if h.tag & rpc_wire::PLACE_BIT != 0 {
        if kind == rpc_wire::IMM_REPLY {
            // A placed reply: its length only (the caller checks it against its buffer).
            if let Ok(b) = <[u8; rpc_wire::PLACED_LEN]>::try_from(payload) {
                let _ = u64::from_le_bytes(b);
            }
            return;
        }
        // A request's reply buffer, after its payload.
        let Some(n) = payload.len().checked_sub(rpc_wire::BULK_DESC_LEN) else {
            return;
        };
        let d = rpc_wire::BulkDesc::decode(&payload[n..]).expect("24 bytes decode");
        assert_eq!(d.encode()[..], payload[n..]);
        payload = &payload[..n];
    }
    if h.tag & rpc_wire::BULK_BIT != 0 {
        if let Some(d) = rpc_wire::BulkDesc::decode(payload) {
            assert_eq!(d.encode()[..], payload[..]);
        }
    }
    if h.tag & rpc_wire::EXC_BIT != 0 {
        let e = RemoteError::parse(payload);
        assert_eq!(RemoteError::parse(&e.to_json(usize::MAX)), e);
    }
}

/// The peer's RPC session hello (the handshake message), checked against the default
/// slot configuration as the handshake does: JSON, version, slots, session id, mailbox.
pub fn rpc_handshake(data: &[u8]) {
    use crate::rpc::handshake::{check_hello, peer_mailbox};
    let cfg = RpcConfig::default();
    let Ok(peer) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(id) = check_hello(&peer, &cfg) {
        assert_ne!(id, 0, "session id 0 accepted");
        if let Ok(r) = peer_mailbox(&peer, &cfg) {
            assert!(r.len >= 2 * (cfg.slot_size * cfg.slot_count) as u64);
        }
    }
}

/// A shared-memory ring entry as the consumer reads it from the peer's ring (256 bytes;
/// shorter input is zero-padded). Bit 0 of the first byte seals the entry first, so the
/// fuzzer gets past the checksum to the structural checks. An accepted entry's inline
/// message lies inside the entry and a chunk inside its message and bounce slot.
pub fn shm_entry(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let mut e = Entry::new(0);
    let n = bytes.len().min(std::mem::size_of::<Entry>());
    // SAFETY: Entry is plain old data (integers and a byte array, repr(C)): any bytes are
    // a valid value; at most size_of::<Entry>() bytes are written into it.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut e as *mut Entry as *mut u8, n) };
    if flags & 1 != 0 {
        e.seal();
    }
    if e.validate().is_err() {
        return;
    }
    match e.kind {
        ring::kind::MSG => {
            let _ = &e.data[..e.len as usize];
        }
        ring::kind::ST_WRITE | ring::kind::ST_READ | ring::kind::ST_MSG => {
            assert!((e.slot as usize) < ring::NSLOTS && e.len as usize <= ring::SLOT_SIZE);
            if e.kind == ring::kind::ST_MSG {
                assert!(e.c as u128 + e.len as u128 <= e.n as u128);
            }
        }
        _ => {}
    }
}

/// A PeerAgent mailbox entry: `key \0 value \0 …` pairs (the fields of a Redis stream
/// entry) decoded for agent `a`, then the same bytes as a cleanup notice.
pub fn peer_mailbox(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut map = HashMap::new();
    let mut it = text.split('\0');
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k.to_string(), v.to_string());
    }
    let _ = crate::peer::message::check_message("a", &map);
    let _ = crate::peer::message::parse_notice(&text);
}

/// A peer's `endpoint_info` JSON as `connect` reads it before dialling anything: byte 0
/// picks the transport (tcp, shm, rdma), the rest is the JSON text. The envelope, the
/// transport's fields and the published regions (registered into a scratch pool) are
/// checked; no connection is made.
pub fn endpoint_info(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return; // the C ABI and Python refuse non-UTF-8 before parsing
    };
    let Ok(v) = info::parse(text) else { return };
    let transport = ["tcp", "shm", "rdma"][which as usize % 3];
    let Ok(obj) = info::check_envelope(&v, transport) else {
        return;
    };
    let fields_ok = match transport {
        // The fields TcpEndpoint::connect reads (it then resolves "host").
        "tcp" => {
            info::str_field(obj, "host").is_ok()
                && info::u64_field(obj, "port").is_ok_and(|p| p <= u16::MAX as u64)
                && info::u64_field(obj, "endpoint_id").is_ok_and(|e| e <= u32::MAX as u64)
                && info::u64_field(obj, "context_id").is_ok()
        }
        // The fields the shared-memory connect reads before its handshake.
        "shm" => info::str_field(obj, "host").is_ok() && info::str_field(obj, "socket").is_ok(),
        _ => crate::transport::rdma::info::parse_peer(obj).is_ok(),
    };
    if !fields_ok {
        return;
    }
    let remote = RemotePool::default();
    if info::register_peer_regions(&remote, obj).is_ok() {
        if let Some(Value::Object(mrs)) = obj.get("mr_info") {
            for name in mrs.keys() {
                assert!(
                    remote.handle(name).is_some(),
                    "region {name:?} not registered"
                );
            }
        }
    }
}
