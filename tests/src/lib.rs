pub mod client;
pub mod harness;
pub mod receiver;
