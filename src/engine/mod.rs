//! The progress engine: how threads wait, how long they spin, and the knobs for both.
//!
//! Waiting is spin-then-park everywhere: a short spin (cheap when the answer is a few
//! microseconds away) followed by a futex park (cheap for the CPU when it is not). On the
//! 2-core machines this is built on, two processes that spin forever starve each other,
//! so every spin is bounded by [`Config::spin`], and a thread that gets preempted stops
//! spinning for a while ([`preempt`]). Long deadlines read a cheap clock ([`clock`]).

pub mod clock;
pub mod config;
pub mod futex;
pub mod preempt;
pub mod wait;

pub use config::{Config, ProgressMode};
pub use wait::Deadline;
