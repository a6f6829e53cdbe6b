//! Which entries of a tree are wanted: `include` and `exclude` globs on the
//! path relative to the start directory, and how deep to go. Kept apart
//! from the walk so that the rules are tested without a server.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// How deep a walk goes when no depth is given: deep enough for any real
/// tree, and a bound on a server that makes up directories without end.
pub(crate) const DEFAULT_MAX_DEPTH: usize = 64;

/// The compiled rules of a walk.
#[derive(Debug)]
pub(crate) struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    max_depth: usize,
}

impl Filter {
    pub(crate) fn new(include: &[Glob], exclude: &[Glob], max_depth: Option<usize>) -> Filter {
        let set = |globs: &[Glob]| {
            let mut builder = GlobSetBuilder::new();
            for glob in globs {
                builder.add(glob.clone());
            }
            // Each glob compiled alone already; a set of them cannot fail.
            builder.build().unwrap_or_else(|_| GlobSet::empty())
        };
        Filter {
            include: (!include.is_empty()).then(|| set(include)),
            exclude: set(exclude),
            max_depth: max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
        }
    }

    /// Whether the file at `rel` (relative to the start, `/`-separated) is
    /// wanted: no exclude glob matches, and some include glob does when
    /// there are any.
    pub(crate) fn wants_file(&self, rel: &str) -> bool {
        !self.exclude.is_match(rel) && self.include.as_ref().is_none_or(|i| i.is_match(rel))
    }

    /// Whether the directory at `rel`, `depth` levels below the start, is
    /// listed: an excluded directory is not, nor anything below it. Include
    /// globs do not prune directories: a file deep below may match.
    pub(crate) fn enters_dir(&self, rel: &str, depth: usize) -> bool {
        depth <= self.max_depth && !self.exclude.is_match(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Vec<Glob> {
        list.iter().map(|g| Glob::new(g).unwrap()).collect()
    }

    #[test]
    fn include_and_exclude_match_the_relative_path_at_any_depth() {
        let f = Filter::new(&globs(&["*.nc"]), &globs(&["*/tmp/*", "skip.nc"]), None);
        assert!(f.wants_file("a.nc"));
        assert!(f.wants_file("x/y/a.nc"));
        assert!(!f.wants_file("x/y/a.txt"));
        assert!(!f.wants_file("x/tmp/a.nc"));
        assert!(!f.wants_file("skip.nc"));
        assert!(
            f.wants_file("x/skip.nc"),
            "a glob without * is the whole path"
        );
    }

    #[test]
    fn excluded_directories_and_depth_prune_the_walk() {
        let f = Filter::new(&globs(&["*.nc"]), &globs(&["cache"]), Some(1));
        assert!(f.enters_dir("data", 1), "includes never prune a directory");
        assert!(!f.enters_dir("cache", 1));
        assert!(!f.enters_dir("data/deeper", 2));
        let unbounded = Filter::new(&[], &[], None);
        assert!(unbounded.enters_dir("a", DEFAULT_MAX_DEPTH));
        assert!(!unbounded.enters_dir("a", DEFAULT_MAX_DEPTH + 1));
    }
}
