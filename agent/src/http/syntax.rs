//! Line-level HTTP/1.x syntax (RFC 9112), free of any stream state.
//!
//! Every function here takes one complete line (without its line end) or the first bytes
//! of a chunk and answers from those bytes alone, so the state machine in `parser` can
//! run them on a line found in place in a chunk or reassembled from several chunks alike.

use super::{Direction, Method};

/// Longest method token accepted.
pub(super) const MAX_METHOD: usize = 20;

/// Methods trusted when looking for a message start at a chunk boundary after sync was
/// lost. Any token is accepted in sync; this list only keeps a resync from landing on
/// random bytes that happen to look like `TOKEN /`.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
    b"PURGE",
    b"QUERY",
];

/// Why a start line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StartError {
    /// Well formed, but not HTTP/1.x (the HTTP/2 connection preface `PRI * HTTP/2.0`).
    NotHttp1,
    /// Not a start line.
    Malformed,
}

/// A request line, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version_minor: u8,
}

/// A status line, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StatusLine<'a> {
    pub version_minor: u8,
    pub status: u16,
    pub reason: &'a [u8],
}

/// A byte of a method token as this parser accepts it (RFC 9110 allows any tchar; real
/// methods are upper case, and the narrower set makes non-HTTP streams fail fast).
pub(super) fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `line` without surrounding spaces and tabs.
pub(super) fn trim_ows(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|&b| !is_ows(b)).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|&b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &line[start..end]
}

/// `line` without its trailing `\n` and a `\r` before it.
pub(super) fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `HTTP/1.x` -> `x`. `HTTP/2.0` and other majors are [`StartError::NotHttp1`].
fn parse_version(v: &[u8]) -> Result<u8, StartError> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => Ok(d - b'0'),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(StartError::NotHttp1)
        }
        _ => Err(StartError::Malformed),
    }
}

/// `method SP target SP HTTP/1.x`. The target is everything between the first and the
/// last space, so a target with stray spaces is still accepted.
pub(super) fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, StartError> {
    let sp = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(StartError::Malformed)?;
    let method = &line[..sp];
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_method_byte(b))
    {
        return Err(StartError::Malformed);
    }
    let rest = &line[sp + 1..];
    let sp2 = rest
        .iter()
        .rposition(|&b| b == b' ')
        .ok_or(StartError::Malformed)?;
    let target = trim_ows(&rest[..sp2]);
    if target.is_empty() {
        return Err(StartError::Malformed);
    }
    let version_minor = parse_version(&rest[sp2 + 1..])?;
    Ok(RequestLine {
        method,
        target,
        version_minor,
    })
}

/// The start of a request line cut by a gap: `method SP target-prefix`. The version is
/// unknown; the caller guesses.
pub(super) fn parse_partial_request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let method = &line[..sp];
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_method_byte(b))
    {
        return None;
    }
    let target = trim_ows(&line[sp + 1..]);
    // A target cut right where its version would start leaves `... HTTP/1.`: drop it.
    let target = match target.iter().rposition(|&b| b == b' ') {
        Some(i) => trim_ows(&target[..i]),
        None => target,
    };
    (!target.is_empty()).then_some((method, target))
}

/// `HTTP/1.x SP 3DIGIT [SP reason]`. A missing space before an empty reason is accepted.
pub(super) fn parse_status_line(line: &[u8]) -> Result<StatusLine<'_>, StartError> {
    if line.len() < 12 || line[8] != b' ' {
        // `HTTP/2 200` and friends never reach here (the stream's first bytes must be
        // `HTTP/1.`), so anything short is simply malformed.
        return Err(StartError::Malformed);
    }
    let version_minor = parse_version(&line[..8])?;
    let digits = &line[9..12];
    if !digits.iter().all(u8::is_ascii_digit) || digits[0] == b'0' {
        return Err(StartError::Malformed);
    }
    let status = digits
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    let reason = match &line[12..] {
        [] => &[][..],
        [b' ', reason @ ..] => trim_ows(reason),
        _ => return Err(StartError::Malformed),
    };
    Ok(StatusLine {
        version_minor,
        status,
        reason,
    })
}

/// The start of a status line cut by a gap: needs at least `HTTP/1.x NNN`.
pub(super) fn parse_partial_status_line(line: &[u8]) -> Option<(u8, u16)> {
    if line.len() < 12 {
        return None;
    }
    let s = parse_status_line(&line[..12]).ok()?;
    Some((s.version_minor, s.status))
}

/// One field line of a header or trailer section.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FieldLine<'a> {
    /// `name: value`, the value trimmed.
    Field(&'a [u8], &'a [u8]),
    /// An obsolete line folding continuation (starts with a space or tab); ignored.
    Continuation,
}

/// `name ":" OWS value OWS`. `None` when the line is not a field line.
pub(super) fn parse_field_line(line: &[u8]) -> Option<FieldLine<'_>> {
    match line.first() {
        Some(&b) if is_ows(b) => return Some(FieldLine::Continuation),
        None => return None,
        _ => {}
    }
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if !name.iter().all(|&b| is_tchar(b)) || name.is_empty() {
        return None;
    }
    Some(FieldLine::Field(name, trim_ows(&line[colon + 1..])))
}

/// A `Content-Length` value: digits, or a list of equal digit strings (`5, 5`) as some
/// proxies send. `None` when invalid or over `u64`.
pub(super) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        match result {
            Some(prev) if prev != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

/// Comma-separated tokens of a list header (`Connection`, `Transfer-Encoding`), trimmed,
/// empty elements skipped.
pub(super) fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// A chunk-size line: `1*HEXDIG [BWS] [";" chunk-ext]`. `None` when malformed or over `u64`.
pub(super) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return None;
    }
    let size = line[..digits].iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)? as u64;
        acc.checked_mul(16)?.checked_add(v)
    })?;
    let rest = trim_ows(&line[digits..]);
    (rest.is_empty() || rest[0] == b';').then_some(size)
}

