//! Checksums a download is verified against: the ones a user gives
//! (`md5`, `sha1`, `sha256`, `sha512`, as published beside files in
//! `MD5SUMS` or `SHA256SUMS`) and the ones a server sends of the whole
//! file. Every algorithm a file is checked against is computed in one pass
//! over the finished file, whatever parts it was fetched in.

use std::fmt;
use std::fs::File;
use std::io;
use std::str::FromStr;

use sha2::Digest as _;

/// A hash algorithm a checksum may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// MD5 (only against corruption: it is broken against forgery).
    Md5,
    /// SHA-1 (only against corruption: it is broken against forgery).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algo {
    /// Every algorithm, strongest last.
    pub const ALL: [Algo; 4] = [Algo::Md5, Algo::Sha1, Algo::Sha256, Algo::Sha512];

    /// Its name as `md5sum`-style tools and this crate write it.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// The length of its digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    /// The algorithm whose hex digests are `hex_len` characters long.
    pub fn of_hex_len(hex_len: usize) -> Option<Algo> {
        Algo::ALL
            .into_iter()
            .find(|a| a.digest_len() * 2 == hex_len)
    }

    fn hasher(self) -> Hasher {
        match self {
            Algo::Md5 => Hasher::Md5(md5::Md5::new()),
            Algo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = ChecksumError;

    /// `md5`, `sha1`, `sha256`, `sha512`, any case, with or without a dash
    /// (`SHA-256`, as HTTP and BSD tools write them).
    fn from_str(s: &str) -> Result<Algo, ChecksumError> {
        let name = s.trim().to_ascii_lowercase().replace('-', "");
        Algo::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                ChecksumError(format!(
                    "unknown checksum algorithm {s:?} (md5, sha1, sha256 or sha512)"
                ))
            })
    }
}

/// Why a checksum was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChecksumError(String);

impl ChecksumError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ChecksumError(message.into())
    }
}

/// An expected digest of a file: an algorithm and the digest in lower-case
/// hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Checksum {
    algo: Algo,
    hex: String,
}

impl Checksum {
    /// A checksum of `algo` given in hex (any case); refused unless it is
    /// hex of the algorithm's length.
    pub fn new(algo: Algo, hex: &str) -> Result<Checksum, ChecksumError> {
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != algo.digest_len() * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChecksumError(format!(
                "a {algo} checksum is {} hex digits, not {hex:?}",
                algo.digest_len() * 2
            )));
        }
        Ok(Checksum { algo, hex })
    }

    /// A checksum of `algo` from the digest's bytes (as HTTP sends them,
    /// in base64); refused unless they are the algorithm's length.
    pub fn from_bytes(algo: Algo, bytes: &[u8]) -> Result<Checksum, ChecksumError> {
        Checksum::new(algo, &hex::encode(bytes))
    }

    /// What [`Request::sha256`](crate::Request::sha256) always accepted:
    /// any text, compared as given (lower case) when the file is done.
    pub(crate) fn sha256_unchecked(hex: &str) -> Checksum {
        Checksum {
            algo: Algo::Sha256,
            hex: hex.trim().to_ascii_lowercase(),
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> Algo {
        self.algo
    }

    /// The digest in lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Checksum {
    type Err = ChecksumError;

    /// `ALGO=HEX`, as in `sha256=9f86d0…` (aria2's `--checksum`).
    fn from_str(s: &str) -> Result<Checksum, ChecksumError> {
        let (algo, hex) = s
            .split_once('=')
            .ok_or_else(|| ChecksumError(format!("expected ALGO=HEX, got {s:?}")))?;
        Checksum::new(algo.parse()?, hex)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.algo, self.hex)
    }
}

/// A running hash of one of the algorithms.
enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// The digests of the whole of `file` in each of `algos` (no algorithm
/// twice), in that order, read once with positional reads.
pub(crate) fn hash_file(file: &File, algos: &[Algo]) -> io::Result<Vec<Checksum>> {
    let mut hashers: Vec<_> = algos.iter().map(|a| (*a, a.hasher())).collect();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    loop {
        let n = crate::writer::read_at(file, &mut buf, offset)?;
        if n == 0 {
            break;
        }
        for (_, hasher) in &mut hashers {
            hasher.update(&buf[..n]);
        }
        offset += n as u64;
    }
    Ok(hashers
        .into_iter()
        .map(|(algo, hasher)| Checksum {
            algo,
            hex: hasher.hex(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_algorithms_hash_as_their_tools_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        let sums = hash_file(&file, &Algo::ALL).unwrap();
        let hex: Vec<&str> = sums.iter().map(Checksum::hex).collect();
        // `printf abc | md5sum` and so on.
        assert_eq!(
            hex,
            [
                "900150983cd24fb0d6963f7d28e17f72",
                "a9993e364706816aba3e25717850c26c9cd0d89d",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ]
        );
    }

    #[test]
    fn checksums_parse_as_algo_equals_hex() {
        let sum: Checksum =
            "SHA-256=BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
                .parse()
                .unwrap();
        assert_eq!(sum.algo(), Algo::Sha256);
        assert_eq!(
            sum.to_string(),
            "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!("md5=abc".parse::<Checksum>().is_err());
        assert!("crc32=00000000".parse::<Checksum>().is_err());
        assert!(
            "900150983cd24fb0d6963f7d28e17f72"
                .parse::<Checksum>()
                .is_err()
        );
        assert!(
            "md5=900150983cd24fb0d6963f7d28e17f7g"
                .parse::<Checksum>()
                .is_err()
        );
        assert_eq!(Algo::of_hex_len(40), Some(Algo::Sha1));
    }
}
