//! The command line: flags as clap parses them ([`Args`]), then checked and
//! turned into the engine's settings and requests in one place
//! ([`Args::into_plan`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use pymatris_core::camino::Utf8PathBuf;
use pymatris_core::socks::SocksProxy;
use pymatris_core::{Config, Url, redact_url_str};

use crate::feed::Source;
use crate::input::{Entry, Item, Lines};
use crate::values::{parse_rate, parse_split_size, parse_timeout};

/// pymatris: parallel downloads over HTTP(S), FTP and SFTP.
///
/// Several files at once, large files in parts, broken transfers resumed,
/// never a half-written file under its final name. Exit status: 0 when every
/// URL succeeded, 1 when any failed, 2 for a usage error, 130 on Ctrl-C,
/// 143 on SIGTERM, 129 on SIGHUP.
///
/// Each flag also comes from the environment variable shown with it, then
/// from the config file ($XDG_CONFIG_HOME/pymatris/config.toml, or
/// ~/.config/pymatris/config.toml; keys are the flags' long names, as in
/// `max-parallel = 8`), then the default: a flag wins over its variable, a
/// variable over the file.
#[derive(Debug, Parser)]
#[command(
    name = "pymatris",
    version,
    max_term_width = 100,
    // `pymatris completions bash` is the subcommand; anything else is URLs.
    args_conflicts_with_subcommands = true,
    // `--timeouts -1` is then a bad value of --timeouts, named as such,
    // rather than an unknown flag `-1`.
    allow_negative_numbers = true
)]
pub(crate) struct Args {
    /// URLs of the files to download.
    #[arg(value_name = "URLS")]
    pub(crate) urls: Vec<String>,

    /// Read URLs from FILE, one a line (`-` for standard input), as the
    /// downloads go: a list of any length. Blank lines and lines starting
    /// with `#` are skipped; a second column `sha256=HEX` (or a bare
    /// 64-digit hex) gives the file's checksum. Several TAB-separated URLs
    /// on a line are mirrors of one file (see --mirror). Indented lines under a URL
    /// set its options, as in aria2: `out=NAME`, `dir=DIR` (both relative,
    /// inside --dir), `checksum=sha-256=HEX`. A malformed line fails alone
    /// (reported with its line number); a list with no URL is nothing to
    /// do.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub(crate) input_file: Option<String>,

    /// Save the file as NAME, a relative path inside --dir (one URL only;
    /// use `out=` lines of --input-file for several).
    #[arg(short = 'o', long = "output", value_name = "NAME")]
    pub(crate) output: Option<String>,

    /// Another URL of the same file, of any protocol (repeatable; one URL
    /// only: for several files, put a file's URLs on one line of
    /// --input-file, TAB-separated). Parts are spread over the URLs that
    /// serve the same size and modification time; one that fails is
    /// dropped, with a warning, while the others finish the file (--json
    /// lists the URLs used).
    #[arg(long = "mirror", value_name = "URL")]
    pub(crate) mirror: Vec<String>,

    /// Write one JSON object per URL to FILE (`-`: standard output) as
    /// each one finishes, success or failure, flushed at once: a run
    /// stopped at any point leaves a log valid to its last line.
    #[arg(long, value_name = "FILE")]
    pub(crate) jsonl: Option<String>,

    /// Files downloaded at once (1 to 1024). Unless given, more while each
    /// step up pays (up to --max-per-host, or 16).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) max_parallel: u32,

    /// Parts of one file fetched at once (when the server supports ranges;
    /// 1 to 64). Unless given, more while each step up pays (up to
    /// --max-per-host, or 16).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) max_splits: u32,

    /// Attempts in a row without progress, per part of a URL (1: no retry;
    /// up to 100).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) max_tries: u32,

    /// An attempt fails when no byte arrives for SECS seconds; also bounds
    /// connecting and handshakes (0.001 to 604800).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub(crate) timeouts: Duration,

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

    /// No progress bars, no summary (failures are still listed).
    #[arg(long)]
    pub(crate) quiet: bool,

