//! A system library loaded at run time (libcuda, libibverbs): `libdlslime.so` has no
//! NEEDED entry on it, so the library loads and serves what it can on hosts without it.

use std::sync::OnceLock;

use crate::error::{Error, Result, Status};

/// A library loaded on first use by `load`; the outcome, the library or why there is
/// none, is kept for the life of the process, so every later call gets the same answer
/// (a missing library fails with `missing`).
pub struct RuntimeLib<T> {
    cell: OnceLock<std::result::Result<T, String>>,
    load: fn() -> std::result::Result<T, String>,
    missing: Status,
}

impl<T> RuntimeLib<T> {
    pub const fn new(load: fn() -> std::result::Result<T, String>, missing: Status) -> Self {
        RuntimeLib {
            cell: OnceLock::new(),
            load,
            missing,
        }
    }

    /// The loaded library (loading it now on first use), or why there is none.
    pub fn get(&self) -> Result<&T> {
        self.cell
            .get_or_init(self.load)
            .as_ref()
            .map_err(|why| Error::new(self.missing, why.clone()))
    }
}
