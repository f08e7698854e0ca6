//! Folding a path into a route template: pure functions, one pass per segment.
//!
//! A segment (the bytes between two `/`) is classified by the first rule that applies:
//!
//! | rule | example | becomes |
//! |------|---------|---------|
//! | empty (trailing or double slash) | `/a/` | kept |
//! | API version: `v`/`V` + 1–3 digits, then `.digits`… or `alpha`/`beta`/`rc` + digits | `v1`, `v2.1`, `v1beta1` | kept |
//! | bare version: 2–3 dot-separated groups of 1–3 digits | `2.0`, `1.2.3` | kept |
//! | e-mail: text, `@` (or `%40`), text with a `.` | `a.b@x.org` | `{email}` |
//! | ISO date: `YYYY-MM`, `YYYY-MM-DD`, or that + `T`/`t`/`_`/space + anything | `2024-05-01T10:00Z` | `{date}` |
//! | number: digits, optional sign and one decimal point | `42`, `-3`, `52.5200` | `{id}` |
//! | UUID: 8-4-4-4-12 hex digits, any case | `3f2b…-…` | `{id}` |
//! | hex: ≥ 7 hex digits with at least one decimal digit (hashes, git short hashes, ObjectIds) | `5f8d0d55b54764421b7156c3` | `{id}` |
//! | token: ≥ 16 of `A-Za-z0-9-_.~+=%` mixing letters and digits (base64url, JWTs, slugs with ids) | `dGhpcyBpcyBhIHRva2Vu0` | `{id}` |
//! | 4 or more decimal digits anywhere | `order-12345`, `1920x1080`, `10.0.0.1` | `{id}` |
//! | anything else | `users`, `me`, `oauth2`, `sha256` | kept |
//!
//! The rules err on the side of folding: a route too coarse is a small loss, a user id
//! in a metric label is an outage. What they miss (user names, slugs without digits) is
//! caught by the table's cap.

/// Placeholder for identifiers of every kind.
pub(super) const ID: &str = "{id}";
/// Placeholder for ISO dates and timestamps.
pub(super) const DATE: &str = "{date}";
/// Placeholder for e-mail addresses.
pub(super) const EMAIL: &str = "{email}";

/// Segments past the route length cap are replaced by this (the pattern syntax for "the
/// rest of the path").
const REST: &str = "*";

/// The path of a request target: scheme and authority of an absolute-form target
/// removed, query and fragment removed, empty -> `/`. A target that is neither (`*`,
/// `host:443`) is returned as it is, without query.
pub(super) fn path_of(target: &str) -> &str {
    let mut path = target;
    // Only a target that does not start with `/` can carry a scheme: `/r/http://x` is a
    // path that happens to contain a URL.
    let scheme_end = if path.starts_with('/') {
        None
    } else {
        path.find("://")
    };
    if let Some(i) = scheme_end {
        let rest = &path[i + 3..];
        path = rest.find('/').map_or("", |p| &rest[p..]);
    }
    if let Some(end) = path.find(['?', '#']) {
        path = &path[..end];
    }
    if path.is_empty() { "/" } else { path }
}

/// Writes the folded form of `path` (as [`path_of`] returns it) into `out`. The result is
/// at most `max_len + 2` bytes: segments that would cross `max_len` become `/*`.
pub(super) fn fold_path(path: &str, max_len: usize, out: &mut String) {
    out.clear();
    let (lead, body) = match path.strip_prefix('/') {
        Some(body) => ("/", body),
        None => ("", path),
    };
    for (i, segment) in body.split('/').enumerate() {
        let sep = if i == 0 { lead } else { "/" };
        let folded = fold_segment(segment);
        if out.len() + sep.len() + folded.len() > max_len {
            out.push_str(sep);
            out.push_str(REST);
            return;
        }
        out.push_str(sep);
        out.push_str(folded);
    }
}

/// The placeholder for `segment`, or `segment` itself.
pub(super) fn fold_segment(segment: &str) -> &str {
    classify(segment.as_bytes()).unwrap_or(segment)
}

