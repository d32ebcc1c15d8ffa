//! The slot ring over PeerAgent connections (by alias), against a real Redis and the
//! real NanoCtrl: a producer process serves its ring to the client's alias; the client
//! fetches by `(producer, slot, generation)` over shared memory and TCP; the producer is
//! killed and started again under the same alias, and the client's route dials the new
//! incarnation by itself.

mod common;
mod peer_fixture;

use std::time::{Duration, Instant};

use common::{check_pattern, fill_pattern, Peer};
use dlslime::peer::PeerAgent;
use dlslime::ring::{Ring, RingClient, RingClientConfig, RingConfig, RingServer, SlotRef};
use dlslime::Status;
use peer_fixture::{opts, Cluster};

// The producer: makes its ring (before any connection, so shared-memory peers map it),
// registers as `PEER_ALIAS`, serves the ring to `CLIENT_ALIAS`. Commands: `write <count>
// <len> <seed>` -> `refs <slot>:<gen>,...`; `exit`.
common::peer_entry!(fn ring_peer_child(parent) {
    let env = |k: &str| std::env::var(k).unwrap();
    let ring = Ring::create(&RingConfig {
        name: "rollouts".into(),
        slot_count: 8,
        slot_capacity: 1 << 20,
        overwrite: true,
    })
    .unwrap();
    let agent = PeerAgent::new(
        &env("PEER_URL"),
        Some(&env("PEER_ALIAS")),
        Some(&env("PEER_SCOPE")),
        opts(500),
    )
    .unwrap();
    let server = RingServer::new(Default::default()).unwrap();
    server.add_ring(ring.clone()).unwrap();
    server
        .serve_peer(&agent, &env("CLIENT_ALIAS"), &env("RING_TRANSPORT"))
        .unwrap();
    parent.send("ready");
    while let Some(line) = parent.recv() {
        if let Some(arg) = line.strip_prefix("write ") {
            let v: Vec<u64> = arg.split(' ').map(|x| x.parse().unwrap()).collect();
            let mut buf = vec![0u8; v[1] as usize];
            let refs: Vec<String> = (0..v[0])
                .map(|i| {
                    fill_pattern(&mut buf, v[2] + i);
                    let r = ring.write_raw(&buf).unwrap();
                    format!("{}:{}", r.slot, r.generation)
                })
                .collect();
            parent.send(&format!("refs {}", refs.join(",")));
        } else if line == "exit" {
            break;
        }
    }
    server.stop();
    agent.shutdown();
});

fn producer(cl: &Cluster, transport: &str) -> Peer {
    let mut p = Peer::spawn(
        "ring_peer_child",
        &[
            ("PEER_URL", cl.url().to_string()),
            ("PEER_SCOPE", cl.scope.clone()),
            ("PEER_ALIAS", "rollout-0".to_string()),
            ("CLIENT_ALIAS", "trainer".to_string()),
            ("RING_TRANSPORT", transport.to_string()),
        ],
    );
    p.expect("ready");
    p
}

fn write(p: &mut Peer, count: u64, len: u64, seed: u64) -> Vec<SlotRef> {
    p.send(&format!("write {count} {len} {seed}"));
    p.recv()
        .strip_prefix("refs ")
        .unwrap()
        .split(',')
        .map(|x| {
            let (s, g) = x.split_once(':').unwrap();
            SlotRef::new(s.parse().unwrap(), g.parse().unwrap())
        })
        .collect()
}

fn by_alias(transport: &str) {
    let cl = Cluster::start("ring");
    let mut p = producer(&cl, transport);
    let agent = PeerAgent::new(cl.url(), Some("trainer"), Some(&cl.scope), opts(500)).unwrap();
    let c = RingClient::new(RingClientConfig {
        timeout: Duration::from_secs(10),
        quarantine: Duration::from_millis(100),
        ..Default::default()
    })
    .unwrap();
    c.add_peer("rollouts", &agent, "rollout-0", transport)
        .unwrap();
    let refs = write(&mut p, 6, 700_000, 10);
    for (i, r) in refs.iter().enumerate() {
        let got = c.fetch("rollouts", *r).unwrap();
        assert_eq!(got.len(), 700_000);
        assert_eq!(check_pattern(&got, 10 + i as u64), None);
    }
    assert_eq!(
        c.fetch("rollouts", refs[0]).unwrap_err().status(),
        Status::StaleSlot
    );
    let conn = agent.connection("rollout-0").unwrap();
    let want = if transport == "auto" {
        "shm"
    } else {
        transport
    };
    assert_eq!(conn.transport().unwrap().as_str(), want);

    // The producer dies and comes back under the same alias (a new ring): the route
    // dials the new incarnation; references of the dead one fail with a typed error.
    let old = write(&mut p, 1, 1000, 99)[0];
    p.kill();
    let mut p = producer(&cl, transport);
    let refs = write(&mut p, 3, 1000, 500);
    let t = Instant::now();
    let got = loop {
        match c.fetch("rollouts", refs[0]) {
            Ok(g) => break g,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(60), "no reconnect: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(check_pattern(&got, 500), None);
    // the old reference names a generation the new ring never had at that slot
    let e = c.fetch("rollouts", old).unwrap_err();
    assert_eq!(e.status(), Status::StaleSlot, "{e}");
    let got = c.fetch_batch("rollouts", &refs[1..]);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(check_pattern(g.as_ref().unwrap(), 501 + i as u64), None);
    }
    drop(c);
    p.send("exit");
    p.join();
    agent.shutdown();
}

common::scenario_tests! {
    ring_by_alias_shm => by_alias("shm");
    ring_by_alias_tcp => by_alias("tcp");
}
