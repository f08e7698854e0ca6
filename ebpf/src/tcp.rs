//! TCP state tracepoints (`sock:inet_sock_set_state`, `sock:inet_sk_error_report`):
//! the local address of client sockets, and connects that fail.
//!
//! A syscall tracepoint sees the peer address a process passes to connect(2), never the
//! local port the kernel picks, and reading it from `struct sock` would need kernel
//! struct offsets (no kprobes, fentry or CO-RE here). The state tracepoint reports the
//! whole 4-tuple and the socket's address (`skaddr`) instead:
//! - CLOSE -> SYN_SENT happens inside connect(2), in the connecting thread (before the
//!   local port is chosen): the socket is remembered by skaddr with its process and fd.
//! - SYN_SENT -> ESTABLISHED (any context; the port is set by then): while the connect
//!   still runs, the local address goes into its stash (net.rs) and so into the
//!   ConnOpen event; after a non-blocking connect returned, a ConnEstablished event
//!   carries it. The agent needs it to find the same connection seen from the
//!   server's side (cross-process traces).
//! - SYN_SENT -> CLOSE: inside close(2) of the owner, it gave up (a connect timeout):
//!   reported at once. Otherwise the kernel closed it (RST, SYN retries exhausted)
//!   and `inet_sk_error_report` follows with the errno; it has no skaddr, so the
//!   attempt waits for it keyed by its 4-tuple.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use periscope_common::{tp, *};