    /// How progress shows on standard error: `bars` (on a terminal, unless
    /// --quiet or --verbose), `json` (one JSON event a line, for programs:
    /// batch and file start, progress at most every 500 ms per file, file
    /// done or failed; it replaces the summary and the list of failures),
    /// or `none`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Bars, value_name = "MODE")]
    pub(crate) progress: ProgressMode,

    /// Print each failure's whole error chain.
    #[arg(long)]
    pub(crate) show_errors: bool,

    /// Debug logging to standard error (RUST_LOG widens it). Passwords,
    /// tokens and cookies are hidden from every line, whatever logged it.
    #[arg(long)]
    pub(crate) verbose: bool,

    /// Never cut a file into parts smaller than SIZE (e.g. 512K, 4M, 1G;
    /// at least 1 byte).
    #[arg(long, default_value = "1M", value_name = "SIZE", value_parser = parse_split_size, allow_hyphen_values = true)]
    pub(crate) min_split_size: u64,

    /// Verify the downloaded file: ALGO is md5, sha1, sha256 or sha512
    /// (one URL only; use a column of the input file or --checksum-file
    /// for several). A mismatch fails the download; the file is not kept.
    #[arg(long, value_name = "ALGO=HEX")]
    pub(crate) checksum: Option<String>,

    /// Verify downloads against a checksum file (SHA256SUMS, MD5SUMS…: GNU
    /// `HEX  NAME` or BSD `SHA256 (NAME) = HEX` lines), by the file name
    /// each URL gives; a URL is fetched first. URLs it does not name are
    /// downloaded unverified, with a warning.
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) checksum_file: Option<String>,

    /// Do not verify the digests servers send of whole files (HTTP
    /// Repr-Digest, Digest, x-amz-checksum-sha256), as is done by default.
    #[arg(long)]
    pub(crate) no_server_digests: bool,

    /// Leave each file's modification time as the download made it,
    /// rather than the remote file's (HTTP Last-Modified, FTP MDTM, SFTP).
    #[arg(long)]
    pub(crate) no_remote_time: bool,

    /// Skip a file whose local copy has the remote size and is not older
    /// (over HTTP one conditional request: a 304 costs no body); replace
    /// an older one.
    #[arg(short = 'N', long)]
    pub(crate) timestamping: bool,

    /// Extra HTTP header, `Name: value` (repeatable). Not sent after a
    /// redirect to another origin (see --location-trusted).
    #[arg(short = 'H', long = "header", value_name = "'K: V'")]
    pub(crate) headers: Vec<String>,

    /// After a redirect to another origin (scheme, host or port), send the
    /// -H headers and the URL's user and password there too. Without it
    /// they go only to the origin of the URL given.
    #[arg(long)]
    pub(crate) location_trusted: bool,

    /// The HTTP User-Agent.
    #[arg(long, value_name = "UA")]
    pub(crate) user_agent: Option<String>,

    /// Trust the CA certificates of this PEM file too (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Vec<PathBuf>,

    /// Do not verify TLS certificates.
    #[arg(long)]
    pub(crate) insecure: bool,

    /// Print the results as JSON on standard output, once all are done
    /// (one document; for long lists see --jsonl).
    #[arg(long)]
    pub(crate) json: bool,

    /// Say what a run would do and touch no file: each URL's name, size,
    /// and whether it would be downloaded, replaced, resumed or skipped
    /// (the servers are asked for sizes only, no body).
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Overall bandwidth cap, bytes per second (e.g. 500K, 50M; at least 1:
    /// leave the flag out for no cap).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, allow_hyphen_values = true)]
    pub(crate) max_speed: Option<u64>,

    /// Connections to one host at once, all files together (1 to 1024).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) max_per_host: Option<u32>,

    /// Proxy URL: `http://[user:pass@]host:port` for HTTP(S), or
    /// `socks5://` / `socks5h://` (the proxy resolves names) for every
    /// protocol, FTP and SFTP too. Without it, HTTPS_PROXY, HTTP_PROXY,
    /// ALL_PROXY (a SOCKS5 one for FTP and SFTP too) and NO_PROXY are
    /// honoured.
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<String>,

    /// Keep to HTTP/1.1: never offer HTTP/2 to https:// servers (by
    /// default a server that speaks it carries small files and each file's
    /// first request over shared HTTP/2 connections).
    #[arg(long = "http1.1")]
    pub(crate) http1_1: bool,

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

    /// Download only shard I of N (from 0) of the URLs, for job arrays: a
    /// URL's shard depends on the URL alone (not on the list's order or
    /// length). `auto` reads the index and count from a Kubernetes Indexed
    /// Job (JOB_COMPLETION_INDEX, JOB_COMPLETIONS) or a Slurm array
    /// (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "I/N|auto", value_parser = crate::shard::parse_shard)]
    pub(crate) shard: Option<crate::shard::ShardArg>,

    #[command(flatten)]
    pub(crate) tree: crate::tree::TreeArgs,

    /// Read defaults from this TOML file instead of the usual one.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Read no config file.
    #[arg(long)]
    pub(crate) no_config: bool,

    #[command(subcommand)]
    pub(crate) command: Option<Subcommand>,

    /// Whether --max-parallel and --max-splits were set (by a flag, a
    /// variable or the config file; see `config::parse`): what was not,
    /// the batch grows.
    #[arg(skip)]
    pub(crate) given: Given,
}

