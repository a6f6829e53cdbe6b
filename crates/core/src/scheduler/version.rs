//! The one place that decides whether an answer of the server is of the
//! version of the file being downloaded. Every part's answer is compared
//! here with the validators and size the first answer gave, whatever the
//! protocol did with the validator it was handed (HTTP makes its request
//! conditional with it; others may only report what they found), so that
//! a file never mixes bytes of two versions.

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{RemoteMeta, Validator};

/// Fails with [`ErrorKind::Changed`] when `answer` describes another
/// version of the file than the one of `validator` and `size`. What either
/// side does not know (no validator, no size) is no difference.
pub(super) fn same_version(
    validator: Option<&Validator>,
    size: Option<u64>,
    answer: &RemoteMeta,
) -> Result<()> {
    if let Some(ours) = validator
        && !ours.matches(&answer.validator)
    {
        return Err(Error::new(
            ErrorKind::Changed,
            "the file changed on the server during the download",
        ));
    }
    if let (Some(ours), Some(theirs)) = (size, answer.size)
        && ours != theirs
    {
        return Err(Error::new(
            ErrorKind::Changed,
            format!("the file's size changed from {ours} to {theirs} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(etag: Option<&str>, modified: Option<&str>, size: Option<u64>) -> RemoteMeta {
        RemoteMeta {
            size,
            validator: Validator {
                etag: etag.map(Into::into),
                modified: modified.map(Into::into),
            },
            ..RemoteMeta::default()
        }
    }

    #[test]
    fn another_validator_or_size_is_another_version() {
        let first = meta(Some("\"v1\""), Some("t1"), Some(100));
        let ours = Some(&first.validator);
        assert!(same_version(ours, Some(100), &first).is_ok());
        for other in [
            meta(Some("\"v2\""), Some("t1"), Some(100)),
            meta(Some("\"v1\""), Some("t2"), Some(100)),
            meta(Some("\"v1\""), Some("t1"), Some(101)),
        ] {
            let err = same_version(ours, Some(100), &other).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Changed);
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn what_one_side_does_not_know_is_no_difference() {
        let first = meta(Some("\"v1\""), None, Some(100));
        // An FTP server that gives no time, an answer without a size.
        assert!(same_version(Some(&first.validator), Some(100), &meta(None, None, None)).is_ok());
        assert!(same_version(None, None, &meta(Some("\"v9\""), Some("t9"), Some(7))).is_ok());
        // A file of unknown size that later has one.
        assert!(
            same_version(
                Some(&first.validator),
                None,
                &meta(Some("\"v1\""), None, Some(5))
            )
            .is_ok()
        );
    }
}
