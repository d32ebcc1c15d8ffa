//! Observability: counters and latency histograms per endpoint, per peer and per RPC
//! method, read as one JSON snapshot (`docs/observability.md`).
//!
//! Off by default (as in the original: `DLSLIME_OBS=1` or [`set_enabled`] turns it on);
//! off, every hook is one relaxed load and a branch. On, an operation costs a few plain
//! adds on its thread's shard of its endpoint's counters (no locked instruction, no
//! cache line shared with another writer) and, when sampled, two clock reads.
//!
//! | file | holds |
//! |---|---|
//! | `switch` | [`enabled`], [`set_enabled`]: the global switch; [`now_ns`], the clock |
//! | `histogram` | [`Histogram`]: lock-free log-linear latency buckets; [`HistSnapshot`] |
//! | `shard` | one thread's share of an endpoint's counters (single writer, plain stores) |
//! | `local` | per thread: its cache of shards, and which operations it times (sampling) |
//! | `counters` | [`OpKind`]; [`EndpointStats`]: one endpoint's counters by kind and by status |
//! | `tag` | [`OpTag`]: what one operation carries so that its outcome is counted once |
//! | `retries` | [`Retry`], [`retried`]: what the engine did again, process-wide, by kind |
//! | `rpc` | [`MethodStats`]: SlimeRPC calls, errors and latency per method |
//! | `nics` | [`nic_counters`]: the RDMA NICs' port and hardware counters from sysfs |
//! | `registry` | the process's table of counters: [`register_endpoint`], [`method`] |
//! | `snapshot` | [`snapshot`]: the JSON document (`dlslime_obs_snapshot`, `obs_snapshot()`) |

mod counters;
mod histogram;
mod local;
mod nics;
mod registry;
mod retries;
mod rpc;
mod shard;
mod snapshot;
mod switch;
mod tag;

pub use counters::{EndpointStats, EndpointValues, OpKind, OpValues};
pub use histogram::{HistSnapshot, Histogram};
pub use local::sample;
pub use nics::{nic_counters, SYSFS_IB};
pub use registry::{method, register_endpoint};
pub use retries::{retried, retry_counts, Retry};
pub use rpc::{MethodStats, MethodValues};
pub use snapshot::{now_ms, snapshot, status_key, MAX_ENDPOINTS, SCHEMA_VERSION};
pub use switch::{enabled, now_ns, set_enabled};
pub use tag::OpTag;
