use super::*;

/// `events/<sys>/<name>/format` of every tracepoint the object uses, as captured on
/// each kernel (sections `=== <sys>/<name>`): Debian 12's 6.1 and 6.12 cloud kernels
/// (in the `cargo xtask kernels` guest) and this project's 6.18 CI host.
fn formats(kernel: &str) -> BTreeMap<String, String> {
    let text = match kernel {
        "6.1" => include_str!("../testdata/formats-6.1.txt"),
        "6.12" => include_str!("../testdata/formats-6.12.txt"),
        "6.18" => include_str!("../testdata/formats-6.18.txt"),
        _ => unreachable!(),
    };
    let mut out = BTreeMap::new();
    for section in text.split("=== ").skip(1) {
        let (name, body) = section.split_once('\n').unwrap();
        out.insert(name.trim().to_string(), body.to_string());
    }
    out
}

fn syscalls() -> Vec<&'static str> {
    crate::probes::PROBES
        .iter()
        .filter(|p| p.1 == "syscalls")
        .map(|p| p.2)
        .collect()
}

fn layout(kernel: &str) -> Layout {
    let f = formats(kernel);
    Layout::build(&syscalls(), &mut |cat, name| {
        f.get(&format!("{cat}/{name}")).cloned()
    })
}

#[test]
fn parses_a_format_file() {
    let f = Format::parse(
        "name: task_newtask\nID: 127\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:1;\n\tfield:const void * skaddr;\toffset:32;\tsize:8;\tsigned:0;\n\nprint fmt: \"pid=%d\", REC->pid\n",
    );
    let names: Vec<&str> = f.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["pid", "comm", "skaddr"]);
    assert_eq!(f.field("comm").unwrap().size, 16);
    assert_eq!(f.field("skaddr").unwrap().offset, 32);
}

#[test]
fn every_fixture_covers_every_tracepoint_used() {
    for k in ["6.1", "6.12", "6.18"] {
        let f = formats(k);
        for p in crate::probes::PROBES {
            assert!(
                f.contains_key(&format!("{}/{}", p.1, p.2)),
                "{k}: {}/{}",
                p.1,
                p.2
            );
        }
    }
}

#[test]
fn debian_6_1_and_6_12_have_no_group_dead() {
    for k in ["6.1", "6.12"] {
        let l = layout(k);
        assert!(l.unusable.is_empty(), "{k}: {:?}", l.unusable);
        assert_eq!(l.fields[tp::EXIT_GROUP_DEAD], NO_FIELD, "{k}");
        assert_eq!(
            l.missing_optional,
            [("sched/sched_process_exit".to_string(), "group_dead")],
            "{k}"
        );
    }
}

#[test]
fn linux_6_18_layout_matches_the_objects_defaults() {
    let l = layout("6.18");
    assert!(l.unusable.is_empty(), "{:?}", l.unusable);
    assert!(l.missing_optional.is_empty());
    assert_eq!(l.fields[tp::EXIT_GROUP_DEAD], 32);
    // The same values ebpf/src/common.rs compiles in as TP_FIELDS' defaults.
    assert_eq!(
        l.fields,
        [
            16, 16, 8, 32, 32, 8, 16, 20, 24, 26, 28, 30, 32, 36, 40, 56, 8, 12, 14, 16, 18, 20,
            24, 28, 44
        ]
    );
}

#[test]
fn shared_fields_agree_across_kernels() {
    let (a, b, c) = (layout("6.1"), layout("6.12"), layout("6.18"));
    for i in 0..TP_FIELD_COUNT {
        if i == tp::EXIT_GROUP_DEAD {
            continue;
        }
        assert_eq!(a.fields[i], c.fields[i], "field {i}");
        assert_eq!(b.fields[i], c.fields[i], "field {i}");
    }
    assert_eq!(a.fields[tp::SYS_ARG0], 16);
    assert_eq!(a.fields[tp::SYS_RET], 16);
}

#[test]
fn missing_tracepoints_and_fields_make_programs_unusable() {
    let f = formats("6.18");
    let l = Layout::build(&syscalls(), &mut |cat, name| {
        if cat == "sock" {
            return None;
        }
        let t = f.get(&format!("{cat}/{name}"))?.clone();
        // A kernel whose task_newtask record had no clone_flags.
        Some(if name == "task_newtask" {
            t.replace("clone_flags", "flags_renamed")
        } else {
            t
        })
    });
    assert_eq!(
        l.problem("sock", "inet_sock_set_state"),
        Some("tracepoint not in this kernel")
    );
    assert_eq!(
        l.problem("task", "task_newtask"),
        Some("record has no field clone_flags")
    );
    assert_eq!(l.fields[tp::STATE_OLD], NO_FIELD);
    assert_eq!(l.problem("syscalls", "sys_enter_read"), None);
}

#[test]
fn syscall_arguments_off_the_8_byte_grid_are_refused() {
    let f = formats("6.18");
    let l = Layout::build(&["sys_enter_read", "sys_exit_read"], &mut |cat, name| {
        let t = f.get(&format!("{cat}/{name}"))?.clone();
        Some(t.replace("offset:24;\tsize:8", "offset:24;\tsize:4"))
    });
    assert!(
        l.problem("syscalls", "sys_enter_read")
            .unwrap()
            .contains("argument 1 (buf) is 4 bytes"),
        "{:?}",
        l.unusable
    );
    assert_eq!(l.problem("syscalls", "sys_exit_read"), None);
}
