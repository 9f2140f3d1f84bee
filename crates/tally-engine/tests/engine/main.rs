//! The engine's integration tests, as one test binary.

mod convergence;
mod counters;
mod crash;
mod faults;
mod model;
mod namespaces;
mod simulation;
mod support;
