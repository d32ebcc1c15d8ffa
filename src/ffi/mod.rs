//! The C ABI (`include/dlslime.h`). Nothing else in the crate knows about C.
//!
//! A thin, mechanical layer: every export checks its pointers, converts them to the Rust
//! objects they stand for, calls the Rust API once and converts the outcome back. No
//! transport or memory logic lives here.
//!
//! Layout (one module per C object family, in the style of rustls-ffi):
//!
//! * `panic` (private): `ffi_boundary!`, the `catch_unwind` wrapper around every export,
//!   and the typed fallback values (`DLSLIME_STATUS_PANIC`, NULL, 0, false).
//! * `cast` (private): the `Castable` trait that fixes each handle's ownership model
//!   (Box or Arc) once, checked casts, and the NULL-check macros.
//! * `args` (private): timeouts, possibly-empty buffers, optional strings, out-parameters
//!   (`Out`), futures handed out; `options` (private): reading versioned `*_options_t`
//!   structs.
//! * `shapes` (private): the export bodies that recur (`_options_init`, `_free`,
//!   string and value getters, calls that hand out a future), each written once.
//!
//! The public modules, one per section of the header and in its order (the header
//! groups each module's declarations under a banner of its first doc paragraph:
//! `scripts/header_sections.py`, whose `SECTIONS` list must name a new module):
//!
//! * [`status`] — `dlslime_status_t` (the Rust [`Status`](crate::Status), renamed),
//!   the thread-local last-error message, `dlslime_status_str`, `dlslime_string_free`.
//! * [`version`] — `dlslime_version`, `dlslime_version_number`.
//! * [`memory`] — `dlslime_memory_pool_t`.
//! * [`device`] — `dlslime_cuda_device_count` (CUDA loaded at run time).
//! * [`future`] — `dlslime_future_t`.
//! * [`endpoint`] — `dlslime_endpoint_t`, `dlslime_assignment_t`.
//! * [`tcp`] — `dlslime_tcp_options_t`, `dlslime_tcp_context_t`, `dlslime_tcp_endpoint_new`.
//! * [`shm`] — `dlslime_alloc_shared`, `dlslime_shm_options_t`, `dlslime_shm_endpoint_new`.
//! * [`rdma`] — `dlslime_rdma_options_t`, `dlslime_rdma_context_t`,
//!   `dlslime_rdma_endpoint_new`, `dlslime_rdma_available_nics`.
//! * [`peer`] — `dlslime_peer_agent_t`, `dlslime_peer_connection_t`,
//!   `dlslime_peer_options_t`, `dlslime_named_assignment_t`.
//! * [`rpc`] — SlimeRPC: `dlslime_rpc_session_t`, `dlslime_rpc_call_t`, `dlslime_rpc_request_t`.
//! * [`obs`] — `dlslime_obs_snapshot`, `dlslime_obs_set_enabled`, `dlslime_obs_enabled`.
//! * [`ring`] — the slot ring: `dlslime_ring_t`, `dlslime_ring_view_t`,
//!   `dlslime_ring_server_t`, `dlslime_ring_client_t`, `dlslime_ring_payload_t`.
//!
//! Conventions: fallible functions return `dlslime_status_t` and write their
//! out-parameters only on success; every failure (including a NULL argument and a caught
//! panic) stores a message in the calling thread's last-error slot.
#![allow(non_camel_case_types)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod panic;
#[macro_use]
mod cast;
#[macro_use]
mod shapes;

mod args;
pub mod device;
pub mod endpoint;
pub mod future;
pub mod memory;
pub mod obs;
mod options;
pub mod peer;
pub mod rdma;
pub mod ring;
pub mod rpc;
pub mod shm;
pub mod status;
pub mod tcp;
pub mod version;

pub use endpoint::{dlslime_assignment_t, dlslime_endpoint_t};
pub use future::dlslime_future_t;
pub use memory::{dlslime_memory_pool_t, dlslime_mr_handle_t, dlslime_remote_handle_t};
pub use rdma::{dlslime_rdma_context_t, dlslime_rdma_options_t};
pub use shm::dlslime_shm_options_t;
pub use status::dlslime_status_t;
pub use tcp::{dlslime_tcp_context_t, dlslime_tcp_options_t};
