pub mod client;
pub mod harness;
pub mod kubeapi;
pub mod receiver;
pub mod traffic;
