//! Route resolution: each folding rule, the pattern syntax, the cap, and properties over
//! generated paths.

use std::collections::HashSet;

use proptest::prelude::*;

use super::fold::{classify, fold_path, path_of};
use super::*;

fn table(patterns: &[&str], max_routes: usize) -> RouteTable {
    RouteTable::new(&RouteConfig {
        patterns: RoutePatterns::parse(patterns).unwrap(),
        max_routes_per_service: max_routes,
        ..RouteConfig::default()
    })
}

fn route(target: &str) -> String {
    table(&[], 1000).route(target).as_str().to_owned()
}

fn uuid(bytes: [u8; 16], upper: bool) -> String {
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let s = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    if upper { s.to_uppercase() } else { s }
}

// ---- folding rules, one class each ----

#[test]
fn decimal_numbers_fold_to_id() {
    assert_eq!(route("/users/42"), "/users/{id}");
    assert_eq!(
        route("/users/0/orders/18446744073709551615"),
        "/users/{id}/orders/{id}"
    );
    assert_eq!(route("/page/2"), "/page/{id}");
    assert_eq!(route("/t/-17"), "/t/{id}");
    assert_eq!(route("/geo/52.5200/13.4050"), "/geo/{id}/{id}");
}

#[test]
fn uuids_fold_to_id_in_either_case() {
    let u = uuid([0xab; 16], false);
    assert_eq!(route(&format!("/orders/{u}")), "/orders/{id}");
    assert_eq!(
        route(&format!("/orders/{}", u.to_uppercase())),
        "/orders/{id}"
    );
    assert_eq!(
        route("/orders/123e4567-e89b-12d3-a456-426614174000/items"),
        "/orders/{id}/items"
    );
}

#[test]
fn hex_strings_and_object_ids_fold_to_id() {
    assert_eq!(route("/objects/5f8d0d55b54764421b7156c3"), "/objects/{id}"); // Mongo ObjectId
    assert_eq!(route("/commits/9fceb02"), "/commits/{id}"); // git short hash
    assert_eq!(route("/commits/abc1234"), "/commits/{id}");
    assert_eq!(route("/x/abc123"), "/x/abc123"); // too short to tell
    assert_eq!(route("/blobs/deadbee1"), "/blobs/{id}");
    assert_eq!(route("/sha/E3B0C44298FC1C149AFBF4C8996FB924"), "/sha/{id}");
    // Hex-looking words without a digit stay.
    assert_eq!(route("/feed/decade"), "/feed/decade");
    assert_eq!(route("/x/deadbeef"), "/x/deadbeef");
}

#[test]
fn long_mixed_tokens_fold_to_id() {
    assert_eq!(route("/s/dGhpcyBpcyBhIHRva2Vu0"), "/s/{id}");
    assert_eq!(route("/share/aZ3_kP9-qL2mN8xY"), "/share/{id}");
    let jwt = "/verify/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    assert_eq!(route(jwt), "/verify/{id}");
    assert_eq!(route("/blog/how-to-configure-http2-servers"), "/blog/{id}");
    // Long words without digits stay (the cap catches those).
    assert_eq!(
        route("/api/getUserProfileByName"),
        "/api/getUserProfileByName"
    );
    // Short mixed words stay.
    assert_eq!(route("/auth/oauth2/callback"), "/auth/oauth2/callback");
    assert_eq!(route("/hash/sha256"), "/hash/sha256");
}

#[test]
fn digit_heavy_segments_fold_to_id() {
    assert_eq!(route("/orders/order-12345"), "/orders/{id}");
    assert_eq!(route("/img/1920x1080/logo.png"), "/img/{id}/logo.png");
    assert_eq!(route("/peers/10.0.0.1"), "/peers/{id}");
    assert_eq!(route("/assets/main.3f2a9c1b.js"), "/assets/{id}");
}

#[test]
fn dates_fold_to_date() {
    assert_eq!(route("/reports/2024-05-01"), "/reports/{date}");
    assert_eq!(route("/reports/2024-05"), "/reports/{date}");
    assert_eq!(route("/events/2024-05-01T10:00:00Z/x"), "/events/{date}/x");
    assert_eq!(route("/events/2024-05-01T10%3A00%3A00Z"), "/events/{date}");
    // Not a date (month 13): still an identifier.
    assert_eq!(route("/reports/2024-13-01"), "/reports/{id}");
    assert_eq!(route("/reports/20240501"), "/reports/{id}");
}

#[test]
fn emails_fold_to_email() {
    assert_eq!(
        route("/users/jane.doe@example.com/prefs"),
        "/users/{email}/prefs"
    );
    assert_eq!(route("/users/jane%40example.com"), "/users/{email}");
    assert_eq!(route("/users/@handle"), "/users/@handle");
}

#[test]
fn versions_and_words_stay() {
    for kept in [
        "/v1/users",
        "/V2/users",
        "/api/v1.2/users",
        "/api/v2.0.1/users",
        "/apis/apps/v1beta1/deployments",
        "/api/v3rc2",
        "/api/2.0/users",
        "/api/1.2.3",
        "/users/me",
        "/healthz",
        "/metrics",
        "/.well-known/openid-configuration",
        "/api/users/search",
        "/static/app.js",
        "/caf%C3%A9",
        "/café/menü",
    ] {
        assert_eq!(route(kept), kept, "{kept}");
    }
    assert_eq!(route("/v12345/x"), "/{id}/x");
}

