//! `--checksum-file FILE|URL`: a `SHA256SUMS`-style file whose entries
//! verify the downloads they name. A local file is read while the flags
//! are checked (a missing one is a usage error); a URL is downloaded first,
//! by the engine with the run's settings, into a directory of its own.

use anyhow::{Context, bail};
use pymatris_core::camino::Utf8Path;
use pymatris_core::{ChecksumList, Config, Downloader, Request, Url, redact_url_str};

/// The largest checksum file read: a list of a million files is well
/// below it, and a server that sends an ISO instead is not read into
/// memory.
const MAX_SIZE: u64 = 64 << 20;

/// Where the checksums come from.
#[derive(Debug)]
pub(crate) enum Sums {
    /// A local file, already read.
    Read { list: ChecksumList, from: String },
    /// A URL, to fetch before the downloads.
    Fetch(String),
}

impl Sums {
    /// `--checksum-file ARG`: a URL of a scheme this build downloads, else
    /// a local path, read now.
    pub(crate) fn new(arg: &str) -> anyhow::Result<Sums> {
        if let Ok(url) = Url::parse(arg)
            && pymatris_core::registry::schemes().contains(&url.scheme())
        {
            return Ok(Sums::Fetch(arg.to_owned()));
        }
        let list = read(Utf8Path::new(arg)).with_context(|| format!("--checksum-file {arg}"))?;
        Ok(Sums::Read {
            list,
            from: arg.to_owned(),
        })
    }

    /// The list, fetched first when it is a URL.
    pub(crate) async fn load(self, config: &Config) -> anyhow::Result<(ChecksumList, String)> {
        let url = match self {
            Sums::Read { list, from } => return Ok((list, from)),
            Sums::Fetch(url) => url,
        };
        let shown = redact_url_str(&url);
        let dir = tempfile::tempdir().context("cannot make a directory for the checksum file")?;
        let Some(dir_path) = Utf8Path::from_path(dir.path()) else {
            bail!(
                "the temporary directory {} is not UTF-8",
                dir.path().display()
            );
        };
        // Always a fresh copy, whatever the run does with existing files.
        let config = config
            .clone()
            .overwrite(true)
            .resume(false)
            .timestamping(false);
        let mut downloader = Downloader::new(config);
        downloader.enqueue(Request::new(&url).dir(dir_path).filename("checksums"));
        let mut results = downloader.download().await;
        if let Some(failed) = results.errors.pop() {
            let text = crate::words::error_text(&failed.error, false);
            bail!("cannot fetch the checksum file {shown}: {text}");
        }
        let path = results.success.pop().context("no result")?.path;
        let list = read(&path).with_context(|| format!("the checksum file {shown}"))?;
        Ok((list, shown))
    }
}

fn read(path: &Utf8Path) -> anyhow::Result<ChecksumList> {
    let size = std::fs::metadata(path).context("cannot read it")?.len();
    if size > MAX_SIZE {
        bail!("{size} bytes is too large for a checksum file");
    }
    let bytes = std::fs::read(path).context("cannot read it")?;
    Ok(ChecksumList::parse(&String::from_utf8_lossy(&bytes))?)
}

/// How many names a summary of unverified downloads shows.
const NAMES_SHOWN: usize = 5;

/// The downloads a checksum file had no entry for: counted, the first few
/// named, and told once at the end of the run ([`Unverified::summary`]),
/// not once per URL, which on a list of thousands would bury every other
/// message. `--verbose` logs each one as it is met.
#[derive(Debug, Default)]
pub(crate) struct Unverified {
    /// Each one told as it is met (`--verbose`).
    verbose: bool,
    count: usize,
    names: Vec<String>,
}

impl Unverified {
    pub(crate) fn new(verbose: bool) -> Unverified {
        Unverified {
            verbose,
            ..Unverified::default()
        }
    }

    fn add(&mut self, name: String) {
        self.count += 1;
        if self.names.len() < NAMES_SHOWN {
            self.names.push(name);
        }
    }

    /// The one warning line for the run, if any download was unverified.
    pub(crate) fn summary(&self, from: &str) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let mut names = self.names.join(", ");
        if self.count > self.names.len() {
            names.push_str(&format!(" and {} more", self.count - self.names.len()));
        }
        let files = if self.count == 1 { "file" } else { "files" };
        Some(format!(
            "pymatris: warning: no checksum in {from} for {} {files}, not verified: {names}",
            self.count
        ))
    }
}

/// Gives a request without a checksum the list's entry for the name
/// its URL gives the file. A request the list has no entry for is
/// downloaded unverified, and counted in `unverified`: a list usually
/// covers a release, not every URL of a run.
pub(crate) fn apply_one(
    request: Request,
    list: &ChecksumList,
    from: &str,
    unverified: &mut Unverified,
) -> Request {
    if request.expected_checksum().is_some() {
        return request;
    }
    let name = Url::parse(request.url())
        .ok()
        .and_then(|url| pymatris_core::filename_from_url(&url));
    match name.as_deref().and_then(|name| list.get(name)) {
        Some(sum) => {
            let sum = sum.clone();
            request.checksum(sum)
        }
        None => {
            let name = name.unwrap_or_else(|| redact_url_str(request.url()));
            if unverified.verbose {
                err!("pymatris: no checksum for {name} in {from}: it is not verified");
            }
            unverified.add(name);
            request
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_downloads_make_one_line() {
        let mut none = Unverified::default();
        assert_eq!(none.summary("SUMS"), None);
        none.add("a.bin".to_owned());
        assert_eq!(
            none.summary("SUMS").unwrap(),
            "pymatris: warning: no checksum in SUMS for 1 file, not verified: a.bin"
        );
        let mut many = Unverified::default();
        for i in 0..1000 {
            many.add(format!("f{i}"));
        }
        assert_eq!(
            many.summary("SUMS").unwrap(),
            "pymatris: warning: no checksum in SUMS for 1000 files, not verified: \
             f0, f1, f2, f3, f4 and 995 more"
        );
    }
}
