//! The command line: flags as clap parses them ([`Args`]), then checked and
//! turned into the engine's settings and requests in one place
//! ([`Args::into_plan`]).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use pymatris_core::camino::Utf8PathBuf;
use pymatris_core::{Config, Request};

/// pymatris: parallel downloads over HTTP(S), FTP and SFTP.
///
/// Several files at once, large files in parts, broken transfers resumed,
/// never a half-written file under its final name. Exit status: 0 when every
/// URL succeeded, 1 when any failed, 2 for a usage error, 130 on Ctrl-C,
/// 143 on SIGTERM, 129 on SIGHUP.
#[derive(Debug, Parser)]
#[command(name = "pymatris", version, max_term_width = 100)]
pub(crate) struct Args {
    /// URLs of the files to download.
    #[arg(value_name = "URLS")]
    pub(crate) urls: Vec<String>,

    /// Read URLs from FILE, one a line (`-` for standard input). Blank lines
    /// and lines starting with `#` are skipped; a second column
    /// `sha256=HEX` (or a bare 64-digit hex) gives the file's checksum.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub(crate) input_file: Option<String>,

    /// Files downloaded at once.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) max_parallel: u32,

    /// Parts of one file fetched at once (when the server supports ranges).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) max_splits: u32,

    /// Attempts in a row without progress, per part of a URL (1: no retry).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) max_tries: u32,

    /// An attempt fails when no byte arrives for SECS seconds; also bounds
    /// connecting and handshakes.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub(crate) timeouts: f64,

    /// Directory to save files in (created if missing).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub(crate) dir: Utf8PathBuf,

    /// Replace existing files (only once the new file is complete).
    #[arg(long)]
    pub(crate) overwrite: bool,

    /// Resume partial downloads left by an earlier run (kept with a
    /// `.pymatris-part.state` file), and skip files already complete.
    #[arg(short = 'c', long = "continue")]
    pub(crate) resume: bool,

    /// No progress bars.
    #[arg(long)]
    pub(crate) quiet: bool,

    /// Print each failure's whole error chain.
    #[arg(long)]
    pub(crate) show_errors: bool,

    /// Debug logging to standard error (passwords redacted).
    #[arg(long)]
    pub(crate) verbose: bool,

    /// Never cut a file into parts smaller than SIZE (e.g. 512K, 4M, 1G).
    #[arg(long, default_value = "1M", value_name = "SIZE", value_parser = parse_size)]
    pub(crate) min_split_size: u64,

    /// Verify the downloaded file: `sha256=HEX` (one URL only; use a column
    /// of the input file for several).
    #[arg(long, value_name = "sha256=HEX")]
    pub(crate) checksum: Option<String>,

    /// Extra HTTP header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'K: V'")]
    pub(crate) headers: Vec<String>,

    /// The HTTP User-Agent.
    #[arg(long, value_name = "UA")]
    pub(crate) user_agent: Option<String>,

    /// Trust the CA certificates of this PEM file too (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Vec<PathBuf>,

    /// Do not verify TLS certificates.
    #[arg(long)]
    pub(crate) insecure: bool,

    /// Print the results as JSON on standard output.
    #[arg(long)]
    pub(crate) json: bool,

    /// Overall bandwidth cap, bytes per second (e.g. 500K, 50M).
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    pub(crate) max_speed: Option<u64>,

    /// Connections to one host at once, all files together.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) max_per_host: Option<u32>,

    /// HTTP(S) proxy URL (`http://[user:pass@]host:port`). Without it,
    /// HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY are honoured.
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<String>,

    /// Take credentials for URLs without any from ~/.netrc.
    #[arg(long)]
    pub(crate) netrc: bool,

    /// Take credentials from this netrc file (implies --netrc).
    #[arg(long, value_name = "FILE")]
    pub(crate) netrc_file: Option<PathBuf>,

    /// Require TLS (AUTH TLS) on ftp:// URLs; ftps:// is always implicit TLS.
    #[arg(long)]
    pub(crate) ftp_tls: bool,

    /// SSH private key for SFTP (ssh-agent and ~/.ssh/id_ed25519, id_ecdsa,
    /// id_rsa are tried too).
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: Option<PathBuf>,

    /// The known_hosts file to check SFTP host keys against (default
    /// ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub(crate) known_hosts: Option<PathBuf>,

    /// Add the keys of unknown SFTP hosts to known_hosts (a changed key is
    /// still refused).
    #[arg(long)]
    pub(crate) accept_new_host_keys: bool,
}

/// What to do, checked.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) config: Config,
    pub(crate) requests: Vec<Request>,
    pub(crate) quiet: bool,
    pub(crate) verbose: bool,
    pub(crate) show_errors: bool,
    pub(crate) json: bool,
}

