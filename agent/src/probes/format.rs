//! Tracepoint record layouts, read from tracefs at load time.
//!
//! The kernel programs read tracepoint records (`events/<sys>/<name>/format`) by field
//! offset. Those layouts are not ABI: fields come and go between kernels
//! (`sched_process_exit` gained `group_dead` after 6.12; Debian's 6.1 and 6.12 lack it),
//! and a program that reads a fixed offset past the end of a record reads whatever
//! follows it. So every offset the kernel side uses is looked up here, checked for the
//! size the program reads, and patched into the object's `TP_FIELDS` global; a field
//! a kernel lacks is patched as [`NO_FIELD`] and the program does without it.

use std::{collections::BTreeMap, fs, path::Path};

use periscope_common::tp::{self, NO_FIELD, TP_FIELD_COUNT};

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// A tracepoint's record layout (the `format` file), without the common fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses a tracefs `format` file. Lines look like
    /// `\tfield:unsigned long clone_flags;\toffset:32;\tsize:8;\tsigned:0;`; the field
    /// name is the last word of the declaration, without any `[N]` suffix.
    pub fn parse(text: &str) -> Format {
        let mut fields = Vec::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d.trim());
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.trim().parse::<u32>().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.trim().parse::<u32>().ok();
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            let Some(last) = decl.split_whitespace().last() else {
                continue;
            };
            let name = last
                .split('[')
                .next()
                .unwrap_or(last)
                .trim_start_matches('*');
            if name.starts_with("common_") {
                continue;
            }
            fields.push(Field {
                name: name.to_string(),
                offset,
                size,
            });
        }
        Format { fields }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Where each kernel-side field index comes from: (index, category, tracepoint, field,
/// size the program reads, required). A missing optional field is patched as
/// [`NO_FIELD`]; a missing required one makes the tracepoint's programs unloadable.
const FIELDS: &[(usize, &str, &str, &str, u32, bool)] = &[
    (tp::NEWTASK_PID, "task", "task_newtask", "pid", 4, true),
    (
        tp::NEWTASK_CLONE_FLAGS,
        "task",
        "task_newtask",
        "clone_flags",
        8,
        true,
    ),
    (
        tp::EXIT_GROUP_DEAD,
        "sched",
        "sched_process_exit",
        "group_dead",
        1,
        false,
    ),
    (
        tp::STATE_SKADDR,
        "sock",
        "inet_sock_set_state",
        "skaddr",
        8,
        true,
    ),
    (
        tp::STATE_OLD,
        "sock",
        "inet_sock_set_state",
        "oldstate",
        4,
        true,
    ),
    (
        tp::STATE_NEW,
        "sock",
        "inet_sock_set_state",
        "newstate",
        4,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_SPORT,
        "sock",
        "inet_sock_set_state",
        "sport",
        2,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_DPORT,
        "sock",
        "inet_sock_set_state",
        "dport",
        2,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_FAMILY,
        "sock",
        "inet_sock_set_state",
        "family",
        2,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_PROTOCOL,
        "sock",
        "inet_sock_set_state",
        "protocol",
        2,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_SADDR,
        "sock",
        "inet_sock_set_state",
        "saddr",
        4,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_DADDR,
        "sock",
        "inet_sock_set_state",
        "daddr",
        4,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_SADDR6,
        "sock",
        "inet_sock_set_state",
        "saddr_v6",
        16,
        true,
    ),
    (
        tp::STATE_TUPLE + tp::TUPLE_DADDR6,
        "sock",
        "inet_sock_set_state",
        "daddr_v6",
        16,
        true,
    ),
    (
        tp::ERROR_ERROR,
        "sock",
        "inet_sk_error_report",
        "error",
        4,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_SPORT,
        "sock",
        "inet_sk_error_report",
        "sport",
        2,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_DPORT,
        "sock",
        "inet_sk_error_report",
        "dport",
        2,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_FAMILY,
        "sock",
        "inet_sk_error_report",
        "family",
        2,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_PROTOCOL,
        "sock",
        "inet_sk_error_report",
        "protocol",
        2,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_SADDR,
        "sock",
        "inet_sk_error_report",
        "saddr",
        4,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_DADDR,
        "sock",
        "inet_sk_error_report",
        "daddr",
        4,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_SADDR6,
        "sock",
        "inet_sk_error_report",
        "saddr_v6",
        16,
        true,
    ),
    (
        tp::ERROR_TUPLE + tp::TUPLE_DADDR6,
        "sock",
        "inet_sk_error_report",
        "daddr_v6",
        16,
        true,
    ),
];

/// Every offset the kernel programs read, and why a tracepoint cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Patched into the object's `TP_FIELDS`.
    pub fields: [u32; TP_FIELD_COUNT],
    /// `category/name` -> why its programs cannot run on this kernel.
    pub unusable: BTreeMap<String, String>,
    /// Optional fields this kernel lacks: (`category/name`, field).
    pub missing_optional: Vec<(String, &'static str)>,
}

impl Layout {
    /// Builds the layout from a lookup of `format` files by (category, name); `None`
    /// means the tracepoint does not exist. `syscalls` are the syscall tracepoints
    /// the object uses (their arguments must be 8-byte slots from one base, the
    /// return value one 8-byte field).
    pub fn build(syscalls: &[&str], read: &mut dyn FnMut(&str, &str) -> Option<String>) -> Layout {
        let mut fields = [NO_FIELD; TP_FIELD_COUNT];
        let mut unusable = BTreeMap::new();
        let mut missing_optional = Vec::new();
        let mut cache: BTreeMap<(String, String), Option<Format>> = BTreeMap::new();
        let mut format = |cat: &str, name: &str| -> Option<Format> {
            cache
                .entry((cat.to_string(), name.to_string()))
                .or_insert_with(|| read(cat, name).map(|t| Format::parse(&t)))
                .clone()
        };
        for &(idx, cat, name, field, size, required) in FIELDS {
            let key = format!("{cat}/{name}");
            let Some(fmt) = format(cat, name) else {
                unusable
                    .entry(key)
                    .or_insert_with(|| "tracepoint not in this kernel".to_string());
                continue;
            };
            match fmt.field(field) {
                Some(f) if f.size == size => fields[idx] = f.offset,
                Some(f) => {
                    unusable.entry(key).or_insert_with(|| {
                        format!("field {field} is {} bytes here, {size} expected", f.size)
                    });
                }
                None if required => {
                    unusable
                        .entry(key)
                        .or_insert_with(|| format!("record has no field {field}"));
                }
                None => missing_optional.push((key, field)),
            }
        }
        // Syscall records: `__syscall_nr`, then each argument as an 8-byte slot (enter)
        // or `ret` (exit). One base for all of them, checked on every one we use.
        let mut arg0 = None;
        let mut ret = None;
        for &sc in syscalls {
            let key = format!("syscalls/{sc}");
            let Some(fmt) = format("syscalls", sc) else {
                unusable.insert(key, "tracepoint not in this kernel".into());
                continue;
            };
            let args: Vec<&Field> = fmt
                .fields
                .iter()
                .filter(|f| f.name != "__syscall_nr")
                .collect();
            let problem = if sc.starts_with("sys_exit_") {
                match fmt.field("ret") {
                    Some(f) if f.size == 8 && *ret.get_or_insert(f.offset) == f.offset => None,
                    Some(f) => Some(format!(
                        "ret is {} bytes at offset {}, other syscalls differ",
                        f.size, f.offset
                    )),
                    None => Some("record has no field ret".into()),
                }
            } else {
                let base = *arg0.get_or_insert(args.first().map_or(0, |f| f.offset));
                args.iter()
                    .enumerate()
                    .find(|(i, f)| f.size != 8 || f.offset != base + 8 * *i as u32)
                    .map(|(i, f)| {
                        format!(
                            "argument {i} ({}) is {} bytes at offset {}, not an 8-byte slot at {}",
                            f.name,
                            f.size,
                            f.offset,
                            base + 8 * i as u32
                        )
                    })
            };
            if let Some(p) = problem {
                unusable.insert(key, p);
            }
        }
        fields[tp::SYS_ARG0] = arg0.unwrap_or(NO_FIELD);
        fields[tp::SYS_RET] = ret.unwrap_or(NO_FIELD);
        Layout {
            fields,
            unusable,
            missing_optional,
        }
    }

    /// Reads the formats from a mounted tracefs (`root` holds `events/`).
    pub fn read(root: &Path, syscalls: &[&str]) -> Layout {
        Self::build(syscalls, &mut |cat, name| {
            fs::read_to_string(root.join("events").join(cat).join(name).join("format")).ok()
        })
    }

    /// Why the programs on `category/name` cannot run here, if they cannot.
    pub fn problem(&self, category: &str, name: &str) -> Option<&str> {
        self.unusable
            .get(&format!("{category}/{name}"))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
