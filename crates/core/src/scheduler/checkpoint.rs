//! The resume state of a running download (`--continue`): what is on disk
//! as the part table sees it, written every few seconds so that a process
//! killed outright loses little, and only after the bytes it claims are
//! synced when `fsync` is asked.

use std::sync::Arc;
use std::time::Duration;

use super::file_job::FileJob;
use crate::redact::redact_url;
use crate::resume;

/// How often, under `--continue`, the resume state of a file is written
/// while it downloads, so that a process killed outright (which writes
/// nothing on its way out) loses at most this much of its work.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

impl FileJob {
    /// The resume state of the file as it is on disk now.
    pub(super) fn state(&self) -> resume::State {
        resume::State {
            url: redact_url(&self.url),
            size: self.size,
            validator: self.validator.clone().unwrap_or_default(),
            spans: self.span_list(),
        }
    }

    /// Writes the resume state every [`CHECKPOINT_EVERY`] while bytes
    /// arrive, until the download's outcome is known.
    pub(super) async fn checkpoints(self: Arc<Self>) {
        let mut saved = Vec::new();
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            let state = self.state();
            if state.spans.is_empty() || state.spans == saved {
                continue;
            }
            if let Err(e) = self.sync_part().await {
                tracing::debug!("cannot sync {}: {e}", self.temp);
                continue;
            }
            let done = self.state_final.lock().expect("state lock poisoned");
            if *done {
                return;
            }
            // A few small writes: not worth a trip to the blocking pool.
            match resume::save(&self.temp, &state) {
                Ok(()) => saved = state.spans,
                Err(e) => tracing::debug!("cannot checkpoint {}: {e}", self.temp),
            }
            drop(done);
        }
    }

    /// With `fsync`, makes what the part file holds durable, so that a
    /// state taken before survives a power cut as well as a killed process.
    pub(super) async fn sync_part(&self) -> std::io::Result<()> {
        match self.opened.get().and_then(|o| o.durable.as_ref()) {
            Some(part) => part.with(|f| f.sync_data()).await,
            None => Ok(()),
        }
    }

    /// `[start, pos, end]` of every span, `pos` what is on disk: at any
    /// moment (the spans are read under one lock, so they tile the file)
    /// a true statement of which bytes of the file are good.
    pub(super) fn span_list(&self) -> Vec<[u64; 3]> {
        self.parts().resume_state()
    }
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
