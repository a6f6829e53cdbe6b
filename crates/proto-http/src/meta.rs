//! What a response says of the file beyond its bytes: validators, name,
//! modification time (`Last-Modified`), and the digests of the whole file
//! a server may send, which the engine verifies.
//!
//! Which digest covers what (RFC 9530): `Repr-Digest` is of the selected
//! representation, the whole file, whatever part a `206` carries;
//! `Content-Digest` is of the message content, so of the whole file only
//! when the body is the whole file. The older `Digest` (RFC 3230, whose
//! meaning for partial answers servers never agreed on) and S3's
//! `x-amz-checksum-sha256` are taken under the same condition. A composite
//! S3 checksum of a multipart upload (`HASH-N`) is no digest of the bytes
//! and is ignored, as are algorithms other than SHA-256 and SHA-512.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::header::{CONTENT_RANGE, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};
use pymatris_core::{Algo, Checksum, LocalCopy, RemoteMeta, Url};

use crate::headers::{self, ContentRange};

/// Structured fields' byte sequences are standard base64, padding
/// optional to a reader (RFC 8941 §4.2.7).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What any response tells: validators, suggested name, final URL, time
/// and digests.
pub(crate) fn meta_from(
    status: StatusCode,
    headers: &HeaderMap,
    requested: &Url,
    final_url: &Url,
) -> RemoteMeta {
    RemoteMeta {
        size: None,
        ranges: false,
        validator: headers::validator(headers),
        filename: headers::filename(headers),
        final_url: (final_url != requested).then(|| final_url.clone()),
        modified: (headers.get(LAST_MODIFIED))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok()),
        digests: digests(status, headers),
    }
}

/// `If-Modified-Since` the local copy's time, and `If-None-Match` its
/// entity tag when known: an unchanged file is then a `304`, no body.
pub(crate) fn add_conditions(extra: &mut HeaderMap, local: &LocalCopy) {
    let date = httpdate::fmt_http_date(local.modified);
    if let Ok(value) = HeaderValue::from_str(&date) {
        extra.insert(IF_MODIFIED_SINCE, value);
    }
    if let Some(Ok(value)) = local.etag.as_deref().map(HeaderValue::from_str) {
        extra.insert(IF_NONE_MATCH, value);
    }
}

/// The digests of the whole file among the headers of a response of
/// `status` (to a `GET` or a `HEAD`).
pub(crate) fn digests(status: StatusCode, headers: &HeaderMap) -> Vec<Checksum> {
    let whole_body = match status {
        StatusCode::OK => true,
        StatusCode::PARTIAL_CONTENT => {
            let range = (headers.get(CONTENT_RANGE))
                .and_then(|v| v.to_str().ok())
                .and_then(headers::parse_content_range);
            matches!(range, Some(ContentRange::Bytes { first: 0, last, complete: Some(size) }) if last + 1 == size)
        }
        _ => return Vec::new(),
    };
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let mut found: Vec<Checksum> = values("repr-digest")
        .into_iter()
        .flat_map(structured)
        .collect();
    if whole_body {
        found.extend(values("content-digest").into_iter().flat_map(structured));
        found.extend(values("digest").into_iter().flat_map(legacy));
        let composite = values("x-amz-checksum-type")
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case("composite"));
        if !composite {
            found.extend(
                values("x-amz-checksum-sha256")
                    .into_iter()
                    .filter_map(|v| decode(Algo::Sha256, v.trim())),
            );
        }
    }
    found.sort_by(|a, b| (a.algo(), a.hex()).cmp(&(b.algo(), b.hex())));
    found.dedup();
    found
}

/// An RFC 9530 field, a structured dictionary: `sha-256=:BASE64:,
/// sha-512=:BASE64:;param`. Members with other keys or values are
/// skipped; a quoted string of another member may hold commas.
fn structured(value: &str) -> Vec<Checksum> {
    split_members(value)
        .into_iter()
        .filter_map(|member| {
            let (key, value) = member.split_once('=')?;
            let algo = algo_of(key.trim())?;
            let value = value.split(';').next()?.trim();
            let b64 = value.strip_prefix(':')?.strip_suffix(':')?;
            decode(algo, b64)
        })
        .collect()
}

