//! Sampler decisions, statistics of the ratio sampler, the adaptive cap under a fake
//! clock, and env parsing.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn random_trace_id(rng: &mut fastrand::Rng) -> TraceId {
    rng.u128(..).to_be_bytes()
}

fn input(trace_id: TraceId) -> SampleInput {
    SampleInput {
        trace_id,
        parent: None,
        explicit_randomness: None,
        is_error: false,
        duration_ns: MS,
        service_key: 1,
        now_ns: 0,
    }
}

fn parent(sampled: bool, remote: bool) -> Option<ParentInfo> {
    Some(ParentInfo { sampled, remote })
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A trace id whose randomness (7 rightmost bytes) is `r`.
fn id_with_randomness(r: u64) -> TraceId {
    let mut id = [0xaa; 16];
    id[8..].copy_from_slice(&r.to_be_bytes());
    id[8] = 0xff; // byte 8 is not part of R
    id
}

// ---- the consistent-probability algorithm ----

#[test]
fn thresholds_follow_the_spec() {
    assert_eq!(threshold_for(1.0), 0);
    assert_eq!(threshold_for(0.0), MAX_THRESHOLD);
    assert_eq!(threshold_for(0.5), 0x80_0000_0000_0000);
    assert_eq!(threshold_for(0.25), 0xc0_0000_0000_0000);
    assert_eq!(threshold_for(0.1), 0xe6_6666_6666_6666);
    // The spec's example: 1% is `th:fd70a4` at 5 hex digits of precision.
    assert_eq!(threshold_for(0.01), 0xfd_70a3_d70a_3d71);
    assert_eq!((threshold_for(0.01) + (1 << 31)) >> 32, 0xfd70a4);
    assert_eq!(Ratio::new(0.1).unwrap().threshold(), threshold_for(0.1));
    assert!(
        Ratio::new(1.5).is_none() && Ratio::new(-0.1).is_none() && Ratio::new(f64::NAN).is_none()
    );
}

#[test]
fn randomness_is_the_seven_rightmost_bytes() {
    let id: TraceId = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    assert_eq!(trace_randomness(&id), 0xce_929d_0e0e_4736);
    assert_eq!(trace_randomness(&id_with_randomness(0x12_3456)), 0x12_3456);
}

#[test]
fn ratio_sampler_keeps_r_at_or_above_threshold() {
    let t = threshold_for(0.1);
    let mut s = Sampler::new(SamplerConfig::TraceIdRatio(Ratio::new(0.1).unwrap()));
    assert!(s.decide(&input(id_with_randomness(t))).sampled);
    assert!(
        s.decide(&input(id_with_randomness(MAX_THRESHOLD - 1)))
            .sampled
    );
    assert!(!s.decide(&input(id_with_randomness(t - 1))).sampled);
    assert!(!s.decide(&input(id_with_randomness(0))).sampled);
}

#[test]
fn explicit_randomness_from_tracestate_wins_over_trace_id() {
    assert_eq!(
        explicit_randomness("ot=rv:7479cfb506891d"),
        Some(0x7479cfb506891d)
    );
    assert_eq!(
        explicit_randomness("congo=t61rcWkgMzE, ot=th:c;rv:7479cfb506891d"),
        Some(0x7479cfb506891d)
    );
    assert_eq!(explicit_randomness("ot=th:c"), None);
    assert_eq!(explicit_randomness("ot=rv:7479CFB506891D"), None);
    assert_eq!(explicit_randomness("ot=rv:7479cfb506891"), None);
    assert_eq!(explicit_randomness("other=rv:7479cfb506891d"), None);
    assert_eq!(explicit_randomness(""), None);

    let mut s = Sampler::new(SamplerConfig::TraceIdRatio(Ratio::new(0.5).unwrap()));
    let mut i = input(id_with_randomness(0)); // the trace id alone: drop
    i.explicit_randomness = Some(MAX_THRESHOLD - 1);
    assert!(s.decide(&i).sampled);
}

#[test]
fn ratio_tenth_over_100k_trace_ids_is_within_four_sigma() {
    for seed in [1, 2, 3] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut s = Sampler::new(SamplerConfig::TraceIdRatio(Ratio::new(0.1).unwrap()));
        let n = 100_000u64;
        let kept = (0..n)
            .filter(|_| s.decide(&input(random_trace_id(&mut rng))).sampled)
            .count() as f64;
        let mean = n as f64 * 0.1;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt(); // ~95
        assert!(
            (kept - mean).abs() <= 4.0 * sigma,
            "seed {seed}: kept {kept}, expected {mean} ± {}",
            4.0 * sigma
        );
        assert_eq!(s.stats().sampled, kept as u64);
        assert_eq!(s.stats().dropped_by_sampler, n - kept as u64);
    }
}

