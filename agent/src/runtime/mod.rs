//! What runs inside the traced processes: OS threads and process resources for any
//! target, and (for Go binaries) goroutines, GC and the runtime's own structures.
//!
//! `process` reads /proc for CPU, memory and fds and keeps the live thread count that
//! sched tracepoint events maintain; `gobin` analyses Go executables.

pub mod allgs;
pub mod go;
pub mod gobin;
pub mod gomem;
pub mod process;
