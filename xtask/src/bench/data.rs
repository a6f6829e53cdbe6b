//! The workloads and their data: created once per bench run on the
//! harness's data dir, which every server serves.

use std::collections::HashMap;
use std::path::PathBuf;

use pymatris_harness::{Servers, random_bytes};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// How a workload's files are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Proto {
    Http,
    Https,
    Ftp,
    Sftp,
}

impl Proto {
    pub(super) fn scheme(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
            Proto::Ftp => "ftp",
            Proto::Sftp => "sftp",
        }
    }
}

/// A set of files on the servers, created at most once per bench run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum DataSet {
    /// One file of 1 GiB.
    Big,
    /// One file of 256 MiB.
    Quarter,
    /// 32 files of 16 MiB.
    Medium,
    /// 2000 files of 16 KiB.
    Small,
    /// The first 200 of [`DataSet::Small`].
    Small200,
    /// The first n of [`DataSet::Small`].
    SmallFirst(usize),
    /// 8 files of 1 MiB, for the smoke run.
    Smoke,
    /// 2,000 files of mixed sizes in 40 directories (`tree.rs`).
    Tree,
}

/// One source file: where the servers serve it from and what a tool must
/// save it as (its base name, in the output dir).
#[derive(Clone, Debug)]
pub(super) struct DataFile {
    /// Path under the data dir, `/`-separated.
    pub(super) rel: String,
    /// Base name, which every tool saves it under.
    pub(super) name: String,
    /// The file on disk, to compare the download with.
    pub(super) source: PathBuf,
    pub(super) size: u64,
}

/// What one workload downloads, how, and with which parallelism.
#[derive(Clone, Debug)]
pub(super) struct Workload {
    /// `W1` … `W8`, `S1` for the smoke run.
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    pub(super) proto: Proto,
    pub(super) data: DataSet,
    /// Files at once for every tool that can (`--max-parallel`, `-j`,
    /// `--parallel-max`, `mget -P`); `None` keeps pymatris's default.
    pub(super) parallel: Option<u32>,
    /// Report files/s rather than MB/s.
    pub(super) per_file: bool,
}

impl Workload {
    pub(super) fn matches(&self, pattern: &str) -> bool {
        let hay = format!("{} {} {}", self.id, self.title, self.proto.scheme()).to_lowercase();
        pattern
            .split(',')
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty())
            .any(|p| {
                // `W1` must not select a `W10`: a pattern that is a whole id
                // matches that id only.
                if p.len() >= 2 && p.starts_with('w') && p[1..].chars().all(|c| c.is_ascii_digit())
                {
                    self.id.eq_ignore_ascii_case(&p)
                } else {
                    hay.contains(&p)
                }
            })
    }
}

const MIRROR_FTP: &str = "mirror of 2000 files in 40 dirs over FTP";
const MIRROR_SFTP: &str = "mirror of 2000 files in 40 dirs over SFTP";
const MIRROR_HTTP: &str = "mirror of 2000 files in 40 dirs over HTTP";

/// The workloads of issue 4, and the mirrors of issue 16.
pub(super) fn workloads() -> Vec<Workload> {
    let w = |id, title, proto, data, parallel, per_file| Workload {
        id,
        title,
        proto,
        data,
        parallel,
        per_file,
    };
    vec![
        w(
            "W1",
            "1 GiB over HTTP",
            Proto::Http,
            DataSet::Big,
            None,
            false,
        ),
        w(
            "W2",
            "1 GiB over HTTPS",
            Proto::Https,
            DataSet::Big,
            None,
            false,
        ),
        w(
            "W3",
            "32 x 16 MiB over HTTP",
            Proto::Http,
            DataSet::Medium,
            None,
            false,
        ),
        w(
            "W4",
            "2000 x 16 KiB over HTTP",
            Proto::Http,
            DataSet::Small,
            Some(16),
            true,
        ),
        w(
            "W5",
            "1 GiB over FTP",
            Proto::Ftp,
            DataSet::Big,
            None,
            false,
        ),
        w(
            "W6",
            "1 GiB over SFTP",
            Proto::Sftp,
            DataSet::Big,
            None,
            false,
        ),
        w(
            "W7",
            "200 x 16 KiB over SFTP",
            Proto::Sftp,
            DataSet::Small200,
            Some(16),
            true,
        ),
        w(
            "W8",
            "32 x 16 MiB over FTP",
            Proto::Ftp,
            DataSet::Medium,
            None,
            false,
        ),
        // Issue 16: whole trees, listing included, 16 transfers for all.
        w("M1", MIRROR_FTP, Proto::Ftp, DataSet::Tree, Some(16), false),
        w(
            "M2",
            MIRROR_SFTP,
            Proto::Sftp,
            DataSet::Tree,
            Some(16),
            false,
        ),
        w(
            "M3",
            MIRROR_HTTP,
            Proto::Http,
            DataSet::Tree,
            Some(16),
            false,
        ),
    ]
}

