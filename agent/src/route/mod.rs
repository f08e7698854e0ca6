//! `http.route` for metrics and span names: a low-cardinality template of the request
//! path, such as `/api/users/{id}`.
//!
//! The agent sees raw paths, not the framework's route table, so it has to guess the
//! template. A wrong guess that keeps a user id in the route is expensive: every id
//! becomes a metric series (a "label explosion") and the backend drowns. So a route is
//! resolved in three steps, each safer than the one before it:
//!
//! 1. **Configured patterns** ([`RoutePatterns`]), first match wins. The syntax:
//!    * a pattern is an absolute path: `/api/users/{id}`; it is matched segment by
//!      segment (segments are what lies between `/`), exactly and case-sensitively,
//!      against the path as sent (no percent-decoding, query and fragment removed);
//!    * `{name}` is a whole segment and matches exactly one non-empty segment;
//!    * `{name...}` or `*`, only as the last segment, match the rest of the path, which
//!      may be empty: `/static/*` matches `/static`, `/static/` and `/static/css/a.css`;
//!    * a trailing slash is a segment (an empty one): `/api/` matches `/api/` only;
//!    * the route is the pattern as written (`/files/{path...}`).
//!
//!    Names are made of ASCII letters, digits, `_` and `-`. Anything else with `{`, `}`
//!    or `*` in it, a `?` or `#`, or a pattern not starting with `/`, is an error at
//!    startup.
//! 2. **Folding** (`fold`): each segment that looks like an identifier becomes a
//!    placeholder, everything else is kept as sent. `{id}` stands for numbers, UUIDs, hex
//!    strings (git hashes, Mongo ObjectIds), long tokens and digit-heavy slugs; `{date}` for ISO
//!    dates and timestamps; `{email}` for e-mail addresses. API versions (`v1`,
//!    `v2beta1`, `2.0`) and words stay. One placeholder for all identifier kinds keeps a
//!    route the same when an API accepts both numeric ids and UUIDs, and matches what
//!    frameworks call the parameter anyway (`/users/:id`). See `fold` for the exact
//!    rules. The folded route is capped at [`RouteConfig::max_route_len`] bytes; what
//!    does not fit becomes a trailing `/*`.
//! 3. **Overflow**: a [`RouteTable`] remembers at most
//!    [`RouteConfig::max_routes_per_service`] distinct folded routes. After that every
//!    new route is [`OVERFLOW_ROUTE`] (`/{overflow}`), flagged
//!    ([`Route::is_overflow`]) and counted ([`RouteTable::overflow_count`]); routes seen
//!    before keep resolving to themselves. Configured patterns do not count towards the
//!    cap (they are bounded by the configuration). This is the backstop for what folding
//!    misses (user names, slugs without digits): it bounds both the metric series and the
//!    table's memory (at most `max_routes_per_service` strings of at most
//!    `max_route_len + 2` bytes).
//!
//! `route` runs for every request on the event thread, so it does not allocate when the
//! route is already known: the folded form is built in a buffer owned by the table and
//! looked up by `&str`; a [`Route`] is an `Arc<str>`, cloning it is a reference-count
//! increment. No regex: every rule is a single pass over the bytes of one segment.
//!
//! The module is split by role: `pattern` parses and matches configured patterns, `fold`
//! holds the pure folding rules, and the tests live in `tests`.

mod fold;
mod pattern;

#[cfg(test)]
mod tests;

use foldhash::{HashSet, HashSetExt};
use std::fmt;
use std::sync::Arc;

pub use pattern::{PatternError, RoutePatterns};

/// The route every path gets once its table is full. Chosen to be self-explaining in a
/// dashboard (Beyla uses `/**` for the same purpose).
pub const OVERFLOW_ROUTE: &str = "/{overflow}";
/// Default for [`RouteConfig::max_routes_per_service`].
pub const DEFAULT_MAX_ROUTES_PER_SERVICE: usize = 200;
/// Default for [`RouteConfig::max_route_len`].
pub const DEFAULT_MAX_ROUTE_LEN: usize = 256;
/// Smallest accepted [`RouteConfig::max_route_len`]; smaller values are raised to it.
pub const MIN_MAX_ROUTE_LEN: usize = 16;

