//! Operation state and the futures handed to users.
//!
//! | file | holds |
//! |---|---|
//! | `op` | [`OpState`]: one operation's outcome (parts, first error, imm, bytes), its deadline, waiting and aborting; [`Driver`] for inline progress; [`Notify`] for a watcher of failures |
//! | `handle` | [`Future`], the user's handle: an `OpState`, or an outcome known at submission |
//! | `inflight` | [`InflightOps`]: the unfinished operations of an endpoint, for cancel, shutdown and peer death |
//! | `observe` | [`observe`], [`track`]: counting a transport's operations in its endpoint's [`crate::obs`] counters |
//! | `pool` | [`OpPool`]: recycled `OpState`s for an endpoint's small operations, which is also their in-flight table |

mod handle;
mod inflight;
mod observe;
mod op;
mod pool;

pub use handle::Future;
pub use inflight::InflightOps;
pub use observe::{bytes_of, observe, track};
pub use op::{Driver, Notify, OpState};
pub use pool::OpPool;