/// The one workload of `--smoke`.
pub(super) fn smoke_workload() -> Workload {
    Workload {
        id: "S1",
        title: "8 x 1 MiB over HTTP (smoke)",
        proto: Proto::Http,
        data: DataSet::Smoke,
        parallel: None,
        per_file: false,
    }
}

/// Creates each data set on first use.
#[derive(Debug)]
pub(super) struct Data {
    sets: HashMap<DataSet, Vec<DataFile>>,
    /// Files of 1 MiB and more are this many times smaller (`--quick`).
    divisor: u64,
}

impl Data {
    pub(super) fn new(divisor: u64) -> Data {
        Data {
            sets: HashMap::new(),
            divisor: divisor.max(1),
        }
    }

    pub(super) fn files(&mut self, servers: &Servers, set: DataSet) -> Vec<DataFile> {
        if let DataSet::Small200 | DataSet::SmallFirst(_) = set {
            let mut all = self.files(servers, DataSet::Small);
            all.truncate(if let DataSet::SmallFirst(n) = set {
                n
            } else {
                200
            });
            return all;
        }
        let divisor = self.divisor;
        self.sets
            .entry(set)
            .or_insert_with(|| match set {
                DataSet::Tree => super::tree::create(servers, divisor),
                _ => create(servers, set, divisor),
            })
            .clone()
    }
}

fn create(servers: &Servers, set: DataSet, divisor: u64) -> Vec<DataFile> {
    let started = std::time::Instant::now();
    let (dir, count, size, seed) = match set {
        DataSet::Big => ("big", 1, GIB, 1),
        DataSet::Quarter => ("quarter", 1, 256 * MIB, 2),
        DataSet::Medium => ("medium", 32, 16 * MIB, 100),
        DataSet::Small | DataSet::Small200 | DataSet::SmallFirst(_) => {
            ("small", 2000, 16 * KIB, 10_000)
        }
        DataSet::Smoke => ("smoke", 8, MIB, 50_000),
        DataSet::Tree => unreachable!("tree.rs creates the tree"),
    };
    let size = if size > MIB { size / divisor } else { size };
    let files: Vec<DataFile> = (0..count)
        .map(|i| {
            let name = if count == 1 {
                "big.bin".to_owned()
            } else {
                format!("f{i:04}.bin")
            };
            let rel = format!("{dir}/{name}");
            let seed = seed + i;
            let source = if size >= MIB {
                servers.write_random(&rel, size, seed)
            } else {
                servers.write_file(&rel, &random_bytes(size as usize, seed))
            };
            DataFile {
                rel,
                name,
                source,
                size,
            }
        })
        .collect();
    eprintln!(
        "created {count} x {} under {dir}/ in {:.1?}",
        human_size(size),
        started.elapsed()
    );
    files
}

fn human_size(n: u64) -> String {
    if n >= GIB {
        format!("{} GiB", n / GIB)
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{} KiB", n / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(pattern: &str) -> Vec<&'static str> {
        workloads()
            .into_iter()
            .filter(|w| w.matches(pattern))
            .map(|w| w.id)
            .collect()
    }

    #[test]
    fn selects_workloads() {
        assert_eq!(chosen("W1"), ["W1"]);
        assert_eq!(chosen("w4, W7"), ["W4", "W7"]);
        assert_eq!(chosen("sftp"), ["W6", "W7", "M2"]);
        assert_eq!(chosen("M1"), ["M1"]);
        assert_eq!(chosen("https"), ["W2"]);
        assert_eq!(chosen("16 KiB"), ["W4", "W7"]);
        assert!(chosen("W9").is_empty());
    }
}
