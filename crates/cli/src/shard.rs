//! `--shard I/N` and `--shard auto`: the CLI's side of splitting one list
//! between the tasks of a job array. Which URL goes where is the engine's
//! [`pymatris_core::shard_of`]; this module reads the flag, and for `auto`
//! finds the task's index and count in the variables the batch engine sets.
//!
//! - Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` is set by Kubernetes;
//!   the count is not, so the manifest sets `JOB_COMPLETIONS` to the Job's
//!   `completions` (docs/scaling.md).
//! - Slurm job array: `SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT`;
//!   an array need not start at 0 (`--array=1-8`) nor step by 1
//!   (`--array=0-14:2`), so the index is taken relative to
//!   `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP`.

use anyhow::{Context, anyhow, bail};
use pymatris_core::Shard;

/// The value of `--shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShardArg {
    /// `I/N`.
    Fixed(Shard),
    /// `auto`: from the environment.
    Auto,
}

/// Parses `I/N` or `auto` (clap's value parser: clap names the flag).
pub(crate) fn parse_shard(text: &str) -> Result<ShardArg, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("auto") {
        return Ok(ShardArg::Auto);
    }
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not I/N (e.g. 0/4) nor auto"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{text:?} is not I/N (e.g. 0/4) nor auto"))
    };
    Shard::new(number(i)?, number(n)?)
        .map(ShardArg::Fixed)
        .map_err(|e| e.to_string())
}

