//! The kernel-event decoder and the connection tracker behind it, on sequences of ring
//! records: well-formed ones built from the input (sockets opened, bytes in both
//! directions with gaps, closes, in any order) mixed with raw garbage records.
//!
//! Oracle: no panic, no hang, and bounded output — never more spans than requests a
//! stream could hold.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use periscope::{
    conn::{Tracker, TrackerConfig},
    events::Event,
    metrics::Metrics,
    resource::ResourceConfig,
    route::RouteConfig,
    sampling::{Sampler, SamplerConfig},
};
use periscope_common::{
    AF_INET, CLASS_UNSEEN, ConnCloseEvent, ConnOpenEvent, DIR_EGRESS, DIR_INGRESS, DataEvent,
    EventHeader, EventKind, MAX_HEAD, MAX_TAIL, NO_FD, ROLE_CLIENT, ROLE_SERVER, SYS_READ,
    SYS_WRITE,
};

#[derive(Arbitrary, Debug)]
enum Op {
    Open { fd: u8, server: bool, port: u16 },
    Data {
        fd: u8,
        ingress: bool,
        /// Bytes moved beyond what was captured (a gap before the tail).
        gap: u16,
        tail: u8,
        bytes: Vec<u8>,
    },
    Close { fd: u8 },
    Raw(Vec<u8>),
}

fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

fn header(kind: EventKind, ts: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        _pad: 0,
        ts_ns: ts,
        pid_tgid: (u64::from(pid()) << 32) | u64::from(pid()),
    }
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is one of the plain-data wire structs (repr(C), integers only).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn record(op: &Op, ts: u64) -> Vec<u8> {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    match op {
        Op::Open { fd, server, port } => bytes_of(&ConnOpenEvent {
            header: header(EventKind::ConnOpen, ts),
            fd: u32::from(*fd),
            role: if *server { ROLE_SERVER } else { ROLE_CLIENT },
            listen_fd: NO_FD,
            family: AF_INET,
            peer_port: *port,
            peer_addr: addr,
            local_family: AF_INET,
            local_port: port.wrapping_add(1),
            error: 0,
            local_addr: addr,
            start_ns: 0,
        }),
        Op::Data {
            fd,
            ingress,
            gap,
            tail,
            bytes,
        } => {
            let head = &bytes[..bytes.len().min(MAX_HEAD)];
            let rest = &bytes[head.len()..];
            let tail = &rest[rest.len() - (*tail as usize).min(rest.len()).min(MAX_TAIL)..];
            let total = (head.len() + tail.len()) as u64
                + if tail.is_empty() { 0 } else { u64::from(*gap) };
            let mut r = bytes_of(&DataEvent {
                header: header(EventKind::Data, ts),
                fd: u32::from(*fd),
                direction: if *ingress { DIR_INGRESS } else { DIR_EGRESS },
                total_len: total,
                head_len: head.len() as u32,
                tail_len: tail.len() as u32,
                syscall: if *ingress { SYS_READ } else { SYS_WRITE },
                // Not classified by the kernel yet (generation 0): the payload reaches
                // the tracker's own classification and parsers.
                class: u32::from(CLASS_UNSEEN),
            });
            r.extend_from_slice(head);
            r.extend_from_slice(tail);
            r
        }
        Op::Close { fd } => bytes_of(&ConnCloseEvent {
            header: header(EventKind::ConnClose, ts),
            fd: u32::from(*fd),
            _pad: 0,
        }),
        Op::Raw(b) => b.clone(),
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let metrics = Arc::new(Metrics::default());
    let (resource, _) = ResourceConfig::from_values(Some("svc"), None, "host".into());
    let mut tracker = Tracker::new(TrackerConfig {
        resource,
        routes: RouteConfig::default(),
        sampler: Sampler::new(SamplerConfig::default()),
        metrics,
    });
    tracker.add_process(pid());
    let mut spans = 0usize;
    let mut request_bytes = 0usize;
    for (i, op) in ops.iter().enumerate() {
        if let Op::Data { bytes, .. } = op {
            request_bytes += bytes.len();
        }
        let rec = record(op, 1_000 + i as u64 * 1_000);
        if let Ok(ev) = Event::try_from(rec.as_slice()) {
            tracker.handle(ev, &mut |_| spans += 1);
        }
    }
    tracker.housekeeping();
    // The shortest exchange that makes a span is a request line plus a status line.
    assert!(
        spans <= request_bytes / 16 + ops.len(),
        "{spans} spans from {request_bytes} bytes"
    );
});