proptest! {
    /// Consistency (the spec's requirement): kept at p1 implies kept at every p2 >= p1,
    /// and the decision depends on the trace id only.
    #[test]
    fn ratio_decisions_are_monotonic_and_deterministic(
        id in any::<[u8; 16]>(), p1 in 0.0f64..=1.0, p2 in 0.0f64..=1.0,
    ) {
        let (lo, hi) = if p1 <= p2 { (p1, p2) } else { (p2, p1) };
        let decide = |p| Sampler::new(SamplerConfig::TraceIdRatio(Ratio::new(p).unwrap())).decide(&input(id)).sampled;
        if decide(lo) {
            prop_assert!(decide(hi));
        }
        prop_assert_eq!(decide(lo), decide(lo));
    }
}

// ---- the OTel samplers ----

#[test]
fn always_on_and_off_ignore_everything() {
    let mut on = Sampler::new(SamplerConfig::AlwaysOn);
    let mut off = Sampler::new(SamplerConfig::AlwaysOff);
    for p in [None, parent(true, true), parent(false, false)] {
        let mut i = input([1; 16]);
        i.parent = p;
        i.is_error = true;
        assert!(on.decide(&i).sampled);
        assert!(!off.decide(&i).sampled);
    }
}

#[test]
fn traceidratio_ignores_the_parent_flag() {
    let mut s = Sampler::new(SamplerConfig::TraceIdRatio(Ratio::new(0.5).unwrap()));
    let mut i = input(id_with_randomness(0));
    i.parent = parent(true, true);
    assert!(!s.decide(&i).sampled);
    let mut i = input(id_with_randomness(MAX_THRESHOLD - 1));
    i.parent = parent(false, true);
    assert!(s.decide(&i).sampled);
}

#[test]
fn parentbased_follows_the_parent_flag_local_or_remote() {
    for root in [
        RootSampler::AlwaysOn,
        RootSampler::AlwaysOff,
        RootSampler::TraceIdRatio(Ratio::new(0.5).unwrap()),
    ] {
        let mut s = Sampler::new(SamplerConfig::ParentBased(root));
        for remote in [true, false] {
            for id in [id_with_randomness(0), id_with_randomness(MAX_THRESHOLD - 1)] {
                let mut i = input(id);
                i.parent = parent(true, remote);
                assert!(s.decide(&i).sampled, "{root:?} remote={remote}");
                i.parent = parent(false, remote);
                assert!(!s.decide(&i).sampled, "{root:?} remote={remote}");
            }
        }
    }
}

#[test]
fn parentbased_roots_use_the_root_sampler() {
    let low = input(id_with_randomness(0));
    let high = input(id_with_randomness(MAX_THRESHOLD - 1));
    let mut on = Sampler::new(SamplerConfig::ParentBased(RootSampler::AlwaysOn));
    assert!(on.decide(&low).sampled && on.decide(&high).sampled);
    let mut off = Sampler::new(SamplerConfig::ParentBased(RootSampler::AlwaysOff));
    assert!(!off.decide(&low).sampled && !off.decide(&high).sampled);
    let mut ratio = Sampler::new(SamplerConfig::ParentBased(RootSampler::TraceIdRatio(
        Ratio::new(0.5).unwrap(),
    )));
    assert!(!ratio.decide(&low).sampled && ratio.decide(&high).sampled);
}