impl Args {
    /// Checks the flags and builds the settings and the requests.
    pub(crate) fn into_plan(self, stdin: impl Read) -> anyhow::Result<Plan> {
        if !(self.timeouts.is_finite() && self.timeouts > 0.0) {
            bail!("--timeouts must be a positive number of seconds");
        }
        let mut lines: Vec<(String, Option<String>)> =
            self.urls.iter().map(|u| (u.clone(), None)).collect();
        if let Some(input) = &self.input_file {
            let reader: Box<dyn BufRead> = if input == "-" {
                Box::new(BufReader::new(stdin))
            } else {
                let file = std::fs::File::open(input)
                    .with_context(|| format!("cannot open the input file {input}"))?;
                Box::new(BufReader::new(file))
            };
            lines.extend(parse_input(reader).with_context(|| format!("cannot read {input}"))?);
        }
        if lines.is_empty() {
            bail!("no URLs given (pass URLs as arguments or with --input-file)");
        }
        if let Some(checksum) = &self.checksum {
            if lines.len() != 1 {
                bail!(
                    "--checksum applies to one URL; for several, give a sha256 column in --input-file"
                );
            }
            lines[0].1 = Some(parse_checksum(checksum)?);
        }
        let mut headers = Vec::new();
        for h in &self.headers {
            let Some((k, v)) = h.split_once(':') else {
                bail!("--header {h:?} is not of the form 'Name: value'");
            };
            let k = k.trim();
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("--header {h:?} has no valid header name");
            }
            headers.push((k.to_owned(), v.trim().to_owned()));
        }
        let mut config = Config::default()
            .max_parallel(self.max_parallel as usize)
            .max_splits(self.max_splits as usize)
            .max_tries(self.max_tries)
            .timeout(Duration::from_secs_f64(self.timeouts))
            .min_split_size(self.min_split_size.max(1))
            .overwrite(self.overwrite)
            .resume(self.resume)
            .max_speed(self.max_speed.filter(|&r| r > 0))
            .headers(headers)
            .ca_certs(self.ca_cert.clone())
            .insecure(self.insecure);
        if let Some(ua) = self.user_agent {
            config = config.user_agent(ua);
        }
        let netrc = match (self.netrc_file, self.netrc) {
            (Some(file), _) => Some(file),
            (None, true) => {
                Some(home_file(".netrc").context("--netrc: cannot find the home directory")?)
            }
            (None, false) => None,
        };
        config = config
            .max_per_host(self.max_per_host.map(|n| n as usize))
            .proxy(self.proxy)
            .netrc(netrc)
            .ftp_tls(self.ftp_tls)
            .identity(self.identity)
            .known_hosts(self.known_hosts)
            .accept_new_host_keys(self.accept_new_host_keys);
        let requests = lines
            .into_iter()
            .map(|(url, sha)| {
                let req = Request::new(url).dir(self.dir.clone());
                match sha {
                    Some(sha) => req.sha256(sha),
                    None => req,
                }
            })
            .collect();
        Ok(Plan {
            config,
            requests,
            quiet: self.quiet,
            verbose: self.verbose,
            show_errors: self.show_errors,
            json: self.json,
        })
    }
}

/// `~/name`.
fn home_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(|home| PathBuf::from(home).join(name))
}

/// `URL [sha256=HEX]` lines; blank lines and `#` comments skipped.
fn parse_input(reader: impl BufRead) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split_whitespace();
        let url = cols.next().unwrap_or_default().to_owned();
        let sha = match cols.next() {
            None => None,
            Some(col) => {
                Some(parse_checksum(col).with_context(|| format!("line {}: {line:?}", n + 1))?)
            }
        };
        if let Some(extra) = cols.next() {
            bail!(
                "line {}: unexpected {extra:?} after the URL and checksum",
                n + 1
            );
        }
        out.push((url, sha));
    }
    Ok(out)
}

/// `sha256=HEX` or a bare 64-digit hex string.
fn parse_checksum(text: &str) -> anyhow::Result<String> {
    let hex = match text.split_once('=') {
        Some((algo, hex)) if algo.eq_ignore_ascii_case("sha256") => hex,
        Some((algo, _)) => bail!("unsupported checksum algorithm {algo:?} (only sha256)"),
        None => text,
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{text:?} is not a sha256 checksum (64 hex digits)");
    }
    Ok(hex.to_ascii_lowercase())
}

/// `123`, `512K`, `4M`, `1G` (binary units, as aria2 and curl read them).
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
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 1048576, 512K, 4M, 1G)"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a size"));
    }
    Ok((value * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
    }

    #[test]
    fn input_files_skip_comments_and_read_checksums() {
        let hex = "ab".repeat(32);
        let text = format!(
            "# list\n\nhttp://a/x\n  http://a/y sha256={hex}\nhttp://a/z {}\n",
            hex.to_uppercase()
        );
        let got = parse_input(text.as_bytes()).unwrap();
        assert_eq!(
            got,
            vec![
                ("http://a/x".to_owned(), None),
                ("http://a/y".to_owned(), Some(hex.clone())),
                ("http://a/z".to_owned(), Some(hex)),
            ]
        );
        assert!(parse_input("http://a/x md5=00".as_bytes()).is_err());
        assert!(parse_input("http://a/x 1234".as_bytes()).is_err());
    }

    #[test]
    fn flags_become_a_plan() {
        let args = Args::try_parse_from(["pymatris", "--dir", "out", "-H", "X-A: 1", "http://h/a"])
            .unwrap();
        let plan = args.into_plan(&b""[..]).unwrap();
        assert_eq!(plan.requests.len(), 1);
        assert_eq!(
            plan.config.protocol.headers,
            vec![("X-A".to_owned(), "1".to_owned())]
        );
        let args = Args::try_parse_from(["pymatris", "-i", "-"]).unwrap();
        let plan = args.into_plan(&b"http://h/a\nhttp://h/b\n"[..]).unwrap();
        assert_eq!(plan.requests.len(), 2);
        let args = Args::try_parse_from(["pymatris"]).unwrap();
        assert!(args.into_plan(&b""[..]).is_err());
        let args = Args::try_parse_from(["pymatris", "-H", "nocolon", "http://h/a"]).unwrap();
        assert!(args.into_plan(&b""[..]).is_err());
        assert!(Args::try_parse_from(["pymatris", "--max-tries", "0", "http://h/a"]).is_err());
    }
}
