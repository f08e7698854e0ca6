//! Offsets of the few kernel struct fields the kernel programs walk, read from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`) and patched into the object's `KOFFS` global.
//!
//! Tracepoints give no typed access to kernel structs (no CO-RE relocations in this build:
//! the object is linked without a vmlinux.h), so the programs read fields with
//! `bpf_probe_read_kernel` at offsets decided here. Which paths need them:
//! - socket adoption (`task->files->fdt->fd[n]->f_inode->i_mode`, `file->private_data` as
//!   `struct socket`, its `sk`'s addresses): a traced process uses a socket it did not
//!   accept or connect itself (fork, dup, SCM_RIGHTS, inetd-style fds 0/1);
//! - the current goroutine in syscall tracepoints (`task->thread.fsbase`, amd64).
//!
//! aya-obj parses BTF too, but keeps its type tables crate-private; the format is small
//! enough to read the parts we need here: struct/union members, typedef/qualifier chains.
//! A field that cannot be found leaves its path disabled (offset 0) instead of failing.

use std::collections::HashMap;

use periscope_common::KernelOffsets;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    /// Bit offset from the start of the enclosing struct.
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// Referenced type (typedefs, qualifiers, pointers).
    ty: u32,
    members: Vec<Member>,
}

/// The struct/union part of one BTF blob.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_sys_fs() -> Option<Self> {
        Self::parse(&std::fs::read("/sys/kernel/btf/vmlinux").ok()?)
    }

    pub fn parse(b: &[u8]) -> Option<Self> {
        if u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) != BTF_MAGIC {
            return None;
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = hdr_len + u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = hdr_len + u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let strings = b.get(str_off..str_off + str_len)?.to_vec();
        let tb = b.get(type_off..type_off + type_len)?;
        // Type id 0 is `void`.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut p = 0;
        while p + 12 <= tb.len() {
            let name = u32_at(tb, p)?;
            let info = u32_at(tb, p + 4)?;
            let size_or_type = u32_at(tb, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => p += 4,
                KIND_ARRAY => p += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let off = u32_at(tb, m + 8)?;
                        members.push(Member {
                            name: u32_at(tb, m)?,
                            ty: u32_at(tb, m + 4)?,
                            // With kind_flag the high byte is a bitfield size.
                            bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        });
                    }
                    p += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => p += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => p += vlen * 12,
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                ty: size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 && !t.members.is_empty() {
                let name = btf.str_at(t.name).to_string();
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Some(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].ty
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset and type of `field` in type `id`, looking inside anonymous members.
    fn member(&self, id: u32, field: &str) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for m in &t.members {
            if m.name == 0 {
                if let Some((off, ty)) = self.member(m.ty, field) {
                    return Some((m.bit_offset / 8 + off, ty));
                }
            } else if self.str_at(m.name) == field {
                return Some((m.bit_offset / 8, m.ty));
            }
        }
        None
    }

    /// Offset of a dotted field path (`thread.fsbase`) inside `struct name`.
    pub fn offset(&self, name: &str, path: &str) -> Option<u32> {
        let mut id = *self.structs.get(name)?;
        let mut total = 0;
        for field in path.split('.') {
            let (off, ty) = self.member(id, field)?;
            total += off;
            id = ty;
        }
        Some(total)
    }

    /// Whether the field at `path` in `struct name` is a pointer.
    fn is_ptr(&self, name: &str, path: &str) -> bool {
        let Some(mut id) = self.structs.get(name).copied() else {
            return false;
        };
        for field in path.split('.') {
            match self.member(id, field) {
                Some((_, ty)) => id = ty,
                None => return false,
            }
        }
        self.types
            .get(self.resolve(id) as usize)
            .is_some_and(|t| t.kind == KIND_PTR)
    }
}

use periscope_common::{KOFF_ADOPT, KOFF_FSBASE};

/// The offsets for this kernel; fields not found leave their path disabled.
pub fn kernel_offsets(btf: &Btf) -> KernelOffsets {
    let mut k = KernelOffsets::default();
    let o = |s: &str, f: &str| btf.offset(s, f);
    let adopt = (|| {
        // Pointers we dereference must be pointers on this kernel (a layout change that
        // turned one into an embedded struct would make us read garbage).
        for (s, f) in [
            ("task_struct", "files"),
            ("files_struct", "fdt"),
            ("fdtable", "fd"),
            ("file", "f_inode"),
            ("file", "private_data"),
            ("socket", "sk"),
        ] {
            if !btf.is_ptr(s, f) {
                return None;
            }
        }
        k.task_files = o("task_struct", "files")?;
        k.files_fdt = o("files_struct", "fdt")?;
        k.fdt_max_fds = o("fdtable", "max_fds")?;
        k.fdt_fd = o("fdtable", "fd")?;
        k.file_inode = o("file", "f_inode")?;
        k.file_private_data = o("file", "private_data")?;
        k.inode_mode = o("inode", "i_mode")?;
        k.inode_ino = o("inode", "i_ino")?;
        k.socket_type = o("socket", "type")?;
        k.socket_sk = o("socket", "sk")?;
        let common = o("sock", "__sk_common")?;
        k.skc_family = common + o("sock_common", "skc_family")?;
        k.skc_num = common + o("sock_common", "skc_num")?;
        k.skc_dport = common + o("sock_common", "skc_dport")?;
        k.skc_daddr = common + o("sock_common", "skc_daddr")?;
        k.skc_rcv_saddr = common + o("sock_common", "skc_rcv_saddr")?;
        k.skc_v6_daddr = common + o("sock_common", "skc_v6_daddr")?;
        k.skc_v6_rcv_saddr = common + o("sock_common", "skc_v6_rcv_saddr")?;
        Some(())
    })()
    .is_some();
    if adopt {
        k.flags |= KOFF_ADOPT;
    }
    // amd64 keeps the user TLS base in thread.fsbase; Go's g sits at fsbase-8.
    if cfg!(target_arch = "x86_64")
        && let Some(off) = o("task_struct", "thread.fsbase")
    {
        k.task_fsbase = off;
        k.flags |= KOFF_FSBASE;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF gives every field (skipped where there is none).
    #[test]
    fn running_kernel_offsets_are_found() {
        let Some(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here; skipped");
            return;
        };
        let k = kernel_offsets(&btf);
        assert_eq!(k.flags & KOFF_ADOPT, KOFF_ADOPT, "{k:?}");
        // sock_common is the first member of sock; skc_family follows two addresses
        // and a hash in every kernel since 3.x.
        assert!(k.skc_family >= 8 && k.skc_family < 64, "{k:?}");
        assert_ne!(k.task_files, 0);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(k.flags & KOFF_FSBASE, KOFF_FSBASE);
            assert_ne!(k.task_fsbase, 0);
        }
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(Btf::parse(b"not btf at all, clearly").is_none());
        assert!(Btf::parse(&[]).is_none());
    }
}
