//! What `cargo xtask` commands share with the tests that run them in part: the soak ([`soak`]),
//! which `cargo xtask soak` runs for an hour and the in-cluster tests for a few minutes.

pub mod soak;
