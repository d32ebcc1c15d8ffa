//! RDMA where it cannot work: the calls fail with `RdmaUnavailable` and a message that
//! names what is missing, and nothing else is affected. Run by `scripts/test-rdma.sh` on
//! the host (no VM) twice:
//!
//! * `DLSLIME_TEST_RDMA_EXPECT=no-library`: in a mount namespace where
//!   `libibverbs.so.1` does not exist (the script hides it);
//! * `DLSLIME_TEST_RDMA_EXPECT=no-device`: libibverbs installed, no RDMA device (the
//!   build machines' kernels have no RDMA).
//!
//! The same script runs the TCP and shared-memory tests, and the C example against
//! `libdlslime.so`, in the namespace without libibverbs.

use std::ffi::CString;

use dlslime::transport::rdma::{
    available_nics, RdmaConfig, RdmaContext, RdmaEndpoint, RdmaEndpointConfig,
};
use dlslime::{MemoryPool, Status};

fn libibverbs_loads() -> bool {
    let name = CString::new("libibverbs.so.1").unwrap();
    // SAFETY: a valid name; the handle is closed at once.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) };
    if !h.is_null() {
        // SAFETY: from dlopen above.
        unsafe { libc::dlclose(h) };
    }
    !h.is_null()
}

fn expectation() -> Option<String> {
    let e = std::env::var("DLSLIME_TEST_RDMA_EXPECT").ok();
    if e.is_none() {
        eprintln!("NOT RUN: set DLSLIME_TEST_RDMA_EXPECT (scripts/test-rdma.sh does)");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "NOT RUN under CI"
        );
    }
    e
}

fn assert_unavailable(e: &dlslime::Error, names: &str) {
    assert_eq!(e.status(), Status::RdmaUnavailable, "{e}");
    assert!(
        e.message().contains(names),
        "message {e} does not name {names:?}"
    );
}

#[test]
fn rdma_calls_fail_with_a_typed_status_naming_what_is_missing() {
    let Some(expect) = expectation() else { return };
    let names = match expect.as_str() {
        "no-library" => {
            assert!(
                !libibverbs_loads(),
                "libibverbs.so.1 loads here: the environment does not hide it"
            );
            "libibverbs.so.1"
        }
        "no-device" => {
            assert!(libibverbs_loads(), "libibverbs.so.1 is not installed");
            assert_eq!(available_nics().unwrap(), Vec::<String>::new());
            "no RDMA device"
        }
        other => panic!("unknown expectation {other:?}"),
    };
    if expect == "no-library" {
        assert_unavailable(&available_nics().unwrap_err(), names);
    }
    let e = RdmaContext::open(RdmaConfig::default()).err().unwrap();
    assert_unavailable(&e, names);
    let e = RdmaEndpoint::open(Some("mlx5_0"), 1, None, 1)
        .err()
        .unwrap();
    assert_eq!(e.status(), Status::RdmaUnavailable, "{e}");
    // the same answer every time (the load is attempted once)
    let e2 = RdmaContext::open(RdmaConfig::default()).err().unwrap();
    assert_eq!(
        e2.message(),
        RdmaContext::open(RdmaConfig::default())
            .err()
            .unwrap()
            .message()
    );
    // a memory pool is still a memory pool
    let pool = MemoryPool::new();
    let mut b = vec![0u8; 64];
    // SAFETY: `b` lives until the end of the test, after the pool's last use.
    let h = unsafe { pool.register(Some("b"), b.as_mut_ptr(), 64).unwrap() };
    assert_eq!(pool.handle("b"), Some(h));
    let _ = RdmaEndpointConfig::default();
}
