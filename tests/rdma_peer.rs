//! The PeerAgent and SlimeRPC over RDMA, on a real verbs device (soft-RoCE in the VM:
//! `make test-rdma` runs this binary inside `scripts/rdma-vm-test.sh`), with a real
//! redis-server and the real NanoCtrl, agents in separate OS processes. Two "hosts" are
//! two host identities (`DLSLIME_SHM_HOST_ID`) on two rxe devices joined by a veth pair
//! (`DLSLIME_TEST_RDMA_DEVICES=rxe0,rxe1`); an agent without a NIC hides the devices
//! (`SLIME_VISIBLE_DEVICES`). Without a device every test prints NOT RUN (a failure under
//! `CI=true`). `test = false` in Cargo.toml: the VM suite builds and runs it.

mod common;
mod peer_fixture;
#[path = "support/rdma_devices.rs"]
mod rdma_devices;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fill_pattern;
use dlslime::peer::{ConnectOptions, PeerAgent, Transport};
use dlslime::rpc::RpcSession;
use dlslime::Status;
use peer_fixture::{
    one_sided_both_ways, opts, refused_both_sides, register, rpc_config, rpc_service, Child,
    Cluster, T, WAIT,
};
use rdma_devices::need_device;

peer_agent_child!();

const HOST_A: &str = "rdma-test-host-a";

/// Alice, in this process, on "host A" with the NIC `dev`.
fn alice(cl: &Cluster, dev: &str) -> PeerAgent {
    let mut o = opts(500);
    o.shm.host_id_override = Some(HOST_A.into());
    o.rdma.device = Some(dev.into());
    PeerAgent::new(cl.url(), Some("alice"), Some(&cl.scope), o).unwrap()
}

/// A child agent on `host`, seeing only the RDMA device `dev` ("none": no device).
fn child(cl: &Cluster, alias: &str, host: &str, dev: &str) -> Child {
    Child::start(
        cl,
        alias,
        &[
            ("DLSLIME_SHM_HOST_ID", host.to_string()),
            ("SLIME_VISIBLE_DEVICES", dev.to_string()),
        ],
    )
}

