//! Parsing of the response headers pymatris reads: `Content-Range`,
//! `Content-Disposition`, validators, `Accept-Ranges`; and the rule that
//! keeps credentials on the origin they were given for.
//!
//! No maintained crate parses `Content-Disposition` the way a downloader
//! needs (RFC 6266 with RFC 8187 `filename*`, quoted strings holding `;`):
//! `content_disposition` splits on every `;`, and `mailparse` is an e-mail
//! parser. So this is a small hand-written parser, tested on hostile input.

use http::HeaderMap;
use http::header::{ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use percent_encoding::percent_decode_str;
use pymatris_core::Validator;
use url::Url;

/// A parsed `Content-Range` header (RFC 9110 §14.4), `bytes` unit only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentRange {
    /// `bytes first-last/complete`; `complete` is `None` for `*`.
    Bytes {
        first: u64,
        last: u64,
        complete: Option<u64>,
    },
    /// `bytes */complete`, sent with 416.
    Unsatisfied { complete: u64 },
}

/// Parses `Content-Range`; `None` when it is malformed or not in bytes.
pub(crate) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let value = value.trim();
    let (unit, rest) = value.split_once([' ', '\t'])?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (range, complete) = (range.trim(), complete.trim());
    let complete = if complete == "*" {
        None
    } else {
        Some(parse_u64(complete)?)
    };
    if range == "*" {
        return complete.map(|complete| ContentRange::Unsatisfied { complete });
    }
    let (first, last) = range.split_once('-')?;
    let (first, last) = (parse_u64(first.trim())?, parse_u64(last.trim())?);
    if last < first || complete.is_some_and(|c| last >= c) {
        return None;
    }
    Some(ContentRange::Bytes {
        first,
        last,
        complete,
    })
}

/// Digits only: `u64::from_str` would also accept a leading `+`.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The `Content-Length`, when present and well formed.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_LENGTH)?.to_str().ok()?;
    parse_u64(value.trim())
}

/// Whether `Accept-Ranges` lists `bytes`.
pub(crate) fn accepts_byte_ranges(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_RANGES)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|unit| unit.trim().eq_ignore_ascii_case("bytes"))
}

/// `ETag` and `Last-Modified`, as sent.
pub(crate) fn validator(headers: &HeaderMap) -> Validator {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Validator {
        etag: text(ETAG),
        modified: text(LAST_MODIFIED),
    }
}

/// What to send as `If-Range` for this validator: a strong ETag, else the
/// date (weak ETags are not allowed in `If-Range`, RFC 9110 §13.1.5).
pub(crate) fn if_range_value(validator: &Validator) -> Option<&str> {
    match (&validator.etag, &validator.modified) {
        (Some(etag), _) if !etag.starts_with("W/") => Some(etag),
        (_, Some(date)) => Some(date),
        _ => None,
    }
}

/// The file name from `Content-Disposition`, unsanitised.
pub(crate) fn filename(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_DISPOSITION)?;
    // Header values are bytes; anything beyond ASCII in a plain `filename=`
    // is most often UTF-8 sent raw, which browsers accept too.
    let text = String::from_utf8_lossy(value.as_bytes());
    content_disposition_filename(&text)
}

/// The file name of a `Content-Disposition` value (RFC 6266): the
/// `filename*` parameter (RFC 8187, UTF-8 or ISO-8859-1) when it decodes,
/// else `filename`. The name is returned raw: callers must sanitise it.
pub(crate) fn content_disposition_filename(value: &str) -> Option<String> {
    let params = disposition_params(value);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(name) = get("filename*")
        .and_then(decode_ext_value)
        .filter(|name| !name.is_empty())
    {
        return Some(name);
    }
    get("filename")
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// The parameters of a `Content-Disposition` value, in order, names as
/// sent, quoted strings unescaped. Parameters without `=` are skipped.
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = value;
    // The disposition type, unless the server left it out and started with
    // a parameter (`filename=a.txt`), which some do.
    let first_end = rest.find([';', '=']).unwrap_or(rest.len());
    if rest[first_end..].starts_with('=') {
        // No type: parse from the start.
    } else {
        rest = &rest[first_end..];
    }
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let Some(after_eq) = rest.strip_prefix('=') else {
            // A parameter without a value: skip it.
            continue;
        };
        let after_eq = after_eq.trim_start();
        let (value, remaining) = if let Some(quoted) = after_eq.strip_prefix('"') {
            parse_quoted(quoted)
        } else {
            let end = after_eq.find(';').unwrap_or(after_eq.len());
            (after_eq[..end].trim().to_owned(), &after_eq[end..])
        };
        rest = remaining;
        if !name.is_empty()
            && !params
                .iter()
                .any(|(k, _): &(String, String)| k.eq_ignore_ascii_case(name))
        {
            // The first of duplicated parameters wins.
            params.push((name.to_owned(), value));
        }
    }
    params
}

