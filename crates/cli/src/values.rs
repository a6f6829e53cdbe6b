//! The values of flags that clap parses with a function of ours: sizes,
//! rates and durations, read as aria2 and curl read them.

use std::time::Duration;

/// `123`, `512K`, `4M`, `1G` (binary units, as aria2 and curl read them);
/// a fraction of a byte is dropped.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let not_a_size = || format!("{text:?} is not a size (examples: 1048576, 512K, 4M, 1G)");
    let num = num.trim();
    // Plain decimals only: `f64` would also read `nan`, `inf` and `1e9`.
    if num.is_empty()
        || num.starts_with('.')
        || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || num.bytes().filter(|&b| b == b'.').count() > 1
    {
        return Err(not_a_size());
    }
    let value: f64 = num.parse().map_err(|_| not_a_size())?;
    let bytes = value * mult as f64;
    // 2^64 is the first value beyond u64; casting would saturate silently.
    if !(bytes.is_finite() && bytes < 18_446_744_073_709_551_616.0) {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// The largest `--min-split-size`: beyond it, no file is ever split
/// anyway, and twice the size still fits in a `u64`.
const MAX_SPLIT_SIZE: u64 = 1 << 50;

/// `--min-split-size`: a size of at least one byte.
pub(crate) fn parse_split_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("must be at least 1 byte".to_owned()),
        n if n > MAX_SPLIT_SIZE => Err("must be at most 1024T".to_owned()),
        n => Ok(n),
    }
}

/// `--max-speed`: at least one byte per second. Zero (or a fraction of a
/// byte) is refused rather than read as "no cap": leave the flag out for
/// that.
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("must be at least 1 byte per second (leave it out for no cap)".to_owned()),
        n => Ok(n),
    }
}

/// The shortest and longest `--timeouts`: below a millisecond no
/// connection could ever be made, and beyond a week the timers of the
/// runtime would be the limit rather than the user.
const MIN_TIMEOUT_SECS: f64 = 0.001;
const MAX_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// `--timeouts`: seconds, from a millisecond to a week.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let secs: f64 = t
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    // NaN is in no range, so it is refused here too.
    if !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(format!(
            "must be between {MIN_TIMEOUT_SECS} and {MAX_TIMEOUT_SECS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}
