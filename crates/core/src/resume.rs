//! What `--continue` keeps between runs: beside an unfinished
//! `NAME.pymatris-part`, a small `NAME.pymatris-part.state` that says which
//! bytes of it are good and which version of the remote file they belong
//! to. A later run resumes only when the server still describes the same
//! version (same size, same validator).

use camino::{Utf8Path, Utf8PathBuf};

use crate::protocol::{RemoteMeta, Validator};

/// The state of an unfinished download.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    /// The URL, passwords redacted (for people reading the file).
    pub(crate) url: String,
    /// The size of the remote file.
    pub(crate) size: Option<u64>,
    /// Its version.
    pub(crate) validator: Validator,
    /// `[start, pos, end]` of each part: bytes `start..pos` are written.
    pub(crate) spans: Vec<[u64; 3]>,
}

/// The largest state file read.
const MAX_STATE: u64 = 1 << 20;

/// `NAME.pymatris-part.state` for `NAME.pymatris-part`.
pub(crate) fn state_path(temp: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{temp}.state"))
}

/// The parts still to fetch of the download whose temp file is `temp`, if
/// it may be resumed against what the server now says of the file.
pub(crate) fn load(temp: &Utf8Path, meta: &RemoteMeta) -> Option<Vec<[u64; 3]>> {
    let mut text = String::new();
    let file = crate::files::open_regular(&state_path(temp), false).ok()??;
    // A state is a few hundred bytes; a huge file planted there is not one.
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_STATE), &mut text).ok()?;
    let state: State = serde_json::from_str(&text).ok()?;
    // Only a regular file of no other name is resumed: a link planted in
    // its place is replaced, never written through.
    let part = temp.symlink_metadata().ok()?;
    if !crate::files::is_sole_regular(&part) {
        return None;
    }
    let written = part.len();
    let size = meta.size?;
    let same_version = state.size == Some(size) && state.validator.matches(&meta.validator);
    let sane = !state.spans.is_empty()
        && state.spans.iter().all(|&[start, pos, end]| {
            start <= pos && pos <= end && end <= size && pos <= written.max(start)
        })
        && covers(&state.spans, size);
    if !(same_version && sane) {
        tracing::debug!(%temp, "state does not match the remote file: starting over");
        return None;
    }
    // More than one part needs ranges; one part from a non-zero offset too.
    if !meta.ranges && state.spans.iter().any(|&[_, pos, _]| pos > 0) {
        return None;
    }
    Some(state.spans)
}

/// Whether the spans tile `0..size`.
fn covers(spans: &[[u64; 3]], size: u64) -> bool {
    let mut sorted: Vec<[u64; 3]> = spans.to_vec();
    sorted.sort_unstable();
    let mut next = 0;
    for [start, _, end] in sorted {
        if start != next {
            return false;
        }
        next = end;
    }
    next == size
}

/// Writes the state beside `temp`, whole or not at all (through a
/// temporary `NAME.pymatris-part.state.tmp`), and never through a link.
pub(crate) fn save(temp: &Utf8Path, state: &State) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    let path = state_path(temp);
    let tmp = Utf8PathBuf::from(format!("{path}.tmp"));
    crate::files::write_replacing(&path, &tmp, text.as_bytes())
}

/// Removes the state beside `temp`, if any.
pub(crate) fn remove(temp: &Utf8Path) {
    let _ = std::fs::remove_file(state_path(temp));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, etag: &str) -> RemoteMeta {
        RemoteMeta {
            size: Some(size),
            ranges: true,
            validator: Validator {
                etag: Some(etag.into()),
                modified: None,
            },
            ..RemoteMeta::default()
        }
    }

    #[test]
    fn resumes_only_the_same_version() {
        let dir = tempfile::tempdir().unwrap();
        let temp = Utf8PathBuf::from_path_buf(dir.path().join("a.bin.pymatris-part")).unwrap();
        std::fs::write(&temp, vec![1u8; 60]).unwrap();
        let state = State {
            url: "http://h/a.bin".into(),
            size: Some(100),
            validator: meta(100, "\"v1\"").validator,
            spans: vec![[0, 40, 50], [50, 60, 100]],
        };
        save(&temp, &state).unwrap();
        assert_eq!(load(&temp, &meta(100, "\"v1\"")), Some(state.spans.clone()));
        assert_eq!(load(&temp, &meta(100, "\"v2\"")), None, "another version");
        assert_eq!(load(&temp, &meta(101, "\"v1\"")), None, "another size");
        let mut no_ranges = meta(100, "\"v1\"");
        no_ranges.ranges = false;
        assert_eq!(load(&temp, &no_ranges), None);
        remove(&temp);
        assert_eq!(load(&temp, &meta(100, "\"v1\"")), None, "no state");
    }

    #[test]
    fn a_huge_state_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let temp = Utf8PathBuf::from_path_buf(dir.path().join("a.bin.pymatris-part")).unwrap();
        std::fs::write(&temp, vec![1u8; 100]).unwrap();
        let state = State {
            url: "http://h/a.bin".into(),
            size: Some(100),
            validator: meta(100, "\"v1\"").validator,
            spans: vec![[0, 40, 100]],
        };
        save(&temp, &state).unwrap();
        assert!(load(&temp, &meta(100, "\"v1\"")).is_some());
        // Valid JSON, but no state of ours is this long.
        let text = std::fs::read_to_string(state_path(&temp)).unwrap();
        let padded = " ".repeat(MAX_STATE as usize) + &text;
        std::fs::write(state_path(&temp), padded).unwrap();
        assert_eq!(load(&temp, &meta(100, "\"v1\"")), None);
    }

    #[test]
    fn spans_must_tile_the_file() {
        assert!(covers(&[[50, 50, 100], [0, 10, 50]], 100));
        assert!(!covers(&[[0, 10, 40], [50, 50, 100]], 100));
        assert!(!covers(&[[0, 10, 50]], 100));
    }
}