/// The shard `arg` stands for, reading the job engine's variables through
/// `env` for `auto`. Errors name the flag.
pub(crate) fn resolve(
    arg: ShardArg,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Shard> {
    match arg {
        ShardArg::Fixed(shard) => Ok(shard),
        ShardArg::Auto => auto(&env).context("--shard auto"),
    }
}

fn auto(env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
    let var = |name: &str| -> anyhow::Result<Option<u64>> {
        match env(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| anyhow!("{name}={v:?} is not a whole number")),
        }
    };
    let need = |name: &str, why: &str| -> anyhow::Result<u64> {
        var(name)?.ok_or_else(|| anyhow!("{name} is not set ({why})"))
    };
    let kubernetes = var("JOB_COMPLETION_INDEX")?;
    let slurm = var("SLURM_ARRAY_TASK_ID")?;
    let (index, count) = match (kubernetes, slurm) {
        (Some(_), Some(_)) => {
            bail!(
                "both JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID are set; give the shard as I/N"
            )
        }
        (Some(index), None) => (
            index,
            need(
                "JOB_COMPLETIONS",
                "an Indexed Job's manifest sets it to the Job's completions",
            )?,
        ),
        (None, Some(id)) => {
            let count = need("SLURM_ARRAY_TASK_COUNT", "Slurm sets it in array jobs")?;
            let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = var("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let offset = id.checked_sub(min).ok_or_else(|| {
                anyhow!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
            })?;
            if offset % step != 0 {
                bail!(
                    "SLURM_ARRAY_TASK_ID {id} is not on the array's steps of {step} from {min}; \
                     use a range such as --array=0-{} or give the shard as I/N",
                    count.saturating_sub(1)
                );
            }
            (offset / step, count)
        }
        (None, None) => bail!(
            "no job-array index in the environment (JOB_COMPLETION_INDEX of a Kubernetes \
             Indexed Job, or SLURM_ARRAY_TASK_ID of a Slurm array); give the shard as I/N"
        ),
    };
    Shard::new(index, count).map_err(|e| {
        anyhow!("{e}; an array with gaps (such as --array=1,5,9) needs the shard given as I/N")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn shard(i: u64, n: u64) -> Shard {
        Shard::new(i, n).unwrap()
    }

    #[test]
    fn fixed_shards_parse() {
        assert_eq!(parse_shard("0/4"), Ok(ShardArg::Fixed(shard(0, 4))));
        assert_eq!(parse_shard(" 3 / 4 "), Ok(ShardArg::Fixed(shard(3, 4))));
        assert_eq!(parse_shard("AUTO"), Ok(ShardArg::Auto));
        for bad in ["4/4", "0/0", "1", "-1/4", "a/b", "1/2/3", "", "1/"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubernetes_indexed_jobs() {
        let got = resolve(
            ShardArg::Auto,
            env(&[("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETIONS", "5")]),
        );
        assert_eq!(got.unwrap(), shard(2, 5));
        let err = resolve(ShardArg::Auto, env(&[("JOB_COMPLETION_INDEX", "2")])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("--shard auto: "), "{text}");
        assert!(text.contains("JOB_COMPLETIONS"), "{text}");
        let err = resolve(
            ShardArg::Auto,
            env(&[("JOB_COMPLETION_INDEX", "5"), ("JOB_COMPLETIONS", "5")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not below"), "{err:#}");
    }

    #[test]
    fn slurm_arrays_from_any_start_and_step() {
        let plain = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
        ];
        assert_eq!(resolve(ShardArg::Auto, env(&plain)).unwrap(), shard(3, 4));
        // --array=1-4
        let from_one = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ];
        assert_eq!(
            resolve(ShardArg::Auto, env(&from_one)).unwrap(),
            shard(0, 4)
        );
        // --array=10-16:2
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "14"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(resolve(ShardArg::Auto, env(&stepped)).unwrap(), shard(2, 4));
        // --array=1,5,9: no shard can be inferred.
        let gaps = [
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ];
        assert!(resolve(ShardArg::Auto, env(&gaps)).is_err());
        let no_count = [("SLURM_ARRAY_TASK_ID", "0")];
        let err = resolve(ShardArg::Auto, env(&no_count)).unwrap_err();
        assert!(format!("{err:#}").contains("SLURM_ARRAY_TASK_COUNT"));
    }

    #[test]
    fn auto_without_an_engine_says_what_it_looked_for() {
        let err = resolve(ShardArg::Auto, env(&[])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("--shard auto: "), "{text}");
        assert!(text.contains("JOB_COMPLETION_INDEX") && text.contains("SLURM_ARRAY_TASK_ID"));
        let bad = [("JOB_COMPLETION_INDEX", "x"), ("JOB_COMPLETIONS", "2")];
        assert!(resolve(ShardArg::Auto, env(&bad)).is_err());
        let both = [
            ("JOB_COMPLETION_INDEX", "0"),
            ("JOB_COMPLETIONS", "2"),
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert!(resolve(ShardArg::Auto, env(&both)).is_err());
    }
}

/// Property tests of `--shard` over whole command lines.
#[cfg(test)]
mod proptests {
    use clap::Parser;
    use proptest::prelude::*;

    use crate::args::Args;

    /// The URLs and bad lines of `list` that `--shard i/n` keeps.
    fn kept(list: &str, i: u64, n: u64) -> Vec<String> {
        let shard = format!("{i}/{n}");
        let args = Args::try_parse_from(["pymatris", "-i", "-", "--shard", &shard]).unwrap();
        let plan = args
            .into_plan(std::io::Cursor::new(list.to_owned()))
            .unwrap();
        let items = plan.source.read_all().unwrap();
        let urls = items.iter().flatten().map(|e| e.url.clone());
        let bad = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|b| b.shown.clone());
        urls.chain(bad).collect()
    }

    proptest! {
        /// Every line of a list is in exactly one shard, and a URL's shard
        /// is the same whatever list it comes in.
        #[test]
        fn shards_partition_any_list(
            urls in proptest::collection::vec("https?://[a-z]{1,5}/[a-z0-9]{0,6}|http://a/ b|gopher://x/y", 0..25),
            n in 1u64..8,
            seed in any::<usize>(),
        ) {
            let list = urls.join("\n");
            let mut all: Vec<String> = (0..n).flat_map(|i| kept(&list, i, n)).collect();
            // The same lines, shuffled and in a longer list.
            let mut other = urls.clone();
            other.push("https://extra/line".to_owned());
            other.reverse();
            let turn = seed % other.len();
            other.rotate_left(turn);
            let other = other.join("\n");
            for i in 0..n {
                for line in kept(&list, i, n) {
                    prop_assert!(kept(&other, i, n).contains(&line), "{line} left shard {i}");
                }
            }
            let mut lines: Vec<String> = urls
                .iter()
                .map(|u| u.split_whitespace().next().unwrap_or_default().to_owned())
                .collect();
            all.sort();
            lines.sort();
            prop_assert_eq!(all, lines);
        }
    }
}