#[test]
fn classify_examples() {
    assert_eq!(classify(b""), None);
    assert_eq!(classify(b"1"), Some(fold::ID));
    assert_eq!(classify(b"v1"), None);
    assert_eq!(classify(b"x509"), None);
    assert_eq!(classify(b"abc123"), None);
    assert_eq!(classify(b"ab1234"), Some(fold::ID));
}

// ---- normalisation of the target ----

#[test]
fn query_fragment_and_authority_are_ignored() {
    assert_eq!(route("/users/42?expand=orders&token=abc"), "/users/{id}");
    assert_eq!(route("/a#frag"), "/a");
    assert_eq!(route("http://example.com:8080/users/7?x"), "/users/{id}");
    assert_eq!(route("http://example.com"), "/");
    assert_eq!(route("http://example.com?x=1"), "/");
    assert_eq!(
        route("/r/http://evil.example/x"),
        "/r/http://evil.example/x"
    );
    assert_eq!(path_of("/r/http://x/y"), "/r/http://x/y");
}

#[test]
fn empty_path_is_root_and_slashes_are_kept_as_sent() {
    assert_eq!(route(""), "/");
    assert_eq!(route("?q=1"), "/");
    assert_eq!(route("/"), "/");
    assert_eq!(route("/users/42/"), "/users/{id}/");
    assert_eq!(route("//users//42"), "//users//{id}");
    assert_eq!(route("*"), "*");
}

#[test]
fn long_paths_are_capped_at_segment_boundaries() {
    let mut out = String::new();
    let long: String = (0..200).map(|i| format!("/seg{}", i % 10)).collect();
    fold_path(&long, 32, &mut out);
    assert!(out.len() <= 34, "{out}");
    assert!(out.ends_with("/*"), "{out}");
    assert!(out.starts_with("/seg0/seg1/"), "{out}");
    // One overlong word: nothing fits.
    fold_path(&format!("/{}", "é".repeat(100)), 32, &mut out);
    assert_eq!(out, "/*");
    // An overlong identifier folds first and fits.
    fold_path(&format!("/t/{}", "a1".repeat(300)), 32, &mut out);
    assert_eq!(out, "/t/{id}");
}

// ---- patterns ----

#[test]
fn patterns_win_over_folding_first_match_first() {
    let mut t = table(
        &[
            "/api/users/{id}",
            "/api/users/me",
            "/files/{path...}",
            "/static/*",
            "/api/",
        ],
        10,
    );
    assert_eq!(t.route("/api/users/alice").as_str(), "/api/users/{id}");
    // First match wins, even over a more specific later pattern.
    assert_eq!(t.route("/api/users/me").as_str(), "/api/users/{id}");
    assert_eq!(
        t.route("/files/a/b/c.txt?dl=1").as_str(),
        "/files/{path...}"
    );
    assert_eq!(t.route("/files/").as_str(), "/files/{path...}");
    assert_eq!(t.route("/files").as_str(), "/files/{path...}");
    assert_eq!(t.route("/static/css/site.css").as_str(), "/static/*");
    assert_eq!(t.route("/static").as_str(), "/static/*");
    assert_eq!(t.route("/api/").as_str(), "/api/");
    // Exact on segments: no prefix matches, `{id}` needs a non-empty segment, a trailing
    // slash is a segment.
    assert_eq!(t.route("/staticx/a").as_str(), "/staticx/a");
    assert_eq!(t.route("/api/users/").as_str(), "/api/users/");
    assert_eq!(t.route("/api/users/alice/x").as_str(), "/api/users/alice/x");
    assert_eq!(t.route("/api").as_str(), "/api");
    // Patterns are not folded results and do not count towards the cap.
    assert_eq!(t.len(), 4);
    assert!(!t.route("/static/x").is_overflow());
}

#[test]
fn pattern_matches_path_as_sent_no_decoding_case_sensitive() {
    let mut t = table(&["/caf%C3%A9/{item}"], 10);
    assert_eq!(t.route("/caf%C3%A9/x").as_str(), "/caf%C3%A9/{item}");
    assert_eq!(t.route("/café/x").as_str(), "/café/x");
    assert_eq!(t.route("/CAF%C3%A9/x").as_str(), "/CAF%C3%A9/x");
}

#[test]
fn root_and_catch_all_patterns() {
    let mut t = table(&["/", "/*"], 10);
    assert_eq!(t.route("").as_str(), "/");
    assert_eq!(t.route("/anything/42").as_str(), "/*");
    assert_eq!(t.route("*").as_str(), "*"); // not a path: no pattern applies
}

