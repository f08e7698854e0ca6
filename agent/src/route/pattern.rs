//! Configured route patterns: parsing (once, at startup) and matching (per request,
//! without allocating). The syntax is documented on the parent module.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::Route;

/// A pattern that cannot be used. Displays as one line naming the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Matches this exact segment (possibly empty: a trailing or double slash).
    Literal(Box<str>),
    /// `{name}`: any one non-empty segment.
    Param,
}

#[derive(Clone, Debug)]
struct Pattern {
    segments: Vec<Segment>,
    /// Ends with `{name...}` or `*`: whatever follows the segments matches.
    rest: bool,
    route: Route,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_owned(),
            reason,
        };
        let Some(body) = text.strip_prefix('/') else {
            return Err(err("a pattern is an absolute path and starts with `/`"));
        };
        if text.contains(['?', '#']) {
            return Err(err(
                "patterns match the path only; remove the query or fragment",
            ));
        }
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == "*" {
                if !last {
                    return Err(err(
                        "`*` matches the rest of the path and must be the last segment; \
                         use `{name}` for one segment",
                    ));
                }
                rest = true;
            } else if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, is_rest) = match inner.strip_suffix("...") {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(err(
                        "a placeholder name is non-empty and made of ASCII letters, digits, `_` and `-`",
                    ));
                }
                if is_rest {
                    if !last {
                        return Err(err("`{name...}` must be the last segment"));
                    }
                    rest = true;
                } else {
                    segments.push(Segment::Param);
                }
            } else if part.contains(['{', '}', '*']) {
                return Err(err("`{name}`, `{name...}` and `*` must be whole segments"));
            } else {
                segments.push(Segment::Literal((*part).into()));
            }
        }
        Ok(Pattern {
            segments,
            rest,
            route: Route::new(Arc::from(text)),
        })
    }

    /// `path` is a path without query, as `fold::path_of` returns it.
    fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = body.split('/');
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = match segment {
                Segment::Literal(lit) => part == &**lit,
                Segment::Param => !part.is_empty(),
            };
            if !ok {
                return false;
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// Validated route patterns, tried in order. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct RoutePatterns(Arc<[Pattern]>);

impl RoutePatterns {
    /// Parses every pattern; the first invalid one is the error.
    pub fn parse<I, S>(patterns: I) -> Result<RoutePatterns, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = patterns
            .into_iter()
            .map(|p| Pattern::parse(p.as_ref().trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutePatterns(parsed.into()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The route of the first pattern matching `path`.
    pub(super) fn find(&self, path: &str) -> Option<&Route> {
        self.0.iter().find(|p| p.matches(path)).map(|p| &p.route)
    }
}

/// A comma-separated list (`/api/users/{id}, /static/*`), as a flag or env var holds it.
/// Blank items are ignored. A pattern cannot contain a comma.
impl FromStr for RoutePatterns {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<RoutePatterns, PatternError> {
        RoutePatterns::parse(s.split(',').map(str::trim).filter(|p| !p.is_empty()))
    }
}

impl fmt::Display for RoutePatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(p.route.as_str())?;
        }
        Ok(())
    }
}