/// Which of the numbers the batch may grow were set by the user.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Given {
    pub(crate) max_parallel: bool,
    pub(crate) max_splits: bool,
}

/// What `pymatris` does other than downloading.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Subcommand {
    /// Print the completion script of SHELL on standard output (e.g.
    /// `pymatris completions bash > /etc/bash_completion.d/pymatris`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProgressMode {
    Bars,
    Json,
    None,
}

/// What to do, checked.
pub(crate) struct Plan {
    pub(crate) config: Config,
    /// The requests, to be read as the run goes.
    pub(crate) source: Source,
    /// With `--recursive`: the trees to mirror, and where.
    pub(crate) trees: Vec<(String, Utf8PathBuf, pymatris_core::TreeOptions)>,
    /// The input file, when it held no URL and nothing else was given.
    pub(crate) empty_list: Option<String>,
    /// `--checksum-file`, applied to the requests before they start.
    pub(crate) sums: Option<crate::sums::Sums>,
    pub(crate) quiet: bool,
    pub(crate) verbose: bool,
    pub(crate) show_errors: bool,
    pub(crate) json: bool,
    pub(crate) progress: ProgressMode,
    pub(crate) dry_run: bool,
    /// Where `--jsonl` goes, open.
    pub(crate) jsonl: Option<Box<dyn Write + Send>>,
}

