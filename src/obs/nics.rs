//! The RDMA NICs' own counters, read from sysfs at snapshot time: for every device and
//! port under `/sys/class/infiniband`, the files of `counters/` (the IB port counters:
//! `port_xmit_data`, `port_rcv_packets`, `symbol_error`...) and of `hw_counters/` (the
//! driver's: retransmissions, RNR NAKs, CNPs...; soft-RoCE's `sent_pkts`, `rcvd_pkts`,
//! `duplicate_request`, `retry_exceeded_err`...). Values as the kernel gives them (the
//! IB `*_data` counters are in units of 4 bytes). Hosts without RDMA have none.

use std::path::Path;

use serde_json::{json, Map, Value};

/// Where the kernel lists RDMA devices.
pub const SYSFS_IB: &str = "/sys/class/infiniband";
/// Devices listed at most (the original kept 16 NIC slots).
pub const MAX_NICS: usize = 16;
/// Counter files read per directory at most.
const MAX_FILES: usize = 256;

/// `[{"nic", "port", "counters": {name: n}, "hw_counters": {name: n}}]` for every port
/// of every device under `root`, sorted by device then port.
pub fn nic_counters(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for dev in sorted_names(root).into_iter().take(MAX_NICS) {
        let ports = root.join(&dev).join("ports");
        for port in sorted_names(&ports) {
            let p = ports.join(&port);
            out.push(json!({
                "nic": dev,
                "port": port.parse::<u64>().map_or(Value::from(port.clone()), Value::from),
                "counters": read_dir_counters(&p.join("counters")),
                "hw_counters": read_dir_counters(&p.join("hw_counters")),
            }));
        }
    }
    out
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The files of `dir` whose content is one unsigned number (others, and unreadable
/// ones such as `lifespan` written by root only, are left out).
fn read_dir_counters(dir: &Path) -> Map<String, Value> {
    sorted_names(dir)
        .into_iter()
        .take(MAX_FILES)
        .filter_map(|name| {
            let s = std::fs::read_to_string(dir.join(&name)).ok()?;
            let n: u64 = s.trim().parse().ok()?;
            Some((name, Value::from(n)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of sysfs (directories of one-number files), read back.
    #[test]
    fn reads_ports_and_both_counter_sets() {
        let root = std::env::temp_dir().join(format!("dlslime-nics-{}", std::process::id()));
        let port = root.join("rxe0/ports/1");
        std::fs::create_dir_all(port.join("counters")).unwrap();
        std::fs::create_dir_all(port.join("hw_counters")).unwrap();
        std::fs::write(port.join("counters/port_xmit_data"), "1234\n").unwrap();
        std::fs::write(port.join("hw_counters/sent_pkts"), "7\n").unwrap();
        std::fs::write(port.join("hw_counters/lifespan"), "not a number\n").unwrap();
        let v = nic_counters(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            v,
            vec![json!({"nic": "rxe0", "port": 1,
                        "counters": {"port_xmit_data": 1234},
                        "hw_counters": {"sent_pkts": 7}})]
        );
        assert!(nic_counters(Path::new("/nonexistent/dlslime")).is_empty());
    }
}