use crate::{
    common::*,
    net::{ARGS, STASH_CLOSE, STASH_CONNECT},
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

/// Sockets of traced processes in SYN_SENT, by skaddr; the value is the event their
/// end will be reported as. LRU: entries of sockets whose end we missed cannot pile up.
#[map]
static CONNECTING: LruHashMap<u64, ConnOpenEvent> = LruHashMap::with_max_entries(16_384, 0);

/// Attempts the kernel closed, waiting for their error report, by [`tuple_key`].
#[map]
static FAILING: LruHashMap<u64, ConnOpenEvent> = LruHashMap::with_max_entries(4_096, 0);

/// Errnos a failed connect reports (positive).
#[inline(always)]
pub fn is_connect_failure(errno: i64) -> bool {
    matches!(
        errno,
        1 /* EPERM */ | 13 /* EACCES */ | 99 /* EADDRNOTAVAIL */ | 101 /* ENETUNREACH */
            | 104 /* ECONNRESET */ | 110 /* ETIMEDOUT */ | 111 /* ECONNREFUSED */
            | 113 /* EHOSTUNREACH */
    )
}

/// The 4-tuple both tracepoints' records carry (offsets from tracefs, see
/// `common::TP_FIELDS`; `base` is `tp::STATE_TUPLE` or `tp::ERROR_TUPLE`).
#[derive(Clone, Copy)]
struct Tuple {
    sport: u16,
    dport: u16,
    family: u16,
    protocol: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

#[inline(always)]
fn read_tuple(ctx: &TracePointContext, base: usize) -> Option<Tuple> {
    let sport: u16 = tp_read(ctx, base + tp::TUPLE_SPORT)?;
    let dport: u16 = tp_read(ctx, base + tp::TUPLE_DPORT)?;
    let family: u16 = tp_read(ctx, base + tp::TUPLE_FAMILY)?;
    let protocol: u16 = tp_read(ctx, base + tp::TUPLE_PROTOCOL)?;
    let mut t = Tuple {
        sport,
        dport,
        family,
        protocol,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = tp_read(ctx, base + tp::TUPLE_SADDR)?;
        let d: [u8; 4] = tp_read(ctx, base + tp::TUPLE_DADDR)?;
        t.saddr[..4].copy_from_slice(&s);
        t.daddr[..4].copy_from_slice(&d);
    } else if family == AF_INET6 {
        t.saddr = tp_read(ctx, base + tp::TUPLE_SADDR6)?;
        t.daddr = tp_read(ctx, base + tp::TUPLE_DADDR6)?;
    } else {
        return None;
    }
    Some(t)
}

/// Key of a connecting socket: both ports and a fold of the peer address. Two sockets
/// of one node share it only if they share local port, peer port and peer address.
#[inline(always)]
fn tuple_key(t: &Tuple) -> u64 {
    let mut fold: u32 = 0;
    let mut i = 0;
    while i < 4 {
        let w = u32::from_ne_bytes([
            t.daddr[i * 4],
            t.daddr[i * 4 + 1],
            t.daddr[i * 4 + 2],
            t.daddr[i * 4 + 3],
        ]);
        fold ^= w.rotate_left(i as u32 * 7);
        i += 1;
    }
    ((t.sport as u64) << 48) | ((t.dport as u64) << 32) | fold as u64
}

#[tracepoint]
pub fn sock_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

fn try_set_state(ctx: &TracePointContext) -> Option<()> {
    let old: i32 = tp_read(ctx, tp::STATE_OLD)?;
    let new: i32 = tp_read(ctx, tp::STATE_NEW)?;
    let interesting = (old == TCP_CLOSE && new == TCP_SYN_SENT)
        || (old == TCP_SYN_SENT && (new == TCP_ESTABLISHED || new == TCP_CLOSE));
    if !interesting {
        return None;
    }
    let skaddr: u64 = tp_read(ctx, tp::STATE_SKADDR)?;
    let t = read_tuple(ctx, tp::STATE_TUPLE)?;
    if t.protocol != IPPROTO_TCP {
        return None;
    }
    if new == TCP_SYN_SENT {
        // Inside connect(2), in the connecting thread.
        let pid_tgid = bpf_get_current_pid_tgid();
        if !is_target((pid_tgid >> 32) as u32) {
            return None;
        }
        let s = ARGS.get_ptr_mut(&pid_tgid)?;
        let s = unsafe { &mut *s };
        if s.syscall != STASH_CONNECT {
            return None;
        }
        s.syn_sent = 1;
        let ev = ConnOpenEvent {
            header: header(EventKind::ConnFail, pid_tgid),
            fd: s.fd,
            role: ROLE_CLIENT,
            listen_fd: NO_FD,
            family: t.family,
            peer_port: t.dport,
            peer_addr: t.daddr,
            local_family: 0,
            local_port: 0,
            error: 0,
            local_addr: [0; 16],
            start_ns: s.enter_ns,
        };
        let _ = CONNECTING.insert(&skaddr, &ev, 0);
        return None;
    }
    let mut ev = unsafe { CONNECTING.get(&skaddr) }.copied()?;
    let _ = CONNECTING.remove(&skaddr);
    ev.local_family = t.family;
    ev.local_port = t.sport;
    ev.local_addr = t.saddr;
    let owner = ev.header.pid_tgid;
    if new == TCP_ESTABLISHED {
        if let Some(s) = ARGS.get_ptr_mut(&owner) {
            let s = unsafe { &mut *s };
            if s.syscall == STASH_CONNECT && s.fd == ev.fd {
                // connect(2) is still running: its ConnOpen event will carry it.
                s.local_family = t.family;
                s.local_port = t.sport;
                s.local_addr = t.saddr;
                return None;
            }
        }
        ev.header.kind = EventKind::ConnEstablished as u32;
        ev.header.ts_ns = header(EventKind::ConnEstablished, 0).ts_ns;
        ev.start_ns = 0;
        output(&ev);
        return None;
    }
    // SYN_SENT -> CLOSE. Inside close(2) of the owner: it gave up waiting.
    let pid_tgid = bpf_get_current_pid_tgid();
    let closing = (pid_tgid >> 32) == (owner >> 32)
        && unsafe { ARGS.get(&pid_tgid) }.is_some_and(|s| s.syscall == STASH_CLOSE);
    if closing {
        report(ev, 0);
    } else {
        let _ = FAILING.insert(&tuple_key(&t), &ev, 0);
    }
    None
}

#[tracepoint]
pub fn sock_inet_sk_error_report(ctx: TracePointContext) -> u32 {
    let _ = try_error_report(&ctx);
    0
}

fn try_error_report(ctx: &TracePointContext) -> Option<()> {
    let error: i32 = tp_read(ctx, tp::ERROR_ERROR)?;
    let t = read_tuple(ctx, tp::ERROR_TUPLE)?;
    if error == 0 || t.protocol != IPPROTO_TCP {
        return None;
    }
    let key = tuple_key(&t);
    let ev = unsafe { FAILING.get(&key) }.copied()?;
    let _ = FAILING.remove(&key);
    report(ev, error);
    None
}

#[inline(always)]
fn report(mut ev: ConnOpenEvent, error: i32) {
    ev.header.kind = EventKind::ConnFail as u32;
    ev.header.ts_ns = header(EventKind::ConnFail, 0).ts_ns;
    ev.error = error;
    output(&ev);
}
