//! Container images of operators, built without a container engine or daemon: the
//! `operon-image` crate (`operon build`, `cargo xtask image`).

pub use operon_image::{buildah_available, static_binary};
