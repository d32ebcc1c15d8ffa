//! The unfinished operations of an endpoint whose operations are not pooled (or did not
//! fit its pool).

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::op::OpState;
use crate::error::Status;

/// The operations of one endpoint that have not completed, so `cancel_all`, `shutdown`
/// and peer death can fail them. Holds weak references; finished entries are dropped
/// whenever the list has doubled since the last sweep.
#[derive(Default)]
pub struct InflightOps {
    inner: Mutex<InflightInner>,
}

#[derive(Default)]
struct InflightInner {
    ops: Vec<Weak<OpState>>,
    swept_len: usize,
}

impl InflightOps {
    pub fn track(&self, op: &Arc<OpState>) {
        let mut g = self.inner.lock();
        if g.ops.len() >= 64 && g.ops.len() >= 2 * g.swept_len {
            g.ops.retain(|w| w.upgrade().is_some_and(|o| !o.is_done()));
            g.swept_len = g.ops.len();
        }
        g.ops.push(Arc::downgrade(op));
    }

    /// Fails every operation still pending; completed ones keep their outcome.
    pub fn fail_all(&self, status: Status, message: &str) -> usize {
        let ops = std::mem::take(&mut self.inner.lock().ops);
        let mut n = 0;
        for op in ops.iter().filter_map(Weak::upgrade) {
            if op.abort(status, message) {
                n += 1;
            }
        }
        self.inner.lock().swept_len = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::op::tests::op;
    use crate::future::Future;
    use std::time::Duration;

    #[test]
    fn fail_all_leaves_completed_ops_alone() {
        let reg = InflightOps::default();
        let a = op(1, Duration::from_secs(10));
        let b = op(1, Duration::from_secs(10));
        reg.track(&a);
        reg.track(&b);
        a.part_done(Status::Ok, None);
        assert_eq!(reg.fail_all(Status::Cancelled, "x"), 1);
        assert_eq!(Future::new(a).status(), Status::Ok);
        assert_eq!(Future::new(b).status(), Status::Cancelled);
    }
}
