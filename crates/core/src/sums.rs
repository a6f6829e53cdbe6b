//! Checksum files as projects publish them beside their downloads
//! (`SHA256SUMS`, `MD5SUMS`, `*.sha512`): GNU coreutils' `HEX  name` and
//! `HEX *name` lines, and BSD's `SHA256 (name) = HEX`, looked up by file
//! name.

use crate::checksum::{Algo, Checksum, ChecksumError};

/// The entries of a checksum file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumList {
    entries: Vec<(String, Checksum)>,
}

impl ChecksumList {
    /// Reads the lines of a checksum file. A GNU line's algorithm is told
    /// by the length of its digest; blank lines, `#` comments and lines of
    /// neither format are skipped (as `sha256sum -c` does), but a file
    /// without a single entry is refused.
    pub fn parse(text: &str) -> Result<ChecksumList, ChecksumError> {
        let entries: Vec<_> = text.lines().filter_map(parse_line).collect();
        if entries.is_empty() {
            return Err(ChecksumError::new(
                "no checksum lines (`HEX  NAME` or `ALGO (NAME) = HEX`) found",
            ));
        }
        Ok(ChecksumList { entries })
    }

    /// The checksum of the file named `name`: an entry of that name, else
    /// one whose path ends in it (`./dir/name`), the strongest algorithm
    /// first when several apply.
    pub fn get(&self, name: &str) -> Option<&Checksum> {
        let last = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
        let exact = self.entries.iter().any(|(n, _)| n == name);
        self.entries
            .iter()
            .filter(|(n, _)| if exact { n == name } else { last(n) == name })
            .map(|(_, sum)| sum)
            .max_by_key(|sum| sum.algo())
    }

    /// How many entries it has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has none (never, for a parsed list).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_line(line: &str) -> Option<(String, Checksum)> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    parse_bsd(line).or_else(|| parse_gnu(line))
}

/// `SHA256 (name) = HEX`.
fn parse_bsd(line: &str) -> Option<(String, Checksum)> {
    let (algo, rest) = line.split_once(" (")?;
    let (name, hex) = rest.rsplit_once(") = ")?;
    let sum = Checksum::new(algo.parse::<Algo>().ok()?, hex).ok()?;
    Some((name.to_owned(), sum))
}

/// `HEX  name` (text mode) or `HEX *name` (binary mode); a line that
/// starts with `\` has `\\` and `\n` escaped in its name.
fn parse_gnu(line: &str) -> Option<(String, Checksum)> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (hex, rest) = line.split_once(' ')?;
    let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
    if name.is_empty() {
        return None;
    }
    let sum = Checksum::new(Algo::of_hex_len(hex.len())?, hex).ok()?;
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_owned()
    };
    Some((name, sum))
}

fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const MD5: &str = "900150983cd24fb0d6963f7d28e17f72";

    #[test]
    fn gnu_and_bsd_lines_are_read() {
        let text = format!(
            "# made by sha256sum\n\
             {SHA}  plain.iso\n\
             {SHA} *binary.iso\n\
             \\{SHA}  back\\\\slash\n\
             SHA256 (bsd name.txt) = {SHA}\n\
             MD5 (old.tar) = {MD5}\r\n\
             \n\
             not a checksum line\n"
        );
        let list = ChecksumList::parse(&text).unwrap();
        assert_eq!(list.len(), 5);
        for name in ["plain.iso", "binary.iso", "back\\slash", "bsd name.txt"] {
            assert_eq!(list.get(name).map(Checksum::hex), Some(SHA), "{name}");
        }
        assert_eq!(list.get("old.tar").unwrap().algo(), Algo::Md5);
        assert_eq!(list.get("missing"), None);
    }

    #[test]
    fn a_name_matches_an_entry_by_its_last_component_and_the_strongest_wins() {
        let text = format!("{MD5}  ./pub/a.bin\n{SHA}  ./pub/a.bin\n{MD5}  a.bin.sig\n");
        let list = ChecksumList::parse(&text).unwrap();
        assert_eq!(list.get("a.bin").map(Checksum::hex), Some(SHA));
        assert_eq!(list.get("a.bin.sig").map(Checksum::hex), Some(MD5));
    }

    #[test]
    fn a_file_without_entries_is_refused() {
        assert!(ChecksumList::parse("<html>Not Found</html>\n").is_err());
        assert!(ChecksumList::parse("").is_err());
    }
}