#[test]
fn otel_samplers_never_override_for_errors_or_slowness() {
    let mut s = Sampler::new(SamplerConfig::ParentBased(RootSampler::AlwaysOff));
    let mut i = input([7; 16]);
    i.is_error = true;
    i.duration_ns = 3600 * SEC;
    assert_eq!(
        s.decide(&i),
        Decision {
            sampled: false,
            reason: Reason::Sampler
        }
    );
}

// ---- periscope_adaptive ----

fn adaptive(max: u32, slow_ms: u64) -> Sampler {
    Sampler::new(SamplerConfig::Adaptive(AdaptiveConfig {
        max_spans_per_second: max,
        slow_threshold_ns: slow_ms * MS,
    }))
}

/// Feeds `per_sec` evenly spaced spans per second for `secs` seconds from `start`.
fn run(
    s: &mut Sampler,
    rng: &mut fastrand::Rng,
    service: u32,
    start: u64,
    secs: u64,
    per_sec: u64,
    mut each: impl FnMut(&mut SampleInput, u64),
) -> Vec<u64> {
    let mut kept_per_sec = vec![0; secs as usize];
    let step = SEC / per_sec;
    for n in 0..secs * per_sec {
        let mut i = input(random_trace_id(rng));
        i.service_key = service;
        i.now_ns = start + n * step;
        each(&mut i, n);
        if s.decide(&i).sampled {
            kept_per_sec[(n / per_sec) as usize] += 1;
        }
    }
    kept_per_sec
}

#[test]
fn adaptive_caps_the_rate_under_load() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut s = adaptive(100, 1000);
    let kept = run(&mut s, &mut rng, 1, 0, 20, 10_000, |_, _| {});
    let total: u64 = kept.iter().sum();
    // One second of burst on top of the rate, and never much under it.
    assert!(total <= 100 * 20 + 100, "{kept:?}");
    assert!(total >= 100 * 20 * 8 / 10, "{kept:?}");
    // The hard bound: over any stretch of t seconds, at most one second of burst plus t
    // seconds of rate.
    let mut cumulative = 0;
    for (sec, k) in kept.iter().enumerate() {
        cumulative += k;
        assert!(
            cumulative <= 100 + 100 * (sec as u64 + 1),
            "second {sec}: {kept:?}"
        );
        assert!(*k <= 200, "second {sec}: {kept:?}");
    }
    assert_eq!(s.stats().sampled, total);
    assert_eq!(s.stats().dropped_by_sampler, 200_000 - total);
    assert_eq!(
        s.stats().kept_because_error + s.stats().kept_because_slow,
        0
    );
}

#[test]
fn adaptive_keeps_everything_under_the_cap() {
    let mut rng = fastrand::Rng::with_seed(8);
    let mut s = adaptive(100, 1000);
    let kept = run(&mut s, &mut rng, 1, 0, 10, 50, |_, _| {});
    assert!(kept.iter().all(|&k| k == 50), "{kept:?}");
}

#[test]
fn adaptive_always_keeps_errors_and_slow_spans() {
    let mut rng = fastrand::Rng::with_seed(9);
    let mut s = adaptive(10, 500);
    let (mut errors, mut slow) = (0, 0);
    let mut missed = 0;
    let step = SEC / 5_000;
    for n in 0..50_000u64 {
        let mut i = input(random_trace_id(&mut rng));
        i.now_ns = n * step;
        i.is_error = n % 97 == 0;
        i.duration_ns = if n % 89 == 0 { 500 * MS } else { 499 * MS };
        let d = s.decide(&i);
        if i.is_error || i.duration_ns >= 500 * MS {
            errors += i.is_error as u64;
            slow += (!i.is_error && i.duration_ns >= 500 * MS) as u64;
            missed += !d.sampled as u64;
        }
    }
    assert_eq!(missed, 0);
    let st = s.stats();
    // Most of them were beyond the cap: kept by the overrides, and counted so.
    assert!(
        st.kept_because_error <= errors && st.kept_because_error > errors * 9 / 10,
        "{st:?}"
    );
    assert!(
        st.kept_because_slow <= slow && st.kept_because_slow > slow * 9 / 10,
        "{st:?}"
    );
    assert_eq!(st.sampled + st.dropped_by_sampler, 50_000);
}

