//! Decoding ring-buffer records into typed events.
//!
//! A record is an [`EventHeader`] plus a payload fixed by its kind (see
//! `periscope_common`). Decoding checks sizes before reading and never trusts lengths
//! from the record beyond the bytes actually present.

pub mod reorder;

use periscope_common::{
    BindEvent, ConnAdoptEvent, ConnCloseEvent, ConnDupEvent, ConnOpenEvent, DataEvent, EventHeader,
    EventKind, GcEvent, GoConnEvent, GoRpcCallEvent, GoroutineEvent, ProcessEvent,
};
use thiserror::Error;

#[derive(Debug)]
pub enum Event<'a> {
    ConnOpen(ConnOpenEvent),
    Data {
        ev: DataEvent,
        head: &'a [u8],
        tail: &'a [u8],
    },
    ConnClose(ConnCloseEvent),
    Fork(ProcessEvent),
    Exit(ProcessEvent),
    ThreadStart(ProcessEvent),
    ThreadExit(ProcessEvent),
    Exec(ProcessEvent),
    Bind(BindEvent),
    GoroutineCreate(GoroutineEvent),
    GoroutineExit(GoroutineEvent),
    GcPause(GcEvent),
    GcCycle(GcEvent),
    ConnFail(ConnOpenEvent),
    GoHttpServe(GoConnEvent),
    GoHttpRoundTrip(GoConnEvent),
    ConnEstablished(ConnOpenEvent),
    ConnAdopt(ConnAdoptEvent),
    ConnDup(ConnDupEvent),
    GoSocketRead(GoConnEvent),
    GoGrpcCall(Box<GoRpcCallEvent>),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Reads a `#[repr(C)]` plain-data struct from the front of `bytes`.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked above; T is one of the plain-data wire structs from
    // periscope_common (repr(C), integer fields only, every bit pattern valid), and
    // read_unaligned has no alignment requirement.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

impl<'a> TryFrom<&'a [u8]> for Event<'a> {
    type Error = DecodeError;

    fn try_from(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header: EventHeader = read(bytes)?;
        let kind = EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
        Ok(match kind {
            EventKind::ConnOpen => Event::ConnOpen(read(bytes)?),
            EventKind::ConnClose => Event::ConnClose(read(bytes)?),
            EventKind::ProcessFork => Event::Fork(read(bytes)?),
            EventKind::ProcessExit => Event::Exit(read(bytes)?),
            EventKind::ThreadStart => Event::ThreadStart(read(bytes)?),
            EventKind::ThreadExit => Event::ThreadExit(read(bytes)?),
            EventKind::Exec => Event::Exec(read(bytes)?),
            EventKind::Bind => Event::Bind(read(bytes)?),
            EventKind::GoroutineCreate => Event::GoroutineCreate(read(bytes)?),
            EventKind::GoroutineExit => Event::GoroutineExit(read(bytes)?),
            EventKind::GcPause => Event::GcPause(read(bytes)?),
            EventKind::GcCycle => Event::GcCycle(read(bytes)?),
            EventKind::ConnFail => Event::ConnFail(read(bytes)?),
            EventKind::GoHttpServe => Event::GoHttpServe(read(bytes)?),
            EventKind::GoHttpRoundTrip => Event::GoHttpRoundTrip(read(bytes)?),
            EventKind::ConnEstablished => Event::ConnEstablished(read(bytes)?),
            EventKind::ConnAdopt => Event::ConnAdopt(read(bytes)?),
            EventKind::ConnDup => Event::ConnDup(read(bytes)?),
            EventKind::GoSocketRead => Event::GoSocketRead(read(bytes)?),
            EventKind::GoGrpcCall => Event::GoGrpcCall(Box::new(read(bytes)?)),
            EventKind::Data => {
                let ev: DataEvent = read(bytes)?;
                let payload = &bytes[size_of::<DataEvent>()..];
                let head_len = (ev.head_len as usize).min(payload.len());
                let (head, rest) = payload.split_at(head_len);
                let tail = &rest[..(ev.tail_len as usize).min(rest.len())];
                Event::Data { ev, head, tail }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_common::{DIR_EGRESS, EventKind};

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain-data struct as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_data_with_head_and_tail() {
        let ev = DataEvent {
            header: EventHeader {
                kind: EventKind::Data as u32,
                _pad: 0,
                ts_ns: 7,
                pid_tgid: (42 << 32) | 43,
            },
            fd: 5,
            direction: DIR_EGRESS,
            total_len: 5000,
            head_len: 4,
            tail_len: 2,
            syscall: 1,
            class: 0,
        };
        let mut rec = bytes_of(&ev);
        rec.extend_from_slice(b"HTTPxy");
        let Event::Data { ev, head, tail } = Event::try_from(&rec[..]).unwrap() else {
            panic!("not data");
        };
        assert_eq!(ev.header.tgid(), 42);
        assert_eq!(head, b"HTTP");
        assert_eq!(tail, b"xy");
    }

    #[test]
    fn lying_lengths_are_clamped_to_the_record() {
        let ev = DataEvent {
            header: EventHeader {
                kind: EventKind::Data as u32,
                ..Default::default()
            },
            fd: 1,
            direction: 0,
            total_len: 100,
            head_len: 4000,
            tail_len: 64,
            syscall: 1,
            class: 0,
        };
        let mut rec = bytes_of(&ev);
        rec.extend_from_slice(b"abc");
        let Event::Data { head, tail, .. } = Event::try_from(&rec[..]).unwrap() else {
            panic!("not data");
        };
        assert_eq!(head, b"abc");
        assert!(tail.is_empty());
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert_eq!(
            Event::try_from(&[0u8; 3][..]).unwrap_err(),
            DecodeError::Short(3)
        );
        let h = EventHeader {
            kind: 999,
            ..Default::default()
        };
        assert_eq!(
            Event::try_from(&bytes_of(&h)[..]).unwrap_err(),
            DecodeError::UnknownKind(999)
        );
    }
}
