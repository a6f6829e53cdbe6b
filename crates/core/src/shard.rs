//! Which of N shards a URL belongs to, so that the machines of a job
//! array (a Kubernetes Indexed Job, a Slurm array, Dask workers) split one
//! list between them with no coordinator: each runs the whole list and
//! keeps its own URLs.
//!
//! The shard of a URL depends on the URL alone, never on its place in the
//! list nor on the list's length, so a list that grows or is reordered
//! between reruns sends each URL to the same shard as before. The hash is
//! SHA-256 of the URL's bytes exactly as given, its first 8 bytes read as
//! a big-endian integer, modulo N: defined by a standard rather than by a
//! hasher of this crate's choosing, it gives the same answer on every
//! platform, in every version, and in any other language that wants to
//! compute it (`int(sha256(url).hexdigest()[:16], 16) % n` in Python).

use std::fmt;

use sha2::{Digest, Sha256};

/// One shard of N: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u64,
    count: u64,
}

/// Why a pair of numbers is not a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// There must be at least one shard.
    #[error("the number of shards must be at least 1")]
    NoShards,
    /// The index counts from 0, so it must be below the count.
    #[error("shard index {index} is not below the number of shards {count} (indexes count from 0)")]
    IndexOutOfRange {
        /// The index given.
        index: u64,
        /// The number of shards given.
        count: u64,
    },
}

impl Shard {
    /// Shard `index` of `count` (indexes count from 0).
    pub fn new(index: u64, count: u64) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Its index, from 0.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether `url` belongs to this shard.
    pub fn contains(&self, url: &str) -> bool {
        shard_of(url, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard, in `0..count`, that `url` belongs to: the first 8 bytes of
/// the SHA-256 of its bytes, big-endian, modulo `count`. A `count` of 0 is
/// taken as 1.
pub fn shard_of(url: &str, count: u64) -> u64 {
    let digest = Sha256::digest(url.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head) % count.max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Pinned values: a change of the hash would move every URL of a
    /// running job array to another shard between two of its runs.
    #[test]
    fn the_hash_never_changes() {
        // `printf %s https://example.org/a | sha256sum` starts
        // b5b10dd0429e69ac = 13092260779864779180.
        assert_eq!(shard_of("https://example.org/a", 1 << 40), 894_470_875_564);
        assert_eq!(shard_of("https://example.org/a", 1000), 180);
        assert_eq!(shard_of("https://example.org/a", 7), 3);
        assert_eq!(shard_of("ftp://h/x", 10), 8);
        assert_eq!(shard_of("sftp://u@h/f.bin", 10), 4);
        assert_eq!(shard_of("https://example.org/a", 1), 0);
        assert_eq!(shard_of("x", 0), 0);
    }

    #[test]
    fn shards_are_checked() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(
            Shard::new(3, 3),
            Err(ShardError::IndexOutOfRange { index: 3, count: 3 })
        );
        let shard = Shard::new(2, 3).unwrap();
        assert_eq!(shard.to_string(), "2/3");
    }

    proptest! {
        /// Every URL is in exactly one shard.
        #[test]
        fn each_url_in_exactly_one_shard(url in ".{0,60}", count in 1u64..50) {
            let owners = (0..count)
                .filter(|&i| Shard::new(i, count).unwrap().contains(&url))
                .count();
            prop_assert_eq!(owners, 1);
        }

        /// A URL's shard does not depend on the list around it: splitting
        /// a list and a shuffled, longer copy of it gives each URL the same
        /// shard.
        #[test]
        fn same_url_same_shard_whatever_the_list(
            urls in proptest::collection::vec("https?://[a-z]{1,6}/[a-z0-9]{0,8}", 0..30),
            extra in proptest::collection::vec("ftp://[a-z]{1,6}/[a-z0-9]{0,8}", 0..30),
            count in 1u64..20,
            seed in any::<u64>(),
        ) {
            let split = |list: &[String]| -> Vec<Vec<String>> {
                (0..count)
                    .map(|i| {
                        let shard = Shard::new(i, count).unwrap();
                        list.iter().filter(|u| shard.contains(u)).cloned().collect()
                    })
                    .collect()
            };
            let mut other: Vec<String> = urls.iter().chain(&extra).cloned().collect();
            fastrand::Rng::with_seed(seed).shuffle(&mut other);
            let (a, b) = (split(&urls), split(&other));
            for (mine, theirs) in a.iter().zip(&b) {
                for url in mine {
                    prop_assert!(theirs.contains(url));
                }
            }
            // And the shards of one list are its partition.
            let total: usize = a.iter().map(Vec::len).sum();
            prop_assert_eq!(total, urls.len());
        }
    }
}
