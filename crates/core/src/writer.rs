//! Positional writes into the temporary file of a download, so that parts
//! fetched at once write their bytes at their own offsets without a shared
//! cursor. Writes run on tokio's blocking pool, a buffer at a time.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

/// Writes all of `buf` at `offset`, whatever the platform.
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match file.seek_write(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads at `offset` without moving a cursor; 0 at the end.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_at(buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        file.seek_read(buf, offset)
    }
}

/// The temporary file of one download, shared by its parts.
#[derive(Debug, Clone)]
pub(crate) struct PartFile {
    file: Arc<File>,
}

impl PartFile {
    pub(crate) fn new(file: File) -> Self {
        PartFile {
            file: Arc::new(file),
        }
    }

    /// Writes `bytes` at `offset`.
    pub(crate) async fn write_at(&self, offset: u64, bytes: Bytes) -> io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_all_at(&file, &bytes, offset))
            .await
            .map_err(io::Error::other)?
    }

    /// The SHA-256 of the file's contents, in lower-case hex.
    pub(crate) async fn sha256(&self) -> io::Result<String> {
        self.with(|file| {
            use sha2::{Digest, Sha256};
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut offset = 0;
            loop {
                let n = read_at(file, &mut buf, offset)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
            Ok(hex::encode(hasher.finalize()))
        })
        .await
    }

    /// Runs a blocking operation on the file.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || op(&file))
            .await
            .map_err(io::Error::other)?
    }
}