impl Args {
    /// Checks the flags and builds the settings and the requests.
    pub(crate) fn into_plan(self, stdin: impl Read + Send + 'static) -> anyhow::Result<Plan> {
        let mut head: Vec<Item> = (self.urls.iter())
            .map(|u| Ok(Entry::new(None, u, None)))
            .collect();
        let mut list = None;
        let mut empty_list = None;
        if let Some(input) = &self.input_file {
            let reader: Box<dyn BufRead + Send> = if input == "-" {
                Box::new(BufReader::new(stdin))
            } else {
                let file = std::fs::File::open(input)
                    .with_context(|| format!("cannot open the input file {input}"))?;
                Box::new(BufReader::new(file))
            };
            let mut lines = Lines::new(reader, pymatris_core::registry::schemes());
            // The first entries are read now: a list that cannot be read
            // at all is a usage error, and --checksum and -o must know
            // whether there is one URL.
            while head.len() < 2 {
                match lines.next() {
                    Some(item) => head
                        .push(item.with_context(|| format!("cannot read the input file {input}"))?),
                    None => break,
                }
            }
            let more = head.len() >= 2;
            if head.is_empty() {
                empty_list = Some(input.clone());
            }
            if more {
                list = Some((input.clone(), lines));
            }
        } else if head.is_empty() {
            bail!("no URLs given (pass URLs as arguments or with --input-file)");
        }
        let sums = (self.checksum_file.as_deref())
            .map(crate::sums::Sums::new)
            .transpose()?;
        self.one_url_flags(&mut head, list.is_some())?;
        if self.dry_run && self.jsonl.is_some() {
            bail!("--dry-run writes no file: use --json, not --jsonl");
        }
        let jsonl: Option<Box<dyn Write + Send>> = match self.jsonl.as_deref() {
            None => None,
            Some("-") if self.json => bail!("--json and --jsonl - both write to standard output"),
            Some("-") => Some(Box::new(std::io::stdout())),
            Some(path) => Some(Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("--jsonl {path}: cannot create it"))?,
            )),
        };
        let shard = match self.shard {
            Some(arg) => Some(crate::shard::resolve(arg, |name| std::env::var(name).ok())?),
            None => None,
        };
        let mut headers = Vec::new();
        for h in &self.headers {
            // Messages show the name only: values are often tokens.
            let Some((k, v)) = h.split_once(':') else {
                bail!("--header: a header is of the form 'Name: value' (got no ':')");
            };
            let k = k.trim();
            if !is_header_name(k) {
                bail!("--header {k:?}: not a valid header name");
            }
            let v = v.trim();
            if !is_header_value(v) {
                bail!("--header {k:?}: the value holds a control character");
            }
            headers.push((k.to_owned(), v.to_owned()));
        }
        if let Some(ua) = &self.user_agent
            && !is_header_value(ua)
        {
            bail!("--user-agent {ua:?} holds a control character");
        }
        let socks = match &self.proxy {
            Some(proxy) if SocksProxy::is_socks(proxy) => {
                Some(SocksProxy::parse(proxy).map_err(|e| anyhow::anyhow!("--proxy: {e}"))?)
            }
            Some(proxy) => {
                check_proxy(proxy)?;
                None
            }
            None => None,
        };
        for file in self
            .ca_cert
            .iter()
            .chain(&self.identity)
            .chain(&self.netrc_file)
        {
            // Read now, so that a mistyped path is a usage error rather
            // than the failure of every URL.
            std::fs::File::open(file).with_context(|| {
                let flag = if self.ca_cert.contains(file) {
                    "--ca-cert"
                } else if self.identity.as_ref() == Some(file) {
                    "--identity"
                } else {
                    "--netrc-file"
                };
                format!("{flag} {}: cannot read it", file.display())
            })?;
        }
        if self.dir.exists() && !self.dir.is_dir() {
            bail!("--dir {}: not a directory", self.dir);
        }
        let mut config = Config::default()
            .max_parallel(self.max_parallel as usize)
            .max_splits(self.max_splits as usize)
            .grow_parallel(!self.given.max_parallel)
            .grow_splits(!self.given.max_splits)
            .max_tries(self.max_tries)
            .timeout(self.timeouts)
            .min_split_size(self.min_split_size)
            .overwrite(self.overwrite)
            .resume(self.resume)
            .remote_time(!self.no_remote_time)
            .timestamping(self.timestamping)
            .verify_server_digests(!self.no_server_digests)
            .max_speed(self.max_speed)
            .ca_certs(self.ca_cert.clone())
            .insecure(self.insecure);
        let netrc = match (self.netrc_file, self.netrc) {
            (Some(file), _) => Some(file),
            (None, true) => {
                Some(home_file(".netrc").context("--netrc: cannot find the home directory")?)
            }
            (None, false) => None,
        };
        config = config
            .max_per_host(self.max_per_host.map(|n| n as usize))
            .netrc(netrc)
            .socks_proxy(socks);
        // The list's URLs are registered as they are read (`feed`).
        crate::logging::register_secrets(
            (head.iter().flatten())
                .flat_map(|e| std::iter::once(&e.url).chain(&e.mirrors))
                .map(String::as_str)
                .chain(self.proxy.as_deref()),
            &headers,
        );
        #[cfg(feature = "http")]
        {
            let mut http = pymatris_proto_http::HttpOptions::default()
                .headers(headers)
                .location_trusted(self.location_trusted)
                .http1_only(self.http1_1)
                // A SOCKS proxy is the config's, for every protocol.
                .proxy(self.proxy.filter(|p| !SocksProxy::is_socks(p)));
            if let Some(ua) = self.user_agent {
                http = http.user_agent(ua);
            }
            config = config.with(http);
        }
        #[cfg(feature = "ftp")]
        {
            config =
                config.with(pymatris_proto_ftp::FtpOptions::default().require_tls(self.ftp_tls));
        }
        #[cfg(feature = "sftp")]
        {
            config = config.with(
                pymatris_proto_sftp::SftpOptions::default()
                    .identity(self.identity)
                    .known_hosts(self.known_hosts)
                    .accept_new_host_keys(self.accept_new_host_keys),
            );
        }
        let mut trees = Vec::new();
        if let Some(options) = self.tree.options()? {
            if list.is_some() {
                bail!("--recursive takes its directories from the command line, not --input-file");
            }
            if self.checksum.is_some() || self.output.is_some() {
                bail!("--checksum and --output apply to a file, not to a --recursive tree");
            }
            head.retain(|item| match item {
                Ok(entry) => {
                    let tree = (entry.url.clone(), self.dir.clone(), options.clone());
                    trees.push(tree);
                    false
                }
                Err(_) => true,
            });
        }
        Ok(Plan {
            config,
            source: Source {
                dir: self.dir.clone(),
                head,
                list,
                shard,
                ready: Default::default(),
            },
            trees,
            empty_list,
            sums,
            quiet: self.quiet,
            verbose: self.verbose,
            show_errors: self.show_errors,
            json: self.json,
            progress: self.progress,
            dry_run: self.dry_run,
            jsonl,
        })
    }
}

