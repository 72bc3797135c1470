//! pod-operator: the talk's PodRequest service, on Operon's runtime.
//!
//! A `PodRequest` (`pod.jewzaam.org/v1alpha1`) asks for a Pod; the controller creates it, keeps
//! it existing, replaces it when the request's spec changes, and leaves its removal to the
//! garbage collector through the Pod's controller ownerReference.

pub mod api;
pub mod cached_pod;
pub mod controller;
pub mod deploy;