/// A field line of a trailer section, or a continuation.
pub(super) fn is_trailer_line(line: &[u8]) -> bool {
    parse_field_line(line).is_some()
}

/// Whether a chunk whose first captured bytes are `head` plausibly starts a message of
/// direction `dir`. Used only after sync was lost, so it is strict: a status line needs
/// `HTTP/1.x NNN`; a request line needs a known method, a plausible first target byte,
/// and, if the line ends within `head`, a `HTTP/1.x` version at its end.
pub(super) fn looks_like_start(dir: Direction, head: &[u8]) -> bool {
    match dir {
        Direction::Response => parse_partial_status_line(head).is_some(),
        Direction::Request => looks_like_request_start(head),
    }
}

/// How many request lines start in `bytes` (at its first byte or after a line end).
/// For counting on a connection whose pairing is lost: the server read (and logged)
/// every request, including those inside a read that did not start with one.
pub fn count_request_starts(bytes: &[u8]) -> u64 {
    count_line_starts(bytes, looks_like_request_start)
}

/// How many final (non-1xx) status lines start in `bytes` (at its first byte or after a
/// line end). The response side of [`count_request_starts`]: a server answering
/// pipelined requests writes several responses in one syscall (apache does), and only
/// the first starts at the syscall's first byte.
pub fn count_response_starts(bytes: &[u8]) -> u64 {
    count_line_starts(bytes, |line| {
        parse_partial_status_line(line).is_some_and(|(_, status)| status >= 200)
    })
}

fn count_line_starts(bytes: &[u8], starts_here: impl Fn(&[u8]) -> bool) -> u64 {
    let after_lf = bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1);
    std::iter::once(0)
        .chain(after_lf)
        .filter(|&i| i < bytes.len() && starts_here(&bytes[i..]))
        .count() as u64
}

fn looks_like_request_start(head: &[u8]) -> bool {
    let probe = &head[..head.len().min(MAX_METHOD + 1)];
    let Some(sp) = probe.iter().position(|&b| b == b' ') else {
        return false;
    };
    if !KNOWN_METHODS.contains(&&head[..sp]) {
        return false;
    }
    match head.get(sp + 1) {
        Some(&b) if b == b'/' || b == b'*' || b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    match head.iter().position(|&b| b == b'\n') {
        Some(nl) => parse_request_line(trim_eol(&head[..=nl])).is_ok(),
        None => true,
    }
}

/// What precedes the first byte of a slice handed to [`ends_chunked_body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Before {
    /// The slice starts a chunk: treated as the start of a line.
    ChunkStart,
    /// The byte before the slice.
    Byte(u8),
    /// Not captured.
    Unknown,
}

/// How far back from the end of a chunk the last-chunk line is searched for.
const END_SCAN: usize = 512;

/// Whether `end`, the last captured bytes of a chunk, ends a chunked body: a last-chunk
/// line (`0`, leading zeros allowed, no extensions) at the start of a line, then either
/// the final CRLF or trailer field lines and the final CRLF, with nothing after.
pub(super) fn ends_chunked_body(end: &[u8], before: Before) -> bool {
    if !end.ends_with(b"\r\n\r\n") {
        return false;
    }
    let lowest = end.len().saturating_sub(END_SCAN);
    let mut p = end.len().saturating_sub(5);
    loop {
        if end[p..].starts_with(b"0\r\n") && trailers_then_end(&end[p + 3..]) {
            // Walk back over leading zeros to the start of the size.
            let mut s = p;
            while s > 0 && end[s - 1] == b'0' {
                s -= 1;
            }
            let at_line_start = match s.checked_sub(1) {
                Some(i) => end[i] == b'\n',
                None => match before {
                    Before::ChunkStart => true,
                    Before::Byte(b) => b == b'\n',
                    Before::Unknown => false,
                },
            };
            if at_line_start {
                return true;
            }
        }
        if p <= lowest {
            return false;
        }
        p -= 1;
    }
}

/// `rest` is `\r\n`, or field lines each ending `\r\n` followed by the final `\r\n`.
fn trailers_then_end(rest: &[u8]) -> bool {
    if rest == b"\r\n" {
        return true;
    }
    let Some(fields) = rest.strip_suffix(b"\r\n\r\n") else {
        return false;
    };
    fields
        .split(|&b| b == b'\n')
        .all(|l| matches!(parse_field_line(trim_eol(l)), Some(FieldLine::Field(..))))
}

/// The method for a token already checked by [`is_method_byte`].
pub(super) fn method_from_token(token: &[u8]) -> Method {
    match token {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"CONNECT" => Method::Connect,
        b"OPTIONS" => Method::Options,
        b"TRACE" => Method::Trace,
        b"PATCH" => Method::Patch,
        other => Method::Other(String::from_utf8_lossy(other).into_owned()),
    }
}

/// `bytes` as a String of at most `cap` bytes: lossy UTF-8, never ending in a cut
/// character.
pub(super) fn capped_string(bytes: &[u8], cap: usize) -> String {
    let mut b = &bytes[..bytes.len().min(cap)];
    if b.len() < bytes.len() {
        if let Err(e) = std::str::from_utf8(b) {
            if e.error_len().is_none() {
                // The cut went through a multi-byte character: drop its first bytes.
                b = &b[..e.valid_up_to()];
            }
        }
    }
    let mut s = String::from_utf8_lossy(b).into_owned();
    if s.len() > cap {
        // Replacement characters (3 bytes each) grew the string past the cap.
        let mut end = cap;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
