//! Listing as S3 and `readdir` need it, as a state machine without I/O:
//! prefix, delimiter, a start key (S3's marker, start-after or
//! continuation token) and a limit. The caller feeds it sorted batches of
//! live entries starting where [`Lister::start`] says, until it is done.
//!
//! A common prefix costs a seek, not a walk: once `photos/2026/` is
//! reported, the next batch starts after every key under it. A
//! continuation that falls inside a reported common prefix also skips the
//! rest of it, so a page that ended on a "directory" never lists it again.
//! Keys the index keeps for itself (starting with NUL) are never listed.

use std::ops::Bound;

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// Objects, in key order.
    pub objects: Vec<T>,
    /// Common prefixes up to the delimiter ("directories"), in order.
    pub prefixes: Vec<String>,
    /// More follow: continue after this key or prefix.
    pub next_after: Option<String>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self { objects: Vec::new(), prefixes: Vec::new(), next_after: None }
    }
}

/// What to do after a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Feed the batch that starts at [`Lister::start`].
    More,
    /// The page is complete.
    Done,
}

/// A listing in progress.
#[derive(Debug)]
pub struct Lister<T> {
    prefix: String,
    delimiter: Option<char>,
    limit: usize,
    start: Bound<String>,
    /// A common prefix without a successor string: skip keys under it.
    skip: Option<String>,
    last: Option<String>,
    page: Page<T>,
}

