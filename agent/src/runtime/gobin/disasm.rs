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

use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind};

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
    fn invalid_code_is_an_error() {
        // 0x06 (push es) is invalid in 64-bit mode.
        assert_eq!(exits_amd64(&[0x90, 0x06], 0x10), Err(0x11));
    }
}
