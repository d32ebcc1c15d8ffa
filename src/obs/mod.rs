//! Observability: counters and latency histograms per endpoint, per peer and per RPC
//! method, read as one JSON snapshot (`docs/observability.md`).
//!
//! Off by default (as in the original: `DLSLIME_OBS=1` or [`set_enabled`] turns it on);
//! off, every hook is one relaxed load and a branch. On, an operation costs two clock
//! reads and a few relaxed atomic adds on its endpoint's counters; nothing locks.
//!
//! | file | holds |
//! |---|---|
//! | `switch` | [`enabled`], [`set_enabled`]: the global switch; [`now_ns`], the clock |
//! | `histogram` | [`Histogram`]: lock-free log-linear latency buckets; [`HistSnapshot`] |
//! | `counters` | [`OpKind`]; [`EndpointStats`]: one endpoint's counters by kind and by status |
//! | `tag` | [`OpTag`]: what one operation carries so that its outcome is counted once |
//! | `rpc` | [`MethodStats`]: SlimeRPC calls, errors and latency per method |
//! | `registry` | the process's table of counters: [`register_endpoint`], [`method`] |
//! | `snapshot` | [`snapshot`]: the JSON document (`dlslime_obs_snapshot`, `obs_snapshot()`) |

mod counters;
mod histogram;
mod registry;
mod rpc;
mod snapshot;
mod switch;
mod tag;

pub use counters::{EndpointStats, EndpointValues, OpKind, OpValues};
pub use histogram::{HistSnapshot, Histogram};
pub use registry::{method, register_endpoint};
pub use rpc::{MethodStats, MethodValues};
pub use snapshot::{now_ms, snapshot, status_key, MAX_ENDPOINTS, SCHEMA_VERSION};
pub use switch::{enabled, now_ns, set_enabled};
pub use tag::OpTag;
