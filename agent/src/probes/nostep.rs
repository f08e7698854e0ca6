//! Uprobe sites the kernel runs without single-stepping (x86-64).
//!
//! A uprobe replaces an instruction with INT3. On the hit, after the BPF program, the
//! kernel has to carry out the instruction it replaced: a few kinds it emulates in place
//! (arch/x86/kernel/uprobes.c: `jmp`/`jcc`/`call` rel, `nop`, `push reg`), every other one
//! it copies to a page of the process and single-steps there, which costs a second trap
//! (#DB). In a KVM guest that second trap is the expensive part. Measured on this project's
//! AMD EPYC KVM machine (kernel 6.18), with a trace-event uprobe on a function called in a
//! loop: 0.8 µs per hit on a `push %rbp`, 11.3 µs on a `sub $8,%rsp`. nginx over TLS kept
//! ×0.19 of its throughput with the OpenSSL probes on `SSL_read`/`SSL_write` (whose first
//! instruction is `sub $0x18,%rsp`), and perf put most of the loss in `exc_debug_user`.
//!
//! So a probe goes on the first instruction of a function that the kernel emulates, when
//! the instructions before it provably leave everything the BPF program reads as it was at
//! the entry; otherwise it stays on the entry, which is always right. Nothing here changes
//! what a probe sees, only which of two equivalent addresses it traps at.
//!
//! Hand-written over iced-x86's decoder: which instructions Linux emulates is a kernel
//! fact, not something a disassembler library knows.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// Instructions looked at from an entry before giving up.
const PROLOGUE: usize = 8;
/// Instructions of a Go stack-growth block (argument spills, the call, reloads, the jump
/// back); Go spills at most its 9 integer and 15 float argument registers.
const MORESTACK_BLOCK: usize = 64;

/// Whether the kernel runs a uprobe on the instruction starting `bytes` without
/// single-stepping it: the kinds `branch_setup_xol_ops` and `push_setup_xol_ops` accept
/// (a 0x66 prefix or any other prefix byte makes them single-step, so none is accepted).
pub fn emulated(bytes: &[u8]) -> bool {
    match bytes {
        // push %rax..%rdi
        [0x50..=0x57, ..] => true,
        // push %r8..%r15 (the kernel takes REX.B 0x41 only)
        [0x41, 0x50..=0x57, ..] => true,
        // call rel32, jmp rel32, jmp rel8
        [0xe8 | 0xe9 | 0xeb, ..] => true,
        // jcc rel8, jcc rel32
        [0x70..=0x7f, ..] | [0x0f, 0x80..=0x8f, ..] => true,
        // nop
        [0x90, ..] => true,
        _ => false,
    }
}

/// Where to put an entry probe on a Go function (regabi, amd64) whose code is `code` at
/// `entry`: the `PUSHQ BP` after the stack check when the check is
/// `[LEAQ -n(SP), R12;] CMPQ SP|R12, off(R14); JBE|JLS morestack` and the morestack block
/// only spills, calls and jumps back to the entry. Until that PUSHQ the argument
/// registers, R14 (g) and SP are as at the entry; the check writes only the flags and
/// R12 (a scratch register no program reads). When the stack must grow, the jump leaves
/// before the PUSHQ and comes back to the entry, so each call passes it exactly once.
/// Anything else: the entry (e.g. Go before 1.21, whose frames start with `SUBQ $n, SP`).
pub fn go_entry(code: &[u8], entry: u64) -> u64 {
    go_entry_site(code, entry).unwrap_or(entry)
}

