//! `snapshot!`: a counters struct of the C ABI filled from the live atomics of the same
//! names, each read with a `Relaxed` load (counters are independent; a snapshot is not a
//! consistent cut). The server and the client take theirs with it, so a new counter is
//! one more name, not one more hand-written line.

/// `snapshot!(stats => Counters { a, b; c: inner.c })`: `Counters { a: stats.a.load(..),
/// b: .., c: stats.inner.c.load(..) }`. The fields after `;` name their atomic by path.
macro_rules! snapshot {
    ($stats:expr => $ty:ident { $($f:ident),+ $(; $($g:ident: $($path:ident).+),+)? }) => {{
        let s = $stats;
        let load = |a: &::std::sync::atomic::AtomicU64| a.load(::std::sync::atomic::Ordering::Relaxed);
        $ty {
            $($f: load(&s.$f),)+
            $($($g: load(&s.$($path).+),)+)?
        }
    }};
}