/// How routes are resolved; shared by the route tables of all services.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Explicit patterns, tried in order before folding.
    pub patterns: RoutePatterns,
    /// Most distinct folded routes one table (one service) keeps; further new routes go
    /// to [`OVERFLOW_ROUTE`]. Zero sends every path that matches no pattern there.
    pub max_routes_per_service: usize,
    /// Most bytes of a folded route; the part of the path that does not fit becomes `/*`.
    /// Values below [`MIN_MAX_ROUTE_LEN`] are raised to it.
    pub max_route_len: usize,
}

impl Default for RouteConfig {
    fn default() -> RouteConfig {
        RouteConfig {
            patterns: RoutePatterns::default(),
            max_routes_per_service: DEFAULT_MAX_ROUTES_PER_SERVICE,
            max_route_len: DEFAULT_MAX_ROUTE_LEN,
        }
    }
}

/// A resolved `http.route`: an interned string, cheap to clone and to send to exporters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    name: Arc<str>,
    overflow: bool,
}

impl Route {
    fn new(name: Arc<str>) -> Route {
        Route {
            name,
            overflow: false,
        }
    }

    /// A route taken as it is: a gRPC method (`/package.Service/Method`) is its own
    /// route, already of low cardinality.
    pub fn exact(name: &str) -> Route {
        Route::new(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// True for the overflow bucket of a full table: the real route is unknown. Such a
    /// route is fine as a metric label; a span name may prefer the bare method.
    pub fn is_overflow(&self) -> bool {
        self.overflow
    }
}

impl AsRef<str> for Route {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The routes of one service (one traced process). Not shared between threads: it lives
/// with the event loop, which owns one per process.
#[derive(Debug)]
pub struct RouteTable {
    patterns: RoutePatterns,
    known: HashSet<Arc<str>>,
    max_routes: usize,
    max_len: usize,
    /// Reused for every folded path so a known route costs no allocation.
    buf: String,
    overflow: Route,
    overflow_count: u64,
}

impl RouteTable {
    pub fn new(config: &RouteConfig) -> RouteTable {
        let max_len = config.max_route_len.max(MIN_MAX_ROUTE_LEN);
        RouteTable {
            patterns: config.patterns.clone(),
            known: HashSet::new(),
            max_routes: config.max_routes_per_service,
            max_len,
            buf: String::with_capacity(max_len + 2),
            overflow: Route {
                name: Arc::from(OVERFLOW_ROUTE),
                overflow: true,
            },
            overflow_count: 0,
        }
    }

    /// The route of a request target: an origin-form path (`/a/b?q`), or an
    /// absolute-form URL (`http://host/a/b`, sent to proxies), whose scheme and authority
    /// are ignored. Query and fragment are ignored; an empty path is `/`. Never panics,
    /// whatever the input.
    pub fn route(&mut self, target: &str) -> Route {
        let path = fold::path_of(target);
        if let Some(route) = self.patterns.find(path) {
            return route.clone();
        }
        fold::fold_path(path, self.max_len, &mut self.buf);
        if let Some(name) = self.known.get(self.buf.as_str()) {
            return Route::new(name.clone());
        }
        if self.known.len() >= self.max_routes {
            self.overflow_count += 1;
            return self.overflow.clone();
        }
        let name: Arc<str> = Arc::from(self.buf.as_str());
        self.known.insert(name.clone());
        Route::new(name)
    }

    /// Requests that got [`OVERFLOW_ROUTE`] because the table was full.
    pub fn overflow_count(&self) -> u64 {
        self.overflow_count
    }

    /// Distinct folded routes remembered (configured patterns not included).
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// True once new routes go to [`OVERFLOW_ROUTE`].
    pub fn is_full(&self) -> bool {
        self.known.len() >= self.max_routes
    }
}