fn go_entry_site(code: &[u8], entry: u64) -> Option<u64> {
    if emulated(code) {
        return Some(entry);
    }
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut checked = false;
    for _ in 0..PROLOGUE {
        if !dec.can_decode() {
            return None;
        }
        let ins = dec.decode();
        match ins.code() {
            // LEAQ -n(SP), R12 (frames larger than the small-stack allowance)
            Code::Lea_r64_m
                if ins.op0_register() == Register::R12
                    && ins.memory_base() == Register::RSP
                    && !checked => {}
            // CMPQ SP|R12, off(R14): the stack guard
            Code::Cmp_r64_rm64
                if matches!(ins.op0_register(), Register::RSP | Register::R12)
                    && ins.op1_kind() == OpKind::Memory
                    && ins.memory_base() == Register::R14
                    && !checked =>
            {
                checked = true;
            }
            Code::Jbe_rel8_64 | Code::Jbe_rel32_64 | Code::Jb_rel8_64 | Code::Jb_rel32_64
                if checked =>
            {
                let target = ins.near_branch_target();
                if !returns_to_entry(code, entry, target) {
                    return None;
                }
                let next = ins.next_ip();
                let at = usize::try_from(next - entry).ok()?;
                return emulated(code.get(at..)?).then_some(next);
            }
            _ => return None,
        }
    }
    None
}

/// Whether the block at `target` (inside `code`, at `entry`) is Go's stack growth: moves
/// (argument spills and reloads), direct calls (`runtime.morestack*`) and no-ops, ending
/// in a direct jump to the entry.
fn returns_to_entry(code: &[u8], entry: u64, target: u64) -> bool {
    let Some(at) = target
        .checked_sub(entry)
        .and_then(|o| usize::try_from(o).ok())
    else {
        return false;
    };
    let Some(block) = code.get(at..) else {
        return false;
    };
    let mut dec = Decoder::with_ip(64, block, target, DecoderOptions::NONE);
    for _ in 0..MORESTACK_BLOCK {
        if !dec.can_decode() {
            return false;
        }
        let ins = dec.decode();
        match ins.mnemonic() {
            Mnemonic::Mov
            | Mnemonic::Movzx
            | Mnemonic::Movsd
            | Mnemonic::Movss
            | Mnemonic::Movups
            | Mnemonic::Movq
            | Mnemonic::Nop => {}
            Mnemonic::Call if ins.op0_kind() == OpKind::NearBranch64 => {}
            Mnemonic::Jmp => {
                return ins.op0_kind() == OpKind::NearBranch64 && ins.near_branch_target() == entry;
            }
            _ => return false,
        }
    }
    false
}

/// Where to put a probe, or a uretprobe, on a C function's entry: past a leading
/// `endbr64` (compilers with `-fcf-protection` start every function with one; the kernel
/// single-steps it) when what follows is emulated. An `endbr64` changes nothing, not even
/// the stack pointer, so the return address a uretprobe takes is still at the top of the
/// stack; indirect calls land on the `endbr64` and fall through to the probe.
pub fn c_entry(code: &[u8], entry: u64) -> u64 {
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    match code {
        [a, b, c, d, rest @ ..] if [*a, *b, *c, *d] == ENDBR64 && emulated(rest) => entry + 4,
        _ => entry,
    }
}

/// The function that `code` (at `entry`) hands its own arguments to: the target of its
/// first `call rel32` when the instructions before it are only `endbr64`, no-ops, pushes
/// and stack-pointer adjustments, none of which touches an argument register. E.g.
/// OpenSSL's `SSL_read_ex` (`sub $8,%rsp; call ssl_read_internal`): every argument
/// arrives in the callee as the caller got it.
pub fn pass_through_call(code: &[u8], entry: u64) -> Option<u64> {
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    for _ in 0..PROLOGUE {
        if !dec.can_decode() {
            return None;
        }
        let ins = dec.decode();
        match ins.code() {
            Code::Endbr64 | Code::Nopd | Code::Nopq | Code::Nopw | Code::Nop_rm32 => {}
            Code::Push_r64 => {}
            Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32 | Code::Add_rm64_imm8
                if ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::RSP => {}
            Code::Call_rel32_64 => return Some(ins.near_branch_target()),
            _ => return None,
        }
    }
    None
}

