//! Which RDMA devices the VM suites run on, and the NOT RUN rule without one.

use dlslime::transport::rdma::available_nics;

/// The devices of (parent, child), or None without one.
/// `DLSLIME_TEST_RDMA_DEVICES=parent,child` picks them (default: the first NIC for both).
pub fn devices() -> Option<(String, String)> {
    let nics = available_nics().unwrap_or_default();
    if let Ok(v) = std::env::var("DLSLIME_TEST_RDMA_DEVICES") {
        let mut it = v.split(',').map(|s| s.trim().to_string());
        let a = it.next()?;
        let b = it.next().unwrap_or_else(|| a.clone());
        return (nics.contains(&a) && nics.contains(&b)).then_some((a, b));
    }
    let d = nics.first()?.clone();
    Some((d.clone(), d))
}

/// [`devices`], or prints NOT RUN (no RDMA device); under CI that is a failure.
pub fn need_device() -> Option<(String, String)> {
    let d = devices();
    if d.is_none() {
        eprintln!(
            "NOT RUN: no RDMA device (run `make test-rdma`: scripts/rdma-vm-test.sh gives one)"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "RDMA test NOT RUN under CI"
        );
    }
    d
}
