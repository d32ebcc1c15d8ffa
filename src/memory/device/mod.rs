//! CUDA device memory, through cudarc with the driver loaded at run time.
//!
//! * [`mod@driver`] — loading `libcuda.so` and `cuInit`; `DeviceUnavailable` without them.
//! * [`location`] — where a pointer lives (host or device N), asked of the driver.
//! * [`copier`] — the [`Copier`] trait (region ↔ host bytes) and the host-memory copier.
//! * [`cuda_copier`] — the CUDA copier (device ↔ pinned host, on a stream).
//! * [`staging`] — the bounded pool of pinned staging buffers.
//! * [`pipeline`] — chunked transfers through the pool, copies overlapped with the I/O.
//! * [`staged`] — the table of staged ranges the transports' I/O paths consult.
//! * [`ipc`] — CUDA IPC handles (same-host device-to-device).
//! * [`stream`] — stream ordering: wait for a stream before, signal it after.
//! * [`alloc`] — device memory the library allocates (PeerAgent `allocate_memory_region`).
//! * [`dmabuf`] — GPUDirect RDMA: dma-buf export, nvidia-peermem detection.

pub mod alloc;
pub mod copier;
pub mod cuda_copier;
pub mod dmabuf;
pub mod driver;
pub mod ipc;
pub mod location;
pub mod pipeline;
pub mod staged;
pub mod staging;
pub mod stream;

pub use copier::{Copier, HostCopier};
pub use cuda_copier::CudaCopier;
pub use driver::{available, driver, Driver};
pub use location::{locate, require_device, Location};
pub use pipeline::{recv_staged, send_staged};
pub use staged::StagedRange;
pub use staging::{HostMemory, StagingBuf, StagingConfig, StagingPool, StagingStats};