/// The smallest string greater than every string that starts with `p`
/// (`p` with its last character incremented), if there is one.
fn past(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(c) = chars.pop() {
        let next = (c as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl<T> Lister<T> {
    /// A listing of keys under `prefix` after `after` ("" for the start),
    /// at most `limit` objects and prefixes together.
    pub fn new(prefix: &str, delimiter: Option<char>, after: &str, limit: usize) -> Self {
        let mut l = Self {
            prefix: prefix.to_string(),
            delimiter,
            limit: limit.max(1),
            start: Bound::Unbounded,
            skip: None,
            last: None,
            page: Page::default(),
        };
        l.start = if after.is_empty() { Bound::Unbounded } else { Bound::Excluded(after.to_string()) };
        if let Some(p) = l.common_prefix(after) {
            l.seek_past(p);
        }
        if prefix.is_empty() {
            let internal = "\u{1}".to_string();
            let before = match &l.start {
                Bound::Unbounded => true,
                Bound::Included(s) | Bound::Excluded(s) => s.as_str() < internal.as_str(),
            };
            if before {
                l.start = Bound::Included(internal);
            }
        }
        l
    }

    /// Where the next batch starts.
    pub fn start(&self) -> Bound<&str> {
        match &self.start {
            Bound::Included(s) => Bound::Included(s),
            Bound::Excluded(s) => Bound::Excluded(s),
            Bound::Unbounded => Bound::Unbounded,
        }
    }

    /// The common prefix `key` falls under, if any.
    fn common_prefix(&self, key: &str) -> Option<String> {
        let d = self.delimiter?;
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let at = rest.find(d)?;
        Some(key[..self.prefix.len() + at + d.len_utf8()].to_string())
    }

    fn seek_past(&mut self, p: String) {
        match past(&p) {
            Some(next) => self.start = Bound::Included(next),
            None => {
                self.start = Bound::Excluded(p.clone());
                self.skip = Some(p);
            }
        }
    }

    fn full(&self) -> bool {
        self.page.objects.len() + self.page.prefixes.len() >= self.limit
    }

    /// Feeds the next batch: live entries in key order from
    /// [`Self::start`] on, at most `batch_limit` of them (fewer: the end).
    /// `object` turns an entry into a listed object.
    pub fn feed<V, E>(
        &mut self,
        batch: Vec<(String, V)>,
        batch_limit: usize,
        mut object: impl FnMut(String, V) -> Result<T, E>,
    ) -> Result<Step, E> {
        let short = batch.len() < batch_limit;
        for (key, value) in batch {
            let skipped = !key.starts_with(self.prefix.as_str())
                || key.starts_with('\0')
                || self.skip.as_ref().is_some_and(|s| key.starts_with(s.as_str()));
            if skipped {
                self.start = Bound::Excluded(key);
                continue;
            }
            if self.full() {
                self.page.next_after = self.last.clone();
                return Ok(Step::Done);
            }
            if let Some(p) = self.common_prefix(&key) {
                self.page.prefixes.push(p.clone());
                self.last = Some(p.clone());
                self.seek_past(p);
                return Ok(Step::More);
            }
            self.last = Some(key.clone());
            self.start = Bound::Excluded(key.clone());
            self.page.objects.push(object(key, value)?);
        }
        Ok(if short { Step::Done } else { Step::More })
    }

    /// The page.
    pub fn finish(self) -> Page<T> {
        self.page
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// Lists `keys` through the state machine, in batches of `batch`.
    fn run(
        keys: &BTreeSet<String>,
        prefix: &str,
        d: Option<char>,
        after: &str,
        limit: usize,
        batch: usize,
    ) -> Page<String> {
        let mut l = Lister::new(prefix, d, after, limit);
        loop {
            let from: Vec<(String, ())> = keys
                .iter()
                .filter(|k| match l.start() {
                    Bound::Included(s) => k.as_str() >= s,
                    Bound::Excluded(s) => k.as_str() > s,
                    Bound::Unbounded => true,
                })
                .take(batch)
                .map(|k| (k.clone(), ()))
                .collect();
            if l.feed(from, batch, |k, ()| Ok::<_, ()>(k)).expect("infallible") == Step::Done {
                return l.finish();
            }
        }
    }

    /// Everything a listing should return, by brute force: (is prefix, name).
    fn model(keys: &BTreeSet<String>, prefix: &str, d: Option<char>) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for k in keys.iter().filter(|k| k.starts_with(prefix) && !k.starts_with('\0')) {
            let rest = &k[prefix.len()..];
            match d.and_then(|d| rest.find(d).map(|at| k[..prefix.len() + at + d.len_utf8()].to_string())) {
                Some(p) => {
                    if !out.iter().any(|(is, q)| *is && *q == p) {
                        out.push((true, p));
                    }
                }
                None => out.push((false, k.clone())),
            }
        }
        out
    }

    fn key() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('/'), Just('.'), Just('\0'), Just('\u{10FFFF}')],
            1..6,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        /// Paging through any key set with any prefix, delimiter, page size
        /// and batch size returns exactly the brute-force listing, in order,
        /// each object and prefix once.
        #[test]
        fn pages_concatenate_to_the_brute_force_listing(
            keys in proptest::collection::btree_set(key(), 0..40),
            prefix in prop_oneof![Just(String::new()), Just("a".to_string()), Just("a/".to_string()), Just("b\u{10FFFF}".to_string())],
            d in prop_oneof![Just(None), Just(Some('/')), Just(Some('\u{10FFFF}'))],
            limit in 1..6usize,
            batch in 1..8usize,
        ) {
            let expect = model(&keys, &prefix, d);
            let mut got: Vec<(bool, String)> = Vec::new();
            let mut after = String::new();
            for _ in 0..200 {
                let page = run(&keys, &prefix, d, &after, limit, batch);
                prop_assert!(page.objects.len() + page.prefixes.len() <= limit);
                let mut items: Vec<(bool, String)> = page.objects.into_iter().map(|k| (false, k))
                    .chain(page.prefixes.into_iter().map(|p| (true, p))).collect();
                items.sort_by(|a, b| a.1.cmp(&b.1));
                got.extend(items);
                match page.next_after {
                    Some(n) => after = n,
                    None => break,
                }
            }
            prop_assert_eq!(got, expect);
        }
    }

    #[test]
    fn a_common_prefix_is_skipped_with_one_seek() {
        let keys: BTreeSet<String> = ["a/1", "a/2", "a/3", "b", "c/1"].iter().map(|s| s.to_string()).collect();
        let page = run(&keys, "", Some('/'), "", 2, 100);
        assert_eq!(page.prefixes, vec!["a/".to_string()]);
        assert_eq!(page.objects, vec!["b".to_string()]);
        assert_eq!(page.next_after.as_deref(), Some("b"));
        // A continuation inside a reported prefix does not list it again.
        let page = run(&keys, "", Some('/'), "a/", 10, 100);
        assert_eq!(page.objects, vec!["b".to_string()]);
        assert_eq!(page.prefixes, vec!["c/".to_string()]);
        assert_eq!(past("a/"), Some("a0".to_string()));
        assert_eq!(past("\u{10FFFF}"), None);
    }
}
