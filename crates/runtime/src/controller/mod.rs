//! The one way an operator here runs a controller.

pub mod queue;