/// RFC 3230's `Digest: SHA-256=BASE64,SHA-512=BASE64` (algorithm names
/// in any case). Some servers send hex instead: taken too, when it is
/// hex of the algorithm's length.
fn legacy(value: &str) -> Vec<Checksum> {
    value
        .split(',')
        .filter_map(|member| {
            let (key, value) = member.split_once('=')?;
            let algo = algo_of(key.trim())?;
            let value = value.trim();
            decode(algo, value).or_else(|| Checksum::new(algo, value).ok())
        })
        .collect()
}

fn algo_of(key: &str) -> Option<Algo> {
    if key.eq_ignore_ascii_case("sha-256") {
        Some(Algo::Sha256)
    } else if key.eq_ignore_ascii_case("sha-512") {
        Some(Algo::Sha512)
    } else {
        None
    }
}

fn decode(algo: Algo, b64: &str) -> Option<Checksum> {
    let bytes = BASE64.decode(b64).ok()?;
    Checksum::from_bytes(algo, &bytes).ok()
}

/// The members of a structured dictionary, split at the commas outside
/// quoted strings.
fn split_members(value: &str) -> Vec<&str> {
    let (mut members, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                members.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(&value[start..]);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    // `printf abc | sha256sum`, and its base64.
    const ABC_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_B64: &str = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn hexes(status: u16, pairs: &[(&str, &str)]) -> Vec<String> {
        let status = StatusCode::from_u16(status).unwrap();
        digests(status, &headers(pairs))
            .iter()
            .map(|c| format!("{}={}", c.algo(), c.hex()))
            .collect()
    }

    #[test]
    fn repr_digest_counts_for_any_part() {
        let repr = format!("unknown=\"a, b\", sha-256=:{ABC_B64}:;p=1, md5=:AAA=:");
        let want = vec![format!("sha256={ABC_HEX}")];
        assert_eq!(hexes(200, &[("repr-digest", &repr)]), want);
        let partial = [
            ("repr-digest", repr.as_str()),
            ("content-range", "bytes 0-9/100"),
        ];
        assert_eq!(hexes(206, &partial), want);
        // Unpadded base64 is read too.
        let unpadded = format!("sha-256=:{}:", ABC_B64.trim_end_matches('='));
        assert_eq!(hexes(200, &[("repr-digest", &unpadded)]), want);
    }

    #[test]
    fn other_digests_count_only_for_the_whole_body() {
        let content = format!("sha-256=:{ABC_B64}:");
        let legacy = format!("SHA-256={ABC_B64}, MD5=kAFQmDzST7DWlj99KOF/cg==");
        let amz = ABC_B64;
        let all = [
            ("content-digest", content.as_str()),
            ("digest", legacy.as_str()),
            ("x-amz-checksum-sha256", amz),
        ];
        let want = vec![format!("sha256={ABC_HEX}")];
        assert_eq!(hexes(200, &all), want);
        let mut whole = all.to_vec();
        whole.push(("content-range", "bytes 0-2/3"));
        assert_eq!(hexes(206, &whole), want);
        let mut part = all.to_vec();
        part.push(("content-range", "bytes 0-1/3"));
        assert!(hexes(206, &part).is_empty());
        assert!(hexes(304, &all).is_empty());
    }

    #[test]
    fn composite_and_malformed_digests_are_ignored() {
        let composite = [
            (
                "x-amz-checksum-sha256",
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=-3",
            ),
            ("x-amz-checksum-type", "COMPOSITE"),
        ];
        assert!(hexes(200, &composite).is_empty());
        for bad in ["sha-256=:bm90IDMyIGJ5dGVz:", "sha-256=abc", "sha-256=:!!:"] {
            assert!(hexes(200, &[("repr-digest", bad)]).is_empty(), "{bad}");
        }
        // Hex in the old header, as some servers send it.
        let hex = format!("sha-256={ABC_HEX}");
        assert_eq!(
            hexes(200, &[("digest", &hex)]),
            vec![format!("sha256={ABC_HEX}")]
        );
    }
}
