//! What a batch returns: every request exactly once, as a success or as an
//! error, printed like the original pymatris's `Results`.

use std::fmt;

use camino::Utf8PathBuf;
use serde::ser::SerializeStruct;

use crate::error::Error;

/// A file that was downloaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Succeeded {
    /// Where it was saved.
    pub path: Utf8PathBuf,
    /// Its URL, passwords redacted.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the file on disk was up to date and kept as it was
    /// (timestamping), without a transfer.
    pub up_to_date: bool,
    /// For a request with mirrors: the URLs that served its bytes
    /// (passwords redacted); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub served_by: Vec<String>,
}

/// A request that failed.
#[derive(Debug)]
pub struct Failed {
    /// Where the file would have been saved.
    pub filepath_partial: Utf8PathBuf,
    /// Its URL, passwords redacted.
    pub url: String,
    /// Why it failed.
    pub error: Error,
}

impl serde::Serialize for Failed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Failed", 6)?;
        st.serialize_field("filepath_partial", &self.filepath_partial)?;
        st.serialize_field("url", &self.url)?;
        st.serialize_field("kind", &self.error.kind())?;
        st.serialize_field("retryable", &self.error.is_retryable())?;
        st.serialize_field("error", &self.error.to_string())?;
        st.serialize_field("chain", &self.error.chain())?;
        st.end()
    }
}

/// The outcome of [`Downloader::download`](crate::Downloader::download).
#[derive(Debug, Default, serde::Serialize)]
pub struct Results {
    /// The files that were downloaded, in the order they were enqueued.
    pub success: Vec<Succeeded>,
    /// The requests that failed, in the order they were enqueued.
    pub errors: Vec<Failed>,
}

impl Results {
    /// Whether every request succeeded.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Success:")?;
        for ok in &self.success {
            let name = ok.path.file_name().unwrap_or(ok.path.as_str());
            writeln!(f, "{name} {}", ok.url)?;
        }
        writeln!(f)?;
        writeln!(f, "Errors:")?;
        for e in &self.errors {
            writeln!(f, "({}, {})", e.url, e.error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn prints_like_the_seed() {
        let results = Results {
            success: vec![Succeeded {
                path: "out/a.parquet".into(),
                url: "https://h/a.parquet".into(),
                size: 3,
                up_to_date: false,
                served_by: Vec::new(),
            }],
            errors: vec![Failed {
                filepath_partial: "out/t.txt".into(),
                url: "ftp://bob:***@h/t.txt".into(),
                error: Error::new(ErrorKind::NotFound, "550 No such file"),
            }],
        };
        assert_eq!(
            results.to_string(),
            "Success:\na.parquet https://h/a.parquet\n\nErrors:\n(ftp://bob:***@h/t.txt, not found: 550 No such file)\n"
        );
    }
}
