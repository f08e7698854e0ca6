//! Periscope's agent as a library: the stages of the pipeline, in the order data flows
//! through them. `main.rs` only parses the command line and wires the stages together.
//!
//! probes -> events -> conn -> http -> span -> export, with resource/telemetry beside.

pub mod config;
pub mod conn;
pub mod discovery;
pub mod doctor;
pub mod events;
pub mod export;
pub mod h2;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod probes;
pub mod resource;
pub mod route;
pub mod runtime;
pub mod sampling;
pub mod span;
pub mod telemetry;