/// The placeholder a segment folds to, `None` to keep it. See the module doc for the
/// rules, in the order they are applied here.
pub(super) fn classify(s: &[u8]) -> Option<&'static str> {
    if s.is_empty() || is_version(s) {
        return None;
    }
    if is_email(s) {
        return Some(EMAIL);
    }
    if is_date(s) {
        return Some(DATE);
    }
    if is_number(s) || is_uuid(s) {
        return Some(ID);
    }
    let mut digits = 0usize;
    let mut letters = 0usize;
    let mut hex = true;
    let mut token = true;
    for &b in s {
        if b.is_ascii_digit() {
            digits += 1;
        } else if b.is_ascii_alphabetic() {
            letters += 1;
            hex &= b.is_ascii_hexdigit();
        } else {
            hex = false;
            token &= matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'=' | b'%');
        }
    }
    if hex && s.len() >= 7 && digits > 0 {
        return Some(ID);
    }
    if token && s.len() >= 16 && digits > 0 && letters > 0 {
        return Some(ID);
    }
    if digits >= 4 {
        return Some(ID);
    }
    None
}

/// Length of the run of ASCII digits at the start of `s`.
fn digit_run(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `v1`, `V2`, `v1.2`, `v2.0.1`, `v1beta1`, `v1alpha`, `v3rc2`.
fn is_version(s: &[u8]) -> bool {
    match s.first() {
        Some(b'v' | b'V') => {
            let s = &s[1..];
            let n = digit_run(s);
            if !(1..=3).contains(&n) {
                return false;
            }
            let rest = &s[n..];
            if rest.is_empty() || dotted_digits(rest, usize::MAX) {
                return true;
            }
            ["alpha", "beta", "rc"].iter().any(|tag| {
                rest.strip_prefix(tag.as_bytes())
                    .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
            })
        }
        Some(b'0'..=b'9') => {
            // 2.0, 1.2.3: 1–3 digits, then one or two `.ddd` groups.
            let n = digit_run(s);
            n <= 3 && {
                let rest = &s[n..];
                let groups = rest.iter().filter(|&&b| b == b'.').count();
                (1..=2).contains(&groups) && dotted_digits(rest, 3)
            }
        }
        _ => false,
    }
}

/// `s` is one or more `.digits` groups, each of 1..=max_digits digits.
fn dotted_digits(mut s: &[u8], max_digits: usize) -> bool {
    if s.is_empty() {
        return false;
    }
    while let Some(rest) = s.strip_prefix(b".") {
        let n = digit_run(rest);
        if n == 0 || n > max_digits {
            return false;
        }
        s = &rest[n..];
    }
    s.is_empty()
}

/// Something before an `@` (or its percent-encoding `%40`), something with a dot after.
fn is_email(s: &[u8]) -> bool {
    let (local, domain) = match s.iter().position(|&b| b == b'@') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => match s.windows(3).position(|w| w.eq_ignore_ascii_case(b"%40")) {
            Some(i) => (&s[..i], &s[i + 3..]),
            None => return false,
        },
    };
    !local.is_empty() && domain.len() >= 3 && domain[1..domain.len() - 1].contains(&b'.')
}

/// `YYYY-MM`, `YYYY-MM-DD`, or a date followed by `T`, `t`, `_` or a space and a time.
fn is_date(s: &[u8]) -> bool {
    fn two(s: &[u8], at: usize, range: std::ops::RangeInclusive<u8>) -> bool {
        s.get(at..at + 2).is_some_and(|d| {
            d[0].is_ascii_digit()
                && d[1].is_ascii_digit()
                && range.contains(&((d[0] - b'0') * 10 + d[1] - b'0'))
        })
    }
    if s.len() < 7 || digit_run(s) != 4 || s[4] != b'-' || !two(s, 5, 1..=12) {
        return false;
    }
    match s.get(7) {
        None => true,
        Some(b'-') if two(s, 8, 1..=31) => {
            matches!(s.get(10), None | Some(b'T' | b't' | b'_' | b' '))
        }
        _ => false,
    }
}

/// `42`, `-42`, `+4.2`: optional sign, digits, optionally `.` and digits.
fn is_number(s: &[u8]) -> bool {
    let s = match s.first() {
        Some(b'-' | b'+') => &s[1..],
        _ => s,
    };
    let n = digit_run(s);
    if n == 0 {
        return false;
    }
    match &s[n..] {
        [] => true,
        [b'.', frac @ ..] => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// 8-4-4-4-12 hex digits, either case.
fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
