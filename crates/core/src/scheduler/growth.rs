//! The batch's side of adaptive connections (`adapt` is the rule): what it
//! counts as running and waiting, the quickest answer it has seen, and the
//! files and parts it allows at once with the budget `adapt` sets. Apart
//! from `batch.rs`, which holds what every file shares.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::adapt::Load;
use super::batch::{Batch, Counting};
use super::file_job::FileSettings;

impl Batch {
    /// Files at once now: `max_parallel`, or more if the batch grew.
    pub(super) fn files_allowed(&self) -> usize {
        let max_parallel = self.config.max_parallel.max(1);
        match self.config.grow_parallel {
            true => max_parallel.max(self.budget.load(Ordering::Relaxed)),
            false => max_parallel,
        }
    }

    /// Parts of a file at once now: its `max_splits`, or more if the
    /// batch grew and the file may grow.
    pub(super) fn splits_allowed(&self, settings: &FileSettings) -> usize {
        let max_splits = settings.max_splits.max(1);
        match settings.grow_splits {
            true => max_splits.max(self.budget.load(Ordering::Relaxed)),
            false => max_splits,
        }
    }

    /// Counts a file among those `adapt` sees as able to take more
    /// transfers, until the guard is dropped.
    pub(super) fn splittable(&self) -> Counting<'_> {
        Counting::new(&self.splittable_files)
    }

    /// Whether a transfer ending its part should leave rather than take
    /// another: the batch grew, tried one more, and took it back.
    pub(super) fn over_budget(&self) -> bool {
        self.adapt.is_some()
            && self.transfers.load(Ordering::SeqCst) > self.budget.load(Ordering::Relaxed)
    }

    /// One step of `adapt`: the budget for the batch's load now.
    pub(super) fn adapt_tick(&self, now: Instant) -> usize {
        let Some(adapt) = &self.adapt else {
            return self.budget.load(Ordering::Relaxed);
        };
        let running = self.transfers.load(Ordering::SeqCst) + self.opening.load(Ordering::SeqCst);
        let mut wanting = running;
        if self.config.grow_parallel {
            wanting += self.files_waiting();
        }
        if self.config.grow_splits {
            // A file being split could take any number more, as far as
            // its parts say (`help` asks them).
            wanting += self.splittable_files.load(Ordering::SeqCst)
                * crate::config::DEFAULT_GROWTH_CEILING;
        }
        let answer = match self.answer.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        };
        let load = Load {
            running,
            wanting,
            answer,
        };
        tracing::trace!(?load, "adapt tick");
        let received = self.received.load(Ordering::Relaxed);
        let budget = adapt
            .lock()
            .expect("adapt poisoned")
            .tick(now, received, load);
        self.budget.store(budget, Ordering::Relaxed);
        budget
    }

    /// Files that wait for a task of the batch: those counted left beyond
    /// the tasks, or, in a streamed batch, the requests its stream holds
    /// ready, if more (a list read ahead holds many more than it counts).
    pub(super) fn files_waiting(&self) -> usize {
        let left = self.files_left.load(Ordering::SeqCst);
        let counted = left.saturating_sub(self.file_tasks.load(Ordering::SeqCst));
        counted.max(self.ahead.load(Ordering::Relaxed))
    }

    /// Notes how long a file's first request took to be answered: the
    /// quickest sets the pace of `adapt`.
    pub(super) fn answered(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        self.answer.fetch_min(us, Ordering::Relaxed);
    }
}
