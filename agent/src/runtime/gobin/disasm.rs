//! Where a Go function returns, found by decoding its machine code.
//!
//! The agent may not use uretprobes on Go code: a uretprobe replaces the return address on
//! the stack, and when the goroutine's stack is copied (grown/shrunk) or unwound by the
//! runtime (traceback, panics, GC stack scans) the runtime finds a trampoline address where
//! it expects a Go pc and dies with "unexpected return pc". So return-side probes go on every
//! RET instruction of the function instead.
//!
//! Go's amd64 code contains no data (jump tables live in rodata), so a linear sweep from the
//! entry decodes every instruction. Exits other than RET:
//! - Tail calls: the Go compiler does not emit them for ordinary Go functions, but some
//!   wrappers and hand-written assembly end in a direct `JMP` to another function (e.g.
//!   `runtime.morestack_noctxt` jumps to `runtime.morestack`). Those are reported as
//!   `tail_calls`: such a function returns through the jump target's RET, so a return probe
//!   has to go there (filtered by goroutine) instead.
//! - Calls to functions that never return (`runtime.gopanic`, `runtime.goexit1`'s `mcall`,
//!   `runtime.throw`) simply have no RET after them.
//! - Indirect `JMP reg` inside Go functions are switch jump tables (Go >= 1.19) and stay in
//!   the function; they are not reported.

use iced_x86::{Code, Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind};

/// Exits of one function, as virtual addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuncExits {
    /// Address of every `RET` (0xC3, or 0xC2 imm16) in the function.
    pub rets: Vec<u64>,
    /// `(address of the JMP, its target)` for direct jumps that leave the function.
    pub tail_calls: Vec<(u64, u64)>,
}

