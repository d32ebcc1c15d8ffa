//! The C ABI (see include/dlslime.h).