/// An HTTP header name: RFC 9110 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP header value: no control character but the tab.
fn is_header_value(value: &str) -> bool {
    !value.chars().any(|c| c.is_control() && c != '\t')
}

/// `--proxy`: an `http://` URL with a host (the scheme may be left out).
fn check_proxy(proxy: &str) -> anyhow::Result<()> {
    let shown = redact_url_str(proxy);
    let full = if proxy.contains("://") {
        proxy.to_owned()
    } else {
        format!("http://{proxy}")
    };
    let url = Url::parse(&full).map_err(|e| anyhow::anyhow!("--proxy {shown}: {e}"))?;
    if url.scheme() != "http" {
        bail!("--proxy {shown}: only http://, socks5:// and socks5h:// proxies are supported");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("--proxy {shown}: no host");
    }
    Ok(())
}

/// `~/name`.
fn home_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(|home| PathBuf::from(home).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_input;
    use crate::values::parse_size;
    use pymatris_core::ErrorKind;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("1e3").is_err());
        assert!(parse_size(".5K").is_err());
        assert!(parse_size("1..5K").is_err());
    }

    const SCHEMES: [&str; 2] = ["http", "https"];

    fn entry(line: usize, url: &str, sha256: Option<&str>) -> Item {
        Ok(Entry::new(Some(line), url, sha256))
    }

    #[test]
    fn input_files_skip_comments_and_read_checksums() {
        let hex = "ab".repeat(32);
        let text = format!(
            "\u{feff}# list\n\nhttp://a/x\r\n  http://a/y sha256={hex}\nhttp://a/z {}",
            hex.to_uppercase()
        );
        let got = parse_input(text.as_bytes(), &SCHEMES).unwrap();
        assert_eq!(
            got,
            vec![
                entry(3, "http://a/x", None),
                entry(4, "http://a/y", Some(&hex)),
                entry(5, "http://a/z", Some(&hex)),
            ]
        );
    }

    /// Each bad line is a failure of its own, with its number; the lines
    /// around it are still read.
    #[test]
    fn bad_lines_fail_alone() {
        let text = b"http://a/x md5=00\nhttp://a/a b.bin\nhttp://a/x 1234\ngopher://a/x\nhttp://[::1/x\nhttp://a/\xff\nhttp://u:pw@a/x y z\nhttp://a/ok\n";
        let got = parse_input(&text[..], &SCHEMES).unwrap();
        assert_eq!(got.len(), 8);
        for (i, line) in got.iter().take(7).enumerate() {
            let bad = line.as_ref().unwrap_err();
            assert_eq!(bad.line, i + 1, "{bad:?}");
            assert!(!bad.shown.contains("pw"), "{bad:?}");
            assert!(!bad.reason.contains("pw"), "{bad:?}");
        }
        assert_eq!(
            got[3].as_ref().unwrap_err().kind,
            ErrorKind::UnsupportedScheme
        );
        assert_eq!(got[7], entry(8, "http://a/ok", None));
        assert!(
            parse_input(&b"# only\n\n  \n"[..], &SCHEMES)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn numeric_flags_are_checked() {
        for bad in ["0", "-1", "nan", "inf", "1e20", "0.0001", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("60"), Ok(Duration::from_secs(60)));
        for bad in ["0", "0.5", "-1", "nan", "inf", "1e30", "99999999T"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
            assert!(parse_split_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("1"), Ok(1));
        assert_eq!(parse_split_size("0.5K"), Ok(512));
        assert!(parse_split_size("1025T").is_err());
        assert_eq!(parse_size("16383P").ok(), None);
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
        assert!(parse_size("16777216T").is_err());
    }

    #[test]
    fn only_numbers_left_unset_grow() {
        let plan = |flags: &[&str]| {
            let argv = ["pymatris", "--no-config"].iter().chain(flags);
            let argv = argv.chain(&["http://h/a"]).map(Into::into).collect();
            let args = crate::config::parse(argv).unwrap();
            args.into_plan(&b""[..]).unwrap().config
        };
        let config = plan(&[]);
        assert!(config.grow_parallel && config.grow_splits);
        assert_eq!((config.max_parallel, config.max_splits), (5, 5));
        let config = plan(&["--max-splits", "5"]);
        assert!(config.grow_parallel && !config.grow_splits);
        let config = plan(&["--max-parallel=3", "--max-splits", "2"]);
        assert!(!config.grow_parallel && !config.grow_splits);
        assert_eq!((config.max_parallel, config.max_splits), (3, 2));
    }

    #[test]
    fn flags_become_a_plan() {
        let read = |args: &[&str], stdin: &'static [u8]| {
            let args = Args::try_parse_from(args).unwrap();
            args.into_plan(stdin)
                .map(|p| (p.empty_list.clone(), p.source.read_all().unwrap()))
        };
        let args = Args::try_parse_from(["pymatris", "--dir", "out", "-H", "X-A: 1", "http://h/a"])
            .unwrap();
        let plan = args.into_plan(&b""[..]).unwrap();
        #[cfg(feature = "http")]
        assert_eq!(
            plan.config
                .options::<pymatris_proto_http::HttpOptions>()
                .map(|o| o.headers.clone()),
            Some(vec![("X-A".to_owned(), "1".to_owned())])
        );
        assert_eq!(plan.source.read_all().unwrap().len(), 1);
        let (_, items) = read(
            &["pymatris", "-i", "-"],
            b"http://h/a\nhttp://h/b\nhttp://h/c\n",
        )
        .unwrap();
        assert_eq!(items.len(), 3);
        assert!(read(&["pymatris"], b"").is_err());
        let (empty, items) = read(&["pymatris", "-i", "-"], b"# nothing\n").unwrap();
        assert!(items.is_empty());
        assert_eq!(empty.as_deref(), Some("-"));
        let (_, items) = read(&["pymatris", "-i", "-"], b"http://h/a\nhttp://h/ b\n").unwrap();
        assert_eq!(items[0], entry(1, "http://h/a", None));
        assert_eq!(items[1].as_ref().unwrap_err().line, 2);
        let args = Args::try_parse_from(["pymatris", "-H", "nocolon", "http://h/a"]).unwrap();
        assert!(args.into_plan(&b""[..]).is_err());
        assert!(Args::try_parse_from(["pymatris", "--max-tries", "0", "http://h/a"]).is_err());
    }

    /// `-o` and `--checksum` name one file: refused with several URLs,
    /// and `-o` stays inside --dir.
    #[test]
    fn output_applies_to_one_url_inside_the_dir() {
        let plan = |args: &[&str], stdin: &'static [u8]| {
            Args::try_parse_from(args).unwrap().into_plan(stdin)
        };
        let ok = plan(
            &["pymatris", "--dir", "d", "-o", "sub/x.bin", "http://h/a"],
            b"",
        )
        .unwrap();
        let source = &ok.source;
        let request = source.request(source.head[0].clone().unwrap());
        let shown = format!("{request:?}");
        assert!(shown.contains(r#"dir: "d/sub""#), "{shown}");
        assert!(shown.contains(r#"filename: Some("x.bin")"#), "{shown}");
        assert!(plan(&["pymatris", "-o", "x", "-i", "-"], b"http://h/a\n").is_ok());
        for args in [
            &["pymatris", "-o", "x", "http://h/a", "http://h/b"][..],
            &["pymatris", "-o", "../x", "http://h/a"],
            &["pymatris", "-o", "/tmp/x", "http://h/a"],
            &["pymatris", "--checksum", &"0".repeat(64), "-i", "-"],
        ] {
            assert!(plan(args, b"http://h/a\nhttp://h/b\n").is_err(), "{args:?}");
        }
        assert!(
            plan(
                &["pymatris", "-o", "x", "-i", "-"],
                b"http://h/a\nhttp://h/b\n"
            )
            .is_err()
        );
    }
}

/// Property tests of the input-list parser: any bytes at all.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::input::parse_input;
    use crate::values::parse_size;

    const SCHEMES: [&str; 3] = ["ftp", "http", "https"];

    proptest! {
        /// No input panics; every line read is an entry or a bad line with
        /// its own number, in order, and no line is reported twice.
        #[test]
        fn any_bytes_parse_without_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let got = parse_input(&raw[..], &SCHEMES).unwrap();
            let numbers: Vec<usize> = got
                .iter()
                .map(|l| match l {
                    Ok(e) => e.line.unwrap(),
                    Err(b) => b.line,
                })
                .collect();
            let lines = raw.split(|&b| b == b'\n').count();
            prop_assert!(numbers.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(numbers.iter().all(|&n| n >= 1 && n <= lines));
            for entry in got.iter().flatten() {
                // What is accepted is a URL of a known scheme, with no space.
                let url = Url::parse(&entry.url).unwrap();
                prop_assert!(SCHEMES.contains(&url.scheme()));
                prop_assert!(!entry.url.contains(char::is_whitespace));
            }
        }

        /// A list written from URLs and checksums reads back as written,
        /// whatever blank lines, comments and spacing surround them.
        #[test]
        fn written_lists_read_back(
            items in proptest::collection::vec(
                ("(http|https|ftp)://[a-z]{1,8}(:[0-9]{1,4})?/[a-zA-Z0-9._%~-]{0,12}", proptest::option::of("[0-9a-f]{64}"), "[ \t]{0,3}", "(#[^\n]*)?"),
                0..8,
            ),
        ) {
            let mut text = String::new();
            let mut expected = Vec::new();
            let mut line = 0;
            for (url, sha, pad, comment) in &items {
                if !comment.is_empty() {
                    text.push_str(comment);
                    text.push('\n');
                    line += 1;
                }
                line += 1;
                match sha {
                    Some(sha) => text.push_str(&format!("{pad}{url}{pad} sha256={sha}{pad}\n")),
                    None => text.push_str(&format!("{pad}{url}\r\n")),
                }
                expected.push(Ok(Entry::new(Some(line), url, sha.as_deref())));
            }
            prop_assert_eq!(parse_input(text.as_bytes(), &SCHEMES).unwrap(), expected);
        }

        /// Sizes never panic and never wrap: a value read is what the text
        /// says, to within the rounding of a float.
        #[test]
        fn sizes_never_wrap(text in "[0-9.]{0,25}[kKmMgGtT]?[iI]?[bB]?") {
            if let Ok(n) = parse_size(&text) {
                let digits: String = text.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                let value: f64 = digits.parse().unwrap();
                prop_assert!(value * 1.1e12 + 1.0 >= n as f64);
            }
        }
    }
}