#[test]
fn adaptive_drops_unsampled_parents_unless_error_or_slow() {
    let mut s = adaptive(1000, 100);
    let mut i = input([3; 16]);
    i.parent = parent(false, true);
    assert_eq!(
        s.decide(&i),
        Decision {
            sampled: false,
            reason: Reason::Sampler
        }
    );
    i.is_error = true;
    assert_eq!(
        s.decide(&i),
        Decision {
            sampled: true,
            reason: Reason::Error
        }
    );
    i.is_error = false;
    i.duration_ns = 100 * MS;
    assert_eq!(
        s.decide(&i),
        Decision {
            sampled: true,
            reason: Reason::Slow
        }
    );
    // Another trace (the one above has kept spans, which its later spans follow).
    i.trace_id = [5; 16];
    i.parent = parent(true, false);
    i.duration_ns = MS;
    assert_eq!(
        s.decide(&i),
        Decision {
            sampled: true,
            reason: Reason::Sampler
        }
    );
}

#[test]
fn adaptive_caps_each_service_separately() {
    let mut rng = fastrand::Rng::with_seed(10);
    let mut s = adaptive(50, 1000);
    let step = SEC / 2_000;
    let mut kept = [0u64; 2];
    for n in 0..20_000u64 {
        let mut i = input(random_trace_id(&mut rng));
        i.service_key = (n % 2) as u32 + 100;
        i.now_ns = n * step;
        if s.decide(&i).sampled {
            kept[(n % 2) as usize] += 1;
        }
    }
    // 10 s each at 1000/s offered, cap 50/s each (+ one second of burst).
    for k in kept {
        assert!((400..=550).contains(&k), "{kept:?}");
    }
    assert_eq!(s.services_tracked(), 2);
    s.forget_service(100);
    assert_eq!(s.services_tracked(), 1);
}

#[test]
fn adaptive_burst_after_idle_is_one_second_of_budget() {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut s = adaptive(100, 1000);
    run(&mut s, &mut rng, 1, 0, 5, 1_000, |_, _| {});
    // A minute of silence does not bank a minute of tokens: a burst of 5000 spans
    // within 10 ms gets the bucket's capacity (one second) and 10 ms of refill.
    let mut kept = 0;
    for n in 0..5_000u64 {
        let mut i = input(random_trace_id(&mut rng));
        i.now_ns = 65 * SEC + n * 2_000;
        kept += s.decide(&i).sampled as u64;
    }
    assert!((100..=101).contains(&kept), "{kept}");
}

#[test]
fn adaptive_follows_trace_randomness_in_steady_state() {
    // After the first second the per-service probability is ~max/rate, so what is kept
    // is (almost only) traces with high randomness: the same traces in every service
    // with the same or a lower load.
    let mut rng = fastrand::Rng::with_seed(12);
    let mut s = adaptive(100, 1000);
    run(&mut s, &mut rng, 1, 0, 2, 10_000, |_, _| {});
    let mut kept_low_r = 0;
    for n in 0..10_000u64 {
        let mut i = input(id_with_randomness(rng.u64(..MAX_THRESHOLD / 2)));
        i.now_ns = 2 * SEC + n * (SEC / 10_000);
        kept_low_r += s.decide(&i).sampled as u64;
    }
    assert_eq!(kept_low_r, 0);
}

#[test]
fn adaptive_tolerates_a_clock_going_backwards() {
    let mut s = adaptive(10, 1000);
    let mut kept = 0;
    for n in 0..1_000u64 {
        // Distinct traces: spans of one kept trace would be kept regardless of the cap.
        let mut i = input((n as u128 + 1).to_be_bytes());
        i.now_ns = if n % 2 == 0 {
            10 * SEC + n
        } else {
            10 * SEC - n * MS
        };
        kept += s.decide(&i).sampled as u64;
    }
    assert!(kept <= 10 + 1, "{kept}");
}