/// Whether `code` (at `entry`) contains a direct call to `target`.
pub fn calls(code: &[u8], entry: u64, target: u64) -> bool {
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.code() == Code::Call_rel32_64 && ins.near_branch_target() == target {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crypto/tls.(*Conn).Read` built by Go 1.25 (objdump): the small-frame check and its
    /// morestack block, with the body between them replaced by no-ops.
    fn go_small_frame() -> (Vec<u8>, u64) {
        let entry = 0x5a7600u64;
        let mut code = Vec::new();
        code.extend([0x49, 0x3b, 0x66, 0x10]); // CMPQ SP, 0x10(R14)
        code.extend([0x0f, 0x86, 0x7a, 0x03, 0x00, 0x00]); // JBE 0x5a7984
        code.extend([0x55]); // PUSHQ BP
        code.extend([0x48, 0x89, 0xe5]); // MOVQ SP, BP
        code.resize(0x384, 0x90);
        code.extend([0x48, 0x89, 0x44, 0x24, 0x08]); // MOVQ AX, 0x8(SP)
        code.extend([0x48, 0x89, 0x5c, 0x24, 0x10]); // MOVQ BX, 0x10(SP)
        code.extend([0xe8, 0xc3, 0x3c, 0xed, 0xff]); // CALL runtime.morestack_noctxt
        code.extend([0x48, 0x8b, 0x44, 0x24, 0x08]); // MOVQ 0x8(SP), AX
        code.extend([0x48, 0x8b, 0x5c, 0x24, 0x10]); // MOVQ 0x10(SP), BX
        let jmp_at = entry + code.len() as u64;
        let rel = (entry as i64 - (jmp_at as i64 + 5)) as i32;
        code.push(0xe9); // JMP entry
        code.extend(rel.to_le_bytes());
        (code, entry)
    }

    #[test]
    fn go_small_frame_probe_goes_on_the_push_after_the_stack_check() {
        let (code, entry) = go_small_frame();
        assert_eq!(go_entry(&code, entry), entry + 10);
    }

    #[test]
    fn go_large_frame_check_through_r12() {
        // net/http.(*conn).serve: LEAQ -0x3a0(SP), R12; CMPQ R12, 0x10(R14); JBE; PUSHQ BP
        let entry = 0x6523e0u64;
        let mut code = vec![0x4c, 0x8d, 0xa4, 0x24, 0x60, 0xfc, 0xff, 0xff];
        code.extend([0x4d, 0x3b, 0x66, 0x10]);
        code.extend([0x0f, 0x86, 0x10, 0x00, 0x00, 0x00]); // JBE +0x10
        code.extend([0x55, 0x48, 0x89, 0xe5]);
        code.resize(18 + 0x10, 0x90);
        code.extend([0xe8, 0, 0, 0, 0]); // CALL
        let jmp_at = entry + code.len() as u64;
        code.push(0xe9);
        code.extend(((entry as i64 - (jmp_at as i64 + 5)) as i32).to_le_bytes());
        assert_eq!(go_entry(&code, entry), entry + 18);
    }

    #[test]
    fn go_entry_stays_when_the_stack_check_block_does_not_come_back() {
        let (mut code, entry) = go_small_frame();
        // The block's jump goes elsewhere: the entry.
        let last = code.len() - 4;
        code[last..].copy_from_slice(&0x100i32.to_le_bytes());
        assert_eq!(go_entry(&code, entry), entry);
        // The block returns instead of jumping back.
        let (mut code, entry) = go_small_frame();
        let n = code.len();
        code[n - 5] = 0xc3;
        assert_eq!(go_entry(&code, entry), entry);
    }

    #[test]
    fn go_entry_stays_when_the_instruction_after_the_check_is_single_stepped() {
        let (mut code, entry) = go_small_frame();
        // SUBQ $0x18, SP instead of PUSHQ BP
        code.splice(10..11, [0x48, 0x83, 0xec, 0x18]);
        // The morestack target moved by 3 bytes: re-point the JBE.
        let rel = i32::from_le_bytes(code[6..10].try_into().unwrap()) + 3;
        code[6..10].copy_from_slice(&rel.to_le_bytes());
        // ... and the jump back from it by as much the other way.
        let n = code.len();
        let back = i32::from_le_bytes(code[n - 4..].try_into().unwrap()) - 3;
        code[n - 4..].copy_from_slice(&back.to_le_bytes());
        assert_eq!(go_entry(&code, entry), entry);
    }

    #[test]
    fn go_entry_stays_when_anything_writes_a_register_first() {
        // MOVQ AX, BX; CMPQ SP, 0x10(R14); JBE; PUSHQ BP
        let entry = 0x1000u64;
        let code = [
            0x48, 0x89, 0xc3, 0x49, 0x3b, 0x66, 0x10, 0x76, 0x01, 0x55, 0xe9, 0xf1, 0xef, 0xff,
            0xff,
        ];
        assert_eq!(go_entry(&code, entry), entry);
    }

    #[test]
    fn functions_starting_with_an_emulated_instruction_keep_their_entry() {
        assert_eq!(go_entry(&[0x55, 0x48, 0x89, 0xe5], 0x40), 0x40);
        assert_eq!(c_entry(&[0x41, 0x55, 0x41, 0x54], 0x40), 0x40);
    }

    #[test]
    fn emulated_kinds_are_the_kernels() {
        for yes in [
            &[0x55][..],
            &[0x41, 0x57],
            &[0xe8, 0, 0, 0, 0],
            &[0xe9, 0, 0, 0, 0],
            &[0xeb, 0],
            &[0x74, 0],
            &[0x0f, 0x86, 0, 0, 0, 0],
            &[0x90],
        ] {
            assert!(emulated(yes), "{yes:x?}");
        }
        for no in [
            &[0x48, 0x83, 0xec, 0x18][..],
            &[0xf3, 0x0f, 0x1e, 0xfa],
            &[0xc3],
            &[0x49, 0x3b, 0x66, 0x10],
            &[0x66, 0x55],
            &[0x48, 0x55],
            &[0x0f, 0x1f, 0x40, 0x00],
            &[],
        ] {
            assert!(!emulated(no), "{no:x?}");
        }
    }

    #[test]
    fn c_entry_skips_an_endbr64_before_an_emulated_instruction_only() {
        assert_eq!(c_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x55], 0x100), 0x104);
        assert_eq!(
            c_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18], 0x100),
            0x100
        );
        assert_eq!(c_entry(&[0x48, 0x83, 0xec, 0x18], 0x100), 0x100);
    }

    #[test]
    fn openssl_ex_calls_hand_their_arguments_to_the_internal_call() {
        // OpenSSL 3.0 (Debian 12) SSL_read_ex at 0x354c0: sub $8,%rsp; call 0x35290
        let code = [
            0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7, 0xfd, 0xff, 0xff, 0x31, 0xd2,
        ];
        assert_eq!(pass_through_call(&code, 0x354c0), Some(0x35290));
        // SSL_read at 0x35430 moves arguments before its call: not pass-through.
        let code = [
            0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, 0x48, 0x89, 0x44,
            0x24, 0x08,
        ];
        assert_eq!(pass_through_call(&code, 0x35430), None);
        // A register write before the call.
        let code = [0x48, 0x89, 0xe1, 0xe8, 0, 0, 0, 0];
        assert_eq!(pass_through_call(&code, 0), None);
    }

    #[test]
    fn direct_calls_are_found() {
        // SSL_read's `call 0x35290` at 0x3544e
        let mut code = vec![0x90; 0x1e];
        code.extend([0xe8, 0x3d, 0xfe, 0xff, 0xff, 0x85, 0xc0]);
        assert!(calls(&code, 0x35430, 0x35290));
        assert!(!calls(&code, 0x35430, 0x355a0));
    }
}