fn data_qps(info: &serde_json::Value) -> usize {
    info["io_info"]["data_channel_info"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Between two hosts with a NIC each, "auto" is RDMA with the larger `qp_num` of the two
/// sides; every operation moves the right bytes both ways.
#[test]
fn auto_between_hosts_is_rdma_with_qp_num_and_every_operation() {
    let Some((da, db)) = need_device() else {
        return;
    };
    let cl = Cluster::start("rdma");
    let a = alice(&cl, &da);
    let mut b = child(&cl, "bob", "rdma-test-host-b", &db);
    let mut bufs = HashMap::new();
    register(&a, &mut bufs, "buf", 1 << 20, 1);
    b.ok("reg buf 1048576 2");
    // the device and port must be the agent's own
    let wrong = ConnectOptions {
        local_device: Some("no-such-nic".into()),
        ..Default::default()
    };
    assert_eq!(
        a.connect_with("bob", &wrong).err().unwrap().status(),
        Status::InvalidArgument
    );
    let o = ConnectOptions {
        transport: "auto".into(),
        qp_num: 2,
        local_device: Some(da.clone()),
        ib_port: Some(1),
    };
    let c = a.connect_with("bob", &o).unwrap();
    b.ok("connect alice auto");
    assert_eq!(c.wait(WAIT).unwrap(), Transport::Rdma);
    assert_eq!(b.ok("wait alice 30000"), "ok rdma");
    // qp_num honoured on both sides (bob asked for 1: the larger wins)
    assert_eq!(data_qps(&a.endpoint("bob").unwrap().endpoint_info()), 2);
    let bi: serde_json::Value =
        serde_json::from_str(b.ok("info alice").strip_prefix("ok ").unwrap()).unwrap();
    assert_eq!(data_qps(&bi), 2);
    assert_eq!(bi["device"], db.as_str());

    // one-sided both ways, immediate data, two-sided messages
    one_sided_both_ways(&a, &mut b, &bufs);
    let f = a.imm_recv("bob", T).unwrap();
    b.ok("writeimm alice buf 8192 77");
    f.wait().unwrap();
    assert_eq!(f.imm_data(), 77);
    // bob's [4096, 8192) holds what alice wrote there first: her pattern from 0
    assert_eq!(bufs["buf"].check(2, 0, 4096), None);
    assert_eq!(bufs["buf"].check_from(1, 4096, 4096, 0), None);
    b.p.send("recvmsg alice 64");
    let msg = b"hello-over-rdma";
    // SAFETY: `msg` is a static byte string, alive and unmodified until `wait` returns.
    let f = unsafe { a.send("bob", msg.as_ptr(), msg.len(), T) }.unwrap();
    f.wait().unwrap();
    assert_eq!(b.p.recv(), "ok hello-over-rdma");

    b.exit();
    a.shutdown();
}

/// "auto" is shared memory on one host (NICs or not) and TCP when one side has no NIC;
/// "rdma" towards an agent without a NIC fails on both sides with RDMA_UNAVAILABLE.
#[test]
fn auto_is_shm_on_one_host_tcp_without_a_nic_and_rdma_needs_both() {
    let Some((da, db)) = need_device() else {
        return;
    };
    let cl = Cluster::start("rdma-auto");
    let a = alice(&cl, &da);
    let mut carol = child(&cl, "carol", HOST_A, &db);
    let mut dave = child(&cl, "dave", "rdma-test-host-d", "none");
    let mut erin = child(&cl, "erin", "rdma-test-host-e", "none");
    let cc = a.connect_to("carol", "auto").unwrap();
    carol.ok("connect alice auto");
    let cd = a.connect_to("dave", "auto").unwrap();
    dave.ok("connect alice auto");
    assert_eq!(cc.wait(WAIT).unwrap(), Transport::Shm);
    assert_eq!(carol.ok("wait alice 30000"), "ok shm");
    assert_eq!(cd.wait(WAIT).unwrap(), Transport::Tcp);
    assert_eq!(dave.ok("wait alice 30000"), "ok tcp");
    // erin has no NIC: her own "rdma" is refused at once; alice's fails on both sides
    let r = erin.cmd("connect alice rdma");
    assert!(r.starts_with("err 503"), "{r}");
    let ce = a.connect_to("erin", "rdma").unwrap();
    refused_both_sides(
        &ce,
        &mut erin,
        Status::RdmaUnavailable,
        "peer has no",
        "err 503",
    );
    for k in [carol, dave, erin] {
        k.exit();
    }
    a.shutdown();
}

/// SlimeRPC over a PeerAgent RDMA connection between two hosts, with no change in the RPC
/// layer: echo, and a 256 MiB request (the bulk path: the server RDMA-reads it from the
/// caller's memory) checked byte for byte by the server. Both agents on the parent's
/// device: between two soft-RoCE devices RDMA reads crawl under TCG (256 MiB takes
/// minutes) and multi-MiB reads on several QPs fail (docs/rdma-transport.md).
#[test]
fn slimerpc_echo_and_a_256_mib_call_over_an_rdma_connection() {
    let Some((da, _)) = need_device() else {
        return;
    };
    let cl = Cluster::start("rdma-rpc");
    let a = alice(&cl, &da);
    let mut b = child(&cl, "bob", "rdma-test-host-b", &da);
    let c = a.connect_to("bob", "rdma").unwrap();
    b.ok("connect alice rdma");
    assert_eq!(c.wait(WAIT).unwrap(), Transport::Rdma);
    assert_eq!(b.ok("wait alice 30000"), "ok rdma");
    // both sides create their session over the connection's endpoint
    b.p.send("rpcserve alice");
    let sess = Arc::new(RpcSession::new(a.endpoint("bob").unwrap(), rpc_config()).unwrap());
    assert_eq!(b.p.recv(), "ok");
    let svc = rpc_service();
    let mut f = sess
        .call(svc.tag("echo").unwrap(), b"ping over rdma")
        .unwrap();
    assert_eq!(f.wait_ok(T).unwrap(), b"ping over rdma");
    drop(f);
    // a 256 MiB request (the bulk path: the server reads it from our memory), checked
    // byte for byte by the server
    const N: usize = 256 << 20;
    let t0 = Instant::now();
    let mut f = sess
        .call_inplace(svc.tag("check").unwrap(), N + 8, |buf| {
            buf[..8].copy_from_slice(&11u64.to_le_bytes());
            fill_pattern(&mut buf[8..N + 8], 11);
            Ok(N + 8)
        })
        .unwrap();
    let r = f.wait_ok(Some(Duration::from_secs(240))).unwrap();
    assert_eq!(u64::from_le_bytes(r[..8].try_into().unwrap()), N as u64);
    assert_eq!(
        u64::from_le_bytes(r[8..16].try_into().unwrap()),
        u64::MAX,
        "the server found a bad byte in the 256 MiB request"
    );
    eprintln!("rdma: 256 MiB RPC request took {:?}", t0.elapsed());
    drop(f);
    sess.close();
    b.exit();
    a.shutdown();
}