#[test]
fn invalid_patterns_are_one_line_errors() {
    for (bad, needle) in [
        ("api/users", "starts with `/`"),
        ("/a/*/b", "last segment"),
        ("/a/{rest...}/b", "last segment"),
        ("/a/{}", "non-empty"),
        ("/a/{x y}", "non-empty"),
        ("/a/{id}.json", "whole segments"),
        ("/a/b*", "whole segments"),
        ("/a?x=1", "query"),
    ] {
        let e = RoutePatterns::parse([bad]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{bad}: {msg}");
        assert!(msg.contains(bad), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn pattern_list_from_str() {
    let p: RoutePatterns = " /a/{id} , /b/*,, ".parse().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p.to_string(), "/a/{id},/b/*");
    assert!("".parse::<RoutePatterns>().unwrap().is_empty());
    assert!("/a,b".parse::<RoutePatterns>().is_err());
}

// ---- the cap ----

#[test]
fn full_table_sends_new_routes_to_overflow_and_keeps_known_ones() {
    let mut t = table(&[], 2);
    assert_eq!(t.route("/a").as_str(), "/a");
    assert_eq!(t.route("/b/1").as_str(), "/b/{id}");
    assert!(t.is_full());
    let o = t.route("/c");
    assert_eq!(o.as_str(), OVERFLOW_ROUTE);
    assert!(o.is_overflow());
    assert_eq!(t.route("/b/2").as_str(), "/b/{id}");
    assert!(!t.route("/a?x").is_overflow());
    t.route("/d");
    assert_eq!(t.overflow_count(), 2);
    assert_eq!(t.len(), 2);
}

#[test]
fn zero_cap_overflows_everything_but_patterns() {
    let mut t = table(&["/ok"], 0);
    assert!(t.route("/x").is_overflow());
    assert!(!t.route("/ok").is_overflow());
    assert_eq!(t.overflow_count(), 1);
}

#[test]
fn known_routes_share_one_allocation() {
    let mut t = table(&[], 10);
    let a = t.route("/users/1");
    let b = t.route("/users/2");
    assert!(std::ptr::eq(a.as_str(), b.as_str()));
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Ids in the path never make new routes.
    #[test]
    fn ten_thousand_user_orders_are_one_route(
        ids in prop::collection::vec((any::<u64>(), any::<[u8; 16]>(), any::<bool>()), 10_000)
    ) {
        let mut t = table(&[], DEFAULT_MAX_ROUTES_PER_SERVICE);
        let mut seen = HashSet::new();
        for (user, order, upper) in &ids {
            let r = t.route(&format!("/users/{user}/orders/{}", uuid(*order, *upper)));
            seen.insert(r.as_str().to_owned());
        }
        prop_assert_eq!(seen.len(), 1);
        prop_assert!(seen.contains("/users/{id}/orders/{id}"), "{:?}", seen);
        prop_assert_eq!(t.overflow_count(), 0);
    }

    /// Random words are not folded, so the cap has to hold them.
    #[test]
    fn ten_thousand_random_word_paths_stay_under_the_cap(
        paths in prop::collection::vec(
            prop::collection::vec("[a-zA-Z]{1,12}", 1..5),
            10_000,
        ),
        cap in 1usize..300,
    ) {
        let mut t = table(&[], cap);
        let mut routes = HashSet::new();
        let mut overflowed = 0u64;
        for segs in &paths {
            let r = t.route(&format!("/{}", segs.join("/")));
            if r.is_overflow() {
                overflowed += 1;
            } else {
                routes.insert(r.as_str().to_owned());
            }
        }
        prop_assert!(routes.len() <= cap);
        prop_assert_eq!(routes.len(), t.len());
        prop_assert_eq!(t.overflow_count(), overflowed);
        let distinct: HashSet<String> = paths.iter().map(|s| format!("/{}", s.join("/"))).collect();
        prop_assert_eq!(routes.len(), distinct.len().min(cap));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever arrives, `route` returns a bounded route and never panics.
    #[test]
    fn any_target_is_safe(
        target in prop_oneof![
            any::<String>(),
            "[/?#:%@.a-z0-9{}*-]{0,64}",
            prop::collection::vec(any::<u8>(), 0..600)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        max_len in 0usize..64,
    ) {
        let mut t = RouteTable::new(&RouteConfig {
            patterns: RoutePatterns::parse(["/a/{x}", "/b/{rest...}", "/c/*"]).unwrap(),
            max_routes_per_service: 4,
            max_route_len: max_len,
        });
        let r = t.route(&target);
        prop_assert!(!r.as_str().is_empty());
        prop_assert!(r.as_str().len() <= max_len.max(MIN_MAX_ROUTE_LEN) + 2);
        // Routing is a function of the target.
        prop_assert_eq!(t.route(&target), r);
    }

    /// Any pattern string either parses or is a one-line error; parsing never panics.
    #[test]
    fn any_pattern_parses_or_errs(p in "[/{}a-z.*?]{0,24}", path in "[/a-z]{0,24}") {
        match RoutePatterns::parse([&p]) {
            Ok(ps) => {
                let mut t = RouteTable::new(&RouteConfig { patterns: ps, ..RouteConfig::default() });
                t.route(&path);
            }
            Err(e) => prop_assert!(!e.to_string().contains('\n')),
        }
    }
}
