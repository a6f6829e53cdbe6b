//! What a server turned out to support.

use std::sync::atomic::{AtomicBool, Ordering};

/// What a server turned out to support, learnt from its answers.
#[derive(Debug, Default)]
pub(crate) struct Caps {
    /// `EPSV` is refused: use `PASV`.
    pub(crate) no_epsv: AtomicBool,
    /// A transfer over `EPSV` worked.
    pub(crate) epsv_ok: AtomicBool,
    pub(crate) no_size: AtomicBool,
    pub(crate) no_mdtm: AtomicBool,
    pub(crate) no_mlst: AtomicBool,
    /// `MLSD` is unknown: list with `LIST`.
    pub(crate) no_mlsd: AtomicBool,
    /// `REST` is refused: no ranges.
    pub(crate) no_rest: AtomicBool,
    /// `SIZE` answered with a size.
    pub(crate) size_ok: AtomicBool,
    /// Commands sent before the previous reply went wrong: one at a time.
    pub(crate) no_pipelining: AtomicBool,
    /// A file's commands sent behind another file's running transfer
    /// went wrong: each session takes its next file once the transfer
    /// ended (`EARLY_MAX` in `pipeline.rs`).
    pub(crate) no_early: AtomicBool,
}

impl Caps {
    pub(crate) fn get(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Relaxed)
    }

    pub(crate) fn set(flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Relaxed);
    }
}
