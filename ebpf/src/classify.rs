//! The socket classifier: on a socket's first data syscall, what do its first bytes
//! speak? The decision is stored with the socket (`SockInfo::class` in `SOCKS`) so that
//! every later syscall costs one byte compare: TLS and unknown protocols then send only
//! byte counts to userspace, not their payload.
//!
//! The rules themselves are `periscope_common::classify`, shared with the agent (its
//! unit tests and fuzzers run the same code). This file only maps the verdict to a
//! stored class, from bytes already in the scratch buffer: user memory is never read
//! twice.

use periscope_common::*;

/// The stored class for a socket whose first chunk put `head` bytes at the start of
/// `payload`. `role` is the socket's: an adopted socket or one found at attach time
/// (`ROLE_UNKNOWN`) may have been joined in the middle of a message, so bytes that
/// match nothing do not condemn it; the agent's parser decides instead.
#[inline(always)]
pub fn decide(payload: &[u8; SCRATCH_PAYLOAD], head: usize, role: u32) -> u8 {
    let mut first = [0u8; CLASSIFY_LEN];
    // A constant-length copy: bytes past `head` are stale but `classify` ignores them.
    first.copy_from_slice(&payload[..CLASSIFY_LEN]);
    match classify(&first, head) {
        Class::Http1 => CLASS_HTTP1,
        Class::Http2 => CLASS_HTTP2,
        Class::Tls => CLASS_TLS,
        Class::Unknown if role != ROLE_UNKNOWN => CLASS_UNKNOWN,
        Class::Unknown | Class::NeedMore => CLASS_DEFERRED,
    }
}