#[test]
fn adaptive_service_table_is_bounded() {
    let mut s = Sampler::with_max_services(SamplerConfig::Adaptive(AdaptiveConfig::default()), 8);
    for key in 0..100u32 {
        let mut i = input((key as u128 + 1).to_be_bytes());
        i.service_key = key;
        i.now_ns = u64::from(key) * MS;
        s.decide(&i);
    }
    assert_eq!(s.services_tracked(), 8);
    // Idle services make room again (swept at most once per second).
    let mut i = input([0xee; 16]);
    i.service_key = 1000;
    i.now_ns = 120 * SEC;
    s.decide(&i);
    assert_eq!(s.services_tracked(), 1);
}

// ---- configuration ----

#[test]
fn env_defaults_to_parentbased_always_on() {
    assert_eq!(
        SamplerConfig::from_env(env(&[])).unwrap(),
        SamplerConfig::ParentBased(RootSampler::AlwaysOn)
    );
    assert_eq!(
        SamplerConfig::default().to_string(),
        "ParentBased{root=AlwaysOnSampler}"
    );
    // Empty counts as unset.
    let c = SamplerConfig::from_env(env(&[
        (OTEL_TRACES_SAMPLER, " "),
        (OTEL_TRACES_SAMPLER_ARG, ""),
    ]))
    .unwrap();
    assert_eq!(c, SamplerConfig::default());
}

#[test]
fn env_selects_each_sampler() {
    let ratio = |p| Ratio::new(p).unwrap();
    for (name, arg, want, desc) in [
        (
            "always_on",
            None,
            SamplerConfig::AlwaysOn,
            "AlwaysOnSampler",
        ),
        (
            "ALWAYS_OFF",
            None,
            SamplerConfig::AlwaysOff,
            "AlwaysOffSampler",
        ),
        (
            "traceidratio",
            Some("0.25"),
            SamplerConfig::TraceIdRatio(ratio(0.25)),
            "TraceIdRatioBased{0.25}",
        ),
        (
            "traceidratio",
            None,
            SamplerConfig::TraceIdRatio(ratio(1.0)),
            "TraceIdRatioBased{1}",
        ),
        (
            "parentbased_always_on",
            None,
            SamplerConfig::ParentBased(RootSampler::AlwaysOn),
            "ParentBased{root=AlwaysOnSampler}",
        ),
        (
            "parentbased_always_off",
            Some("junk is ignored"),
            SamplerConfig::ParentBased(RootSampler::AlwaysOff),
            "ParentBased{root=AlwaysOffSampler}",
        ),
        (
            "Parentbased_TraceIdRatio",
            Some(" 0.001 "),
            SamplerConfig::ParentBased(RootSampler::TraceIdRatio(ratio(0.001))),
            "ParentBased{root=TraceIdRatioBased{0.001}}",
        ),
        (
            "periscope_adaptive",
            None,
            SamplerConfig::Adaptive(AdaptiveConfig {
                max_spans_per_second: 100,
                slow_threshold_ns: 1000 * MS,
            }),
            "PeriscopeAdaptive{max_spans_per_second=100,slow_threshold_ms=1000}",
        ),
        (
            "periscope_adaptive",
            Some("25"),
            SamplerConfig::Adaptive(AdaptiveConfig {
                max_spans_per_second: 25,
                slow_threshold_ns: 1000 * MS,
            }),
            "PeriscopeAdaptive{max_spans_per_second=25,slow_threshold_ms=1000}",
        ),
    ] {
        let mut vars = vec![(OTEL_TRACES_SAMPLER, name)];
        vars.extend(arg.map(|a| (OTEL_TRACES_SAMPLER_ARG, a)));
        let c = SamplerConfig::from_env(env(&vars)).unwrap();
        assert_eq!(c, want, "{name} {arg:?}");
        assert_eq!(c.to_string(), desc);
    }
    let c = SamplerConfig::from_env(env(&[
        (OTEL_TRACES_SAMPLER, PERISCOPE_ADAPTIVE),
        (PERISCOPE_SLOW_THRESHOLD_MS, "250"),
    ]))
    .unwrap();
    assert_eq!(
        c,
        SamplerConfig::Adaptive(AdaptiveConfig {
            max_spans_per_second: 100,
            slow_threshold_ns: 250 * MS
        })
    );
}