/// The content of a quoted string whose opening quote is already consumed,
/// and what follows its closing quote. An unterminated string runs to the
/// end, as browsers read it.
fn parse_quoted(input: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => return (out, ""),
            },
            '"' => {
                let rest = &input[i + 1..];
                // Skip anything up to the next `;` (junk after the quote).
                let next = rest.find(';').unwrap_or(rest.len());
                return (out, &rest[next..]);
            }
            c => out.push(c),
        }
    }
    (out, "")
}

/// Decodes an RFC 8187 `ext-value`: `charset'language'percent-encoded`.
fn decode_ext_value(value: &str) -> Option<String> {
    let (charset, rest) = value.split_once('\'')?;
    let (_language, encoded) = rest.split_once('\'')?;
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    match charset.trim().to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => String::from_utf8(bytes).ok(),
        "iso-8859-1" | "latin1" | "iso_8859-1" => {
            Some(bytes.iter().map(|&b| char::from(b)).collect())
        }
        _ => None,
    }
}

/// Whether two URLs share scheme, host and port: credentials given for one
/// may be sent to the other.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme().eq_ignore_ascii_case(b.scheme())
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cd(v: &str) -> Option<String> {
        content_disposition_filename(v)
    }

    #[test]
    fn content_disposition_plain_forms() {
        assert_eq!(cd("attachment; filename=a.txt").as_deref(), Some("a.txt"));
        assert_eq!(
            cd("attachment; filename=\"a b.txt\"").as_deref(),
            Some("a b.txt")
        );
        assert_eq!(cd("inline;filename=\"x.bin\"  ").as_deref(), Some("x.bin"));
        assert_eq!(cd("attachment; FILENAME=Up.TXT").as_deref(), Some("Up.TXT"));
        assert_eq!(cd("filename=notype.txt").as_deref(), Some("notype.txt"));
        assert_eq!(cd("attachment").as_deref(), None);
        assert_eq!(cd("").as_deref(), None);
    }

    #[test]
    fn content_disposition_prefers_ext_value() {
        assert_eq!(
            cd("attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt")
                .as_deref(),
            Some("€ rates.txt")
        );
        // Order does not matter.
        assert_eq!(
            cd("attachment; filename*=utf-8'en'na%C3%AFve.txt; filename=naive.txt").as_deref(),
            Some("naïve.txt")
        );
        assert_eq!(
            cd("attachment; filename*=ISO-8859-1''caf%E9.txt").as_deref(),
            Some("café.txt")
        );
        // A quoted ext-value is wrong but seen in the wild.
        assert_eq!(
            cd("attachment; filename*=\"UTF-8''q.txt\"").as_deref(),
            Some("q.txt")
        );
        // Unknown charset or invalid UTF-8: fall back to filename=.
        assert_eq!(
            cd("attachment; filename*=KOI8-R''%C1; filename=k.txt").as_deref(),
            Some("k.txt")
        );
        assert_eq!(
            cd("attachment; filename*=UTF-8''%FF; filename=u.txt").as_deref(),
            Some("u.txt")
        );
        assert_eq!(
            cd("attachment; filename*=garbage; filename=g.txt").as_deref(),
            Some("g.txt")
        );
    }

    #[test]
    fn content_disposition_hostile_inputs() {
        // Raw names come back raw: the engine sanitises them.
        assert_eq!(
            cd("attachment; filename=\"../../x\"").as_deref(),
            Some("../../x")
        );
        assert_eq!(
            cd("attachment; filename=/etc/passwd").as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            cd("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd").as_deref(),
            Some("../../etc/passwd")
        );
        // Quotes and semicolons inside a quoted string.
        assert_eq!(
            cd(r#"attachment; filename="a\"b.txt""#).as_deref(),
            Some("a\"b.txt")
        );
        assert_eq!(
            cd(r#"attachment; filename="a;b.txt"; size=3"#).as_deref(),
            Some("a;b.txt")
        );
        assert_eq!(
            cd(r#"attachment; filename="a\\b""#).as_deref(),
            Some("a\\b")
        );
        // Unterminated quote: taken to the end.
        assert_eq!(
            cd("attachment; filename=\"open.txt").as_deref(),
            Some("open.txt")
        );
        assert_eq!(
            cd("attachment; filename=\"trail\\").as_deref(),
            Some("trail")
        );
        // Missing values.
        assert_eq!(cd("attachment; filename=").as_deref(), None);
        assert_eq!(cd("attachment; filename").as_deref(), None);
        assert_eq!(cd("attachment; filename=\"\"").as_deref(), None);
        assert_eq!(cd("attachment; filename*=UTF-8''").as_deref(), None);
        assert_eq!(cd("attachment; filename*=; filename=").as_deref(), None);
        assert_eq!(cd(";;;=;=x; =").as_deref(), None);
        // The first of duplicated parameters wins.
        assert_eq!(
            cd("attachment; filename=a; filename=b").as_deref(),
            Some("a")
        );
        // A parameter whose name merely ends in "filename".
        assert_eq!(
            cd("attachment; xfilename=evil; filename=good").as_deref(),
            Some("good")
        );
        // Junk after a quoted string.
        assert_eq!(
            cd("attachment; filename=\"a.txt\"junk; x=1").as_deref(),
            Some("a.txt")
        );
    }

    #[test]
    fn content_range() {
        use ContentRange::*;
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some(Bytes {
                first: 0,
                last: 99,
                complete: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("Bytes  5-5/*"),
            Some(Bytes {
                first: 5,
                last: 5,
                complete: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */0"),
            Some(Unsatisfied { complete: 0 })
        );
        assert_eq!(
            parse_content_range("bytes */1234"),
            Some(Unsatisfied { complete: 1234 })
        );
        assert_eq!(parse_content_range("bytes */*"), None);
        assert_eq!(parse_content_range("bytes 10-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes 0-+5/100"), None);
        assert_eq!(parse_content_range("items 0-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-5"), None);
        assert_eq!(parse_content_range("bytes=0-5/10"), None);
        assert_eq!(parse_content_range(""), None);
        assert_eq!(
            parse_content_range("bytes 0-99999999999999999999999/1"),
            None
        );
    }

    #[test]
    fn validators_and_if_range() {
        let mut h = HeaderMap::new();
        h.insert(ETAG, "\"abc\"".parse().unwrap());
        h.insert(
            LAST_MODIFIED,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        let v = validator(&h);
        assert_eq!(v.etag.as_deref(), Some("\"abc\""));
        assert_eq!(if_range_value(&v), Some("\"abc\""));
        let weak = Validator {
            etag: Some("W/\"abc\"".into()),
            modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
        };
        assert_eq!(if_range_value(&weak), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        let weak_only = Validator {
            etag: Some("W/\"abc\"".into()),
            modified: None,
        };
        assert_eq!(if_range_value(&weak_only), None);
        assert_eq!(if_range_value(&Validator::default()), None);
    }

    #[test]
    fn accept_ranges() {
        let mut h = HeaderMap::new();
        assert!(!accepts_byte_ranges(&h));
        h.insert(ACCEPT_RANGES, "none".parse().unwrap());
        assert!(!accepts_byte_ranges(&h));
        h.insert(ACCEPT_RANGES, "Bytes".parse().unwrap());
        assert!(accepts_byte_ranges(&h));
    }

    #[test]
    fn credentials_stay_on_their_origin() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(
            &u("http://a.example/x"),
            &u("http://A.example:80/y")
        ));
        assert!(same_origin(
            &u("https://a.example/x"),
            &u("https://a.example:443/")
        ));
        assert!(!same_origin(
            &u("http://a.example/x"),
            &u("http://a.example:8080/x")
        ));
        assert!(!same_origin(
            &u("https://a.example/x"),
            &u("http://a.example/x")
        ));
        assert!(!same_origin(
            &u("http://a.example/x"),
            &u("http://b.example/x")
        ));
        assert!(!same_origin(
            &u("http://127.0.0.1:1/"),
            &u("http://127.0.0.1:2/")
        ));
    }
}

/// Property tests: whatever a server sends in these headers, the parsers
/// neither panic nor return something inconsistent, and what a careful
/// server writes reads back as written.
#[cfg(test)]
mod proptests {
    use http::HeaderValue;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;

    use super::*;

    /// Text shaped like a `Content-Range`, so that most cases get past
    /// the unit.
    fn content_range_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,40}",
            "(bytes|BYTES|items)[ \t]{0,2}[0-9*]{0,21}-?[0-9]{0,21}/?[0-9*]{0,21}[ ]{0,2}",
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(a, b, c)| format!("bytes {a}-{b}/{c}")),
        ]
    }

    proptest! {
        /// A parsed range is consistent: first <= last < complete.
        #[test]
        fn content_range_is_consistent_or_refused(text in content_range_like()) {
            match parse_content_range(&text) {
                Some(ContentRange::Bytes { first, last, complete }) => {
                    prop_assert!(first <= last);
                    prop_assert!(complete.is_none_or(|c| last < c));
                }
                Some(ContentRange::Unsatisfied { .. }) | None => {}
            }
        }

        #[test]
        fn content_range_round_trips(
            first in any::<u64>(),
            len in 0u64..1 << 40,
            extra in 1u64..1 << 40,
            star in any::<bool>(),
        ) {
            let last = first.saturating_add(len);
            let complete = last.checked_add(extra);
            let written = match complete {
                Some(c) if !star => format!("bytes {first}-{last}/{c}"),
                _ => format!("bytes {first}-{last}/*"),
            };
            let expected = ContentRange::Bytes {
                first,
                last,
                complete: if star { None } else { complete },
            };
            prop_assert_eq!(parse_content_range(&written), Some(expected));
            prop_assert_eq!(
                parse_content_range(&format!("bytes */{extra}")),
                Some(ContentRange::Unsatisfied { complete: extra })
            );
        }

        /// Any header value: no panic, and a name, when there is one, is
        /// not empty.
        #[test]
        fn content_disposition_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_DISPOSITION, value);
                if let Some(name) = filename(&headers) {
                    prop_assert!(!name.is_empty());
                }
            }
            let text = String::from_utf8_lossy(&raw);
            if let Some(name) = content_disposition_filename(&text) {
                prop_assert!(!name.is_empty());
            }
        }

        /// A name written as a quoted `filename` or as `filename*` reads
        /// back as written, `filename*` first, whatever parameters surround
        /// it.
        #[test]
        fn content_disposition_round_trips(
            name in "[^\\x00-\\x1f\\x7f]{1,30}",
            fallback in "[a-zA-Z0-9 ;=._-]{1,20}",
            before in "(; [a-z]{1,8}=[a-z0-9]{0,8})?",
            after in "(; [a-z]{1,8}=\"[^\"\\\\]{0,8}\")?",
        ) {
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            let plain = format!("attachment{before}; filename=\"{quoted}\"{after}");
            prop_assert_eq!(content_disposition_filename(&plain), Some(name.clone()));
            let encoded = utf8_percent_encode(&name, NON_ALPHANUMERIC).to_string();
            let fb = fallback.replace('"', "");
            let ext = format!("attachment{before}; filename=\"{fb}\"; filename*=UTF-8''{encoded}{after}");
            prop_assert_eq!(content_disposition_filename(&ext), Some(name));
        }
    }
}
