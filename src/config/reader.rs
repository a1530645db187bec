//! Reading variables: typed, bounded, and every problem noted rather than returned at the
//! first one.

use std::fmt;

/// The environment being read, and the problems found in it so far.
pub(super) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(super) problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Reader {
            lookup,
            problems: Vec::new(),
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    pub(super) fn problem(&mut self, message: &str) {
        self.problems.push(message.to_owned());
    }

    /// `true`/`false` (or `1`/`0`, `yes`/`no`), `default` when unset.
    pub(super) fn flag(&mut self, name: &str, default: bool) -> bool {
        match self
            .get(name)
            .map(|raw| raw.to_ascii_lowercase())
            .as_deref()
        {
            None => default,
            Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(_) => {
                self.problems.push(format!("{name} must be true or false"));
                default
            }
        }
    }

    pub(super) fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    pub(super) fn number<N>(
        &mut self,
        name: &str,
        default: N,
        range: std::ops::RangeInclusive<N>,
    ) -> N
    where
        N: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.trim().parse::<N>() {
            Ok(value) if range.contains(&value) => value,
            _ => {
                self.problems.push(format!(
                    "{name} must be a whole number from {} to {}, got {raw:?}",
                    range.start(),
                    range.end()
                ));
                default
            }
        }
    }

    /// A value parsed by `parse`, whose problem is noted; `fallback` when it has one.
    pub(super) fn parsed<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, Vec<String>>,
        fallback: impl FnOnce() -> T,
    ) -> Option<T> {
        let raw = self.get(name)?;
        Some(match parse(&raw) {
            Ok(value) => value,
            Err(problems) => {
                self.problems.extend(problems);
                fallback()
            }
        })
    }
}