#[test]
fn bad_env_values_are_one_line_errors() {
    for (vars, var, needle) in [
        (
            vec![(OTEL_TRACES_SAMPLER, "sometimes")],
            OTEL_TRACES_SAMPLER,
            "expected one of",
        ),
        (
            vec![(OTEL_TRACES_SAMPLER, "jaeger_remote")],
            OTEL_TRACES_SAMPLER,
            "not supported",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "traceidratio"),
                (OTEL_TRACES_SAMPLER_ARG, "abc"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "between 0 and 1",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "traceidratio"),
                (OTEL_TRACES_SAMPLER_ARG, "1.5"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "between 0 and 1",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "traceidratio"),
                (OTEL_TRACES_SAMPLER_ARG, "-0.1"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "between 0 and 1",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "parentbased_traceidratio"),
                (OTEL_TRACES_SAMPLER_ARG, "NaN"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "between 0 and 1",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "parentbased_traceidratio"),
                (OTEL_TRACES_SAMPLER_ARG, "10%"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "between 0 and 1",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "periscope_adaptive"),
                (OTEL_TRACES_SAMPLER_ARG, "0"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "positive whole number",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "periscope_adaptive"),
                (OTEL_TRACES_SAMPLER_ARG, "0.5"),
            ],
            OTEL_TRACES_SAMPLER_ARG,
            "positive whole number",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "periscope_adaptive"),
                (PERISCOPE_SLOW_THRESHOLD_MS, "0"),
            ],
            PERISCOPE_SLOW_THRESHOLD_MS,
            "positive",
        ),
        (
            vec![
                (OTEL_TRACES_SAMPLER, "periscope_adaptive"),
                (PERISCOPE_SLOW_THRESHOLD_MS, "1s"),
            ],
            PERISCOPE_SLOW_THRESHOLD_MS,
            "positive",
        ),
        // Validated whatever the sampler, so a typo is caught before it matters.
        (
            vec![(PERISCOPE_SLOW_THRESHOLD_MS, "-5")],
            PERISCOPE_SLOW_THRESHOLD_MS,
            "positive",
        ),
    ] {
        let e = SamplerConfig::from_env(env(&vars)).unwrap_err();
        assert_eq!(e.var, var, "{vars:?}");
        let msg = e.to_string();
        assert!(msg.contains(needle) && msg.contains(var), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn adaptive_keeps_the_callers_of_a_kept_span_so_traces_stay_whole() {
    let mut s = adaptive(1, 10_000);
    // Use up the one-span budget.
    let mut first = input([1; 16]);
    first.now_ns = SEC;
    assert!(s.decide(&first).sampled);
    // A failing backend call (finishes first) is kept because it failed...
    let mut child = input([2; 16]);
    child.now_ns = SEC + 1;
    child.is_error = true;
    assert_eq!(s.decide(&child).reason, Reason::Error);
    // ...and its callers, over the cap and healthy, are kept because of it.
    for k in 0..3 {
        let mut caller = input([2; 16]);
        caller.now_ns = SEC + 2 + k;
        caller.service_key = 2 + k as u32;
        let d = s.decide(&caller);
        assert!(d.sampled, "caller {k}");
        assert_eq!(d.reason, Reason::Trace);
    }
    // An unrelated healthy span over the cap is still dropped.
    let mut other = input([3; 16]);
    other.now_ns = SEC + 10;
    assert!(!s.decide(&other).sampled);
    assert_eq!(s.stats().kept_because_trace, 3);
}

#[test]
fn following_a_trace_is_bounded() {
    let mut s = adaptive(1, 10_000);
    let mut i = input([4; 16]);
    i.is_error = true;
    i.now_ns = SEC;
    assert!(s.decide(&i).sampled);
    let mut followed = 0;
    for n in 0..5_000u64 {
        let mut j = input([4; 16]);
        j.now_ns = 2 * SEC + n;
        if s.decide(&j).reason == Reason::Trace {
            followed += 1;
        }
    }
    assert_eq!(followed, 1_000);
}