/// Decodes `code`, the bytes of a function at `entry`; `Err(address)` at the first byte
/// sequence that is not a valid instruction.
pub(super) fn exits_amd64(code: &[u8], entry: u64) -> Result<FuncExits, u64> {
    let end = entry + code.len() as u64;
    let mut out = FuncExits::default();
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    while dec.can_decode() {
        let ins = dec.decode();
        if ins.code() == Code::INVALID {
            return Err(ins.ip());
        }
        match ins.mnemonic() {
            Mnemonic::Ret => out.rets.push(ins.ip()),
            Mnemonic::Jmp if ins.op0_kind() == OpKind::NearBranch64 => {
                let target = ins.near_branch_target();
                if target < entry || target >= end {
                    out.tail_calls.push((ins.ip(), target));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Return addresses of `CALL`s to `target` inside `code` (at `entry`): what a callee sees as
/// its caller pc. Used to find `go` statements (calls to runtime.newproc) in tests and tools.
pub(super) fn calls_to(code: &[u8], entry: u64, target: u64) -> Vec<u64> {
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut out = Vec::new();
    while dec.can_decode() {
        let ins = dec.decode();
        if ins.mnemonic() == Mnemonic::Call
            && ins.op0_kind() == OpKind::NearBranch64
            && ins.near_branch_target() == target
        {
            out.push(ins.next_ip());
        }
    }
    out
}

/// How an instruction uses a RIP-relative memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RipUse {
    /// `LEA`: only the address is taken (e.g. `&allglock` passed to `lock`).
    Addr,
    /// Read (loads, compares, arithmetic sources).
    Read,
    /// `MOV`-family store: the memory operand is the destination.
    Write,
}

/// One RIP-relative memory operand of an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RipRef {
    /// Address of the instruction.
    pub ip: u64,
    /// The referenced address (link-time va).
    pub target: u64,
    /// Bytes accessed (0 for `LEA` and for operands without a fixed size).
    pub size: u64,
    pub kind: RipUse,
}

/// Every RIP-relative memory operand in `code` (at `entry`); `Err(address)` at the first
/// invalid instruction. Go's amd64 code reaches package-level variables only this way (also
/// in PIE and externally linked binaries), so these are the globals a function touches.
pub(super) fn rip_refs_amd64(code: &[u8], entry: u64) -> Result<Vec<RipRef>, u64> {
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut out = Vec::new();
    while dec.can_decode() {
        let ins = dec.decode();
        if ins.code() == Code::INVALID {
            return Err(ins.ip());
        }
        if !ins.is_ip_rel_memory_operand() {
            continue;
        }
        let kind = match ins.mnemonic() {
            Mnemonic::Lea => RipUse::Addr,
            Mnemonic::Mov
            | Mnemonic::Movups
            | Mnemonic::Movaps
            | Mnemonic::Movdqu
            | Mnemonic::Movdqa
            | Mnemonic::Movq
            | Mnemonic::Movd
            | Mnemonic::Movsd
            | Mnemonic::Movss
                if ins.op0_kind() == OpKind::Memory =>
            {
                RipUse::Write
            }
            _ => RipUse::Read,
        };
        let size = if kind == RipUse::Addr {
            0
        } else {
            mem_bytes(ins.memory_size())
        };
        out.push(RipRef {
            ip: ins.ip(),
            target: ins.ip_rel_memory_address(),
            size,
            kind,
        });
    }
    Ok(out)
}

/// Bytes of the memory operand sizes that matter for Go globals (`MemorySize::size` needs
/// iced-x86's `instr_info` feature); 0 for anything else.
fn mem_bytes(m: MemorySize) -> u64 {
    use MemorySize as M;
    match m {
        M::UInt8 | M::Int8 => 1,
        M::UInt16 | M::Int16 => 2,
        M::UInt32 | M::Int32 | M::Float32 => 4,
        M::UInt64 | M::Int64 | M::Float64 | M::Packed64_Float32 => 8,
        M::UInt128
        | M::Int128
        | M::Packed128_UInt64
        | M::Packed128_Int64
        | M::Packed128_Float32
        | M::Packed128_Float64 => 16,
        _ => 0,
    }
}

/// The Go slice headers (`ptr, len, cap`: three 8-byte words at `A`, `A+8`, `A+16`) that
/// `refs` both read and write word by word: every word of the header is read or written
/// with an access of at least 8 bytes, and the pointer word is stored. This is how
/// `s = append(s, x)` on a package-level slice compiles (load ptr/len/cap, call growslice
/// if needed, store them back). Sorted, deduplicated.
pub(super) fn appended_slice_headers(refs: &[RipRef]) -> Vec<u64> {
    use std::collections::BTreeSet;
    let mut words = BTreeSet::new();
    let mut written = BTreeSet::new();
    for r in refs {
        if r.kind == RipUse::Addr || r.size < 8 {
            continue;
        }
        for w in (0..r.size / 8).map(|i| r.target + 8 * i) {
            words.insert(w);
            if r.kind == RipUse::Write {
                written.insert(w);
            }
        }
    }
    written
        .iter()
        .copied()
        .filter(|&a| words.contains(&(a + 8)) && words.contains(&(a + 16)))
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn finds_rets_and_tail_jumps() {
        // 0x1000: cmp rsp,[r14+0x10]; jbe +2; ret; int3; jmp 0x2000; ret 8
        let code = [
            0x49, 0x3b, 0x66, 0x10, // cmp
            0x76, 0x02, // jbe 0x1008 (inside)
            0xc3, // ret @0x1006
            0xcc, // int3
            0xe9, 0xf3, 0x0f, 0x00, 0x00, // jmp 0x2000 @0x1008
            0xc2, 0x08, 0x00, // ret 8 @0x100d
        ];
        let e = exits_amd64(&code, 0x1000).unwrap();
        assert_eq!(e.rets, vec![0x1006, 0x100d]);
        assert_eq!(e.tail_calls, vec![(0x1008, 0x2000)]);
    }

    #[test]
    fn slice_header_from_rip_refs() {
        // 0x1000: mov rcx,[rip+X+16]; mov rbx,[rip+X+8]; mov rax,[rip+X]; lea rax,[rip+L];
        //         mov [rip+X],rax; mov [rip+X+8],rbx  with X = 0x5000, L = 0x6000
        let mut code = Vec::new();
        let mut ip = 0x1000u64;
        let mut rip = |op: &[u8], target: u64, code: &mut Vec<u8>| {
            let next = ip + op.len() as u64 + 4;
            code.extend_from_slice(op);
            code.extend_from_slice(&((target as i64 - next as i64) as i32).to_le_bytes());
            ip = next;
        };
        rip(&[0x48, 0x8b, 0x0d], 0x5010, &mut code);
        rip(&[0x48, 0x8b, 0x1d], 0x5008, &mut code);
        rip(&[0x48, 0x8b, 0x05], 0x5000, &mut code);
        rip(&[0x48, 0x8d, 0x05], 0x6000, &mut code);
        rip(&[0x48, 0x89, 0x05], 0x5000, &mut code);
        rip(&[0x48, 0x89, 0x1d], 0x5008, &mut code);
        let refs = rip_refs_amd64(&code, 0x1000).unwrap();
        assert_eq!(refs.len(), 6);
        assert_eq!(refs[0].target, 0x5010);
        assert_eq!(refs[0].kind, RipUse::Read);
        assert_eq!(refs[3].kind, RipUse::Addr);
        assert_eq!(refs[4].kind, RipUse::Write);
        assert_eq!(refs[4].size, 8);
        assert_eq!(appended_slice_headers(&refs), vec![0x5000]);
        // Without the cap load there is no three-word header.
        assert!(appended_slice_headers(&refs[1..]).is_empty());
    }

    #[test]
    fn invalid_code_is_an_error() {
        // 0x06 (push es) is invalid in 64-bit mode.
        assert_eq!(exits_amd64(&[0x90, 0x06], 0x10), Err(0x11));
    }
}
