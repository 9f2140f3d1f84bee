//! End-to-end tests of both front doors, in process, on port 0, with a manual clock.

mod auth;
mod batch;
mod connections;
mod counters;
mod errors;
mod http_routes;
mod peers;
mod resp;
mod support;
mod tokens;
