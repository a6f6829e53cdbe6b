//! Directory listings for recursive downloads: `MLSD` (RFC 3659: exact
//! sizes and times, link targets on some servers), and where the server
//! does not know it (vsftpd), `LIST` read with suppaftp's parser of Unix
//! and DOS lines. A `LIST` time is at best to the minute, so it is not
//! passed on: the engine asks `MDTM` when it needs a time.

use std::time::SystemTime;

use pymatris_core::{DirEntry, EntryKind};
use suppaftp::list::ListParser;

/// The entries of `MLSD` lines; the directory itself (`cdir`), its parent
/// (`pdir`) and unreadable lines are left out.
pub(crate) fn from_mlsd(lines: &[String]) -> Vec<DirEntry> {
    lines.iter().filter_map(|l| mlsd_line(l)).collect()
}

/// `type=file;size=12;modify=20261126073800; name`: facts end at the first
/// `; `, the name is the rest (it may hold `;` and spaces).
fn mlsd_line(line: &str) -> Option<DirEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (facts, name) = match line.strip_prefix(' ') {
        Some(name) => ("", name),
        None => {
            let end = line.find("; ")?;
            (&line[..end], &line[end + 2..])
        }
    };
    let mut entry = DirEntry {
        name: name.as_bytes().to_vec(),
        kind: EntryKind::Other,
        size: None,
        modified: None,
        link_target: None,
    };
    for fact in facts.split(';') {
        let Some((key, value)) = fact.split_once('=') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => match value.to_ascii_lowercase().as_str() {
                "file" => entry.kind = EntryKind::File,
                "dir" => entry.kind = EntryKind::Dir,
                "cdir" | "pdir" => return None,
                // `OS.unix=slink:TARGET` (pure-ftpd, proftpd), `OS.unix=
                // symlink` (without a target: not followed).
                v if v.starts_with("os.unix=slink:") => {
                    let target = &value["OS.unix=slink:".len()..];
                    entry.link_target = Some(target.as_bytes().to_vec());
                }
                _ => {}
            },
            "size" => entry.size = value.parse().ok(),
            "modify" => entry.modified = mlsd_time(value),
            _ => {}
        }
    }
    Some(entry)
}

/// `YYYYMMDDHHMMSS[.sss]` (UTC) as a time, to the second.
fn mlsd_time(value: &str) -> Option<SystemTime> {
    let whole = value.split('.').next()?;
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let line = format!("type=file;modify={whole}; x");
    ListParser::parse_mlsd(&line).ok().map(|f| f.modified())
}

/// The entries of `LIST` lines, Unix or DOS style; `.`, `..`, totals and
/// unreadable lines are left out.
pub(crate) fn from_list(lines: &[String]) -> Vec<DirEntry> {
    lines
        .iter()
        .filter_map(|line| {
            let line = line.trim_end_matches(['\r', '\n']);
            let file = ListParser::parse_posix(line)
                .or_else(|_| ListParser::parse_dos(line))
                .ok()?;
            if file.name() == "." || file.name() == ".." {
                return None;
            }
            let (kind, link_target) = if let Some(target) = file.symlink() {
                let target = target.to_string_lossy().as_bytes().to_vec();
                (EntryKind::Other, Some(target))
            } else if file.is_directory() {
                (EntryKind::Dir, None)
            } else {
                (EntryKind::File, None)
            };
            Some(DirEntry {
                name: file.name().as_bytes().to_vec(),
                kind,
                size: (kind == EntryKind::File).then_some(file.size() as u64),
                modified: None,
                link_target,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn mlsd_lines() {
        let got = from_mlsd(&lines(
            "type=cdir;modify=20261126073800; .\n\
             type=pdir; ..\n\
             type=file;size=12;modify=20261126073800.5; a b;c.txt\n\
             type=dir;modify=20261126073800; sub\n\
             type=OS.unix=slink:../x;size=4; ln\n\
             garbage",
        ));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_678_680);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].name, b"a b;c.txt");
        assert_eq!(
            (got[0].kind, got[0].size, got[0].modified),
            (EntryKind::File, Some(12), Some(at))
        );
        assert_eq!(got[1].kind, EntryKind::Dir);
        assert_eq!(got[2].link_target.as_deref(), Some(&b"../x"[..]));
    }

    #[test]
    fn list_lines() {
        let got = from_list(&lines(
            "total 12\n\
             drwxr-xr-x    2 0        0            4096 Dec 01 21:06 .\n\
             -rw-r--r--    1 0        0            1234 Dec 01 21:06 a file.txt\n\
             drwxr-xr-x    2 0        0            4096 Jan 01  2020 sub\n\
             lrwxrwxrwx    1 0        0               7 Dec 01 21:06 ln -> ../../x\n\
             10-19-20  03:19PM       <DIR>          dosdir\n",
        ));
        let names: Vec<_> = got
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name))
            .collect();
        assert_eq!(names, ["a file.txt", "sub", "ln", "dosdir"]);
        assert_eq!(
            (got[0].kind, got[0].size, got[0].modified),
            (EntryKind::File, Some(1234), None)
        );
        assert_eq!(got[1].kind, EntryKind::Dir);
        assert_eq!(got[2].link_target.as_deref(), Some(&b"../../x"[..]));
        assert_eq!(got[3].kind, EntryKind::Dir);
    }
}
