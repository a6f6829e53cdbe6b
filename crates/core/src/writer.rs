//! Positional writes into the temporary file of a download, so that parts
//! fetched at once write their bytes at their own offsets without a shared
//! cursor. Writes run on tokio's blocking pool, a batch of chunks at a time,
//! while the next batch is received ([`WriteBehind`]): the network never
//! waits for the disk unless the disk is behind by a whole batch.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

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
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
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
    /// Taken around each batch of writes: the kernel serialises buffered
    /// writes to one file under its inode lock, and spins on it.
    writing: Arc<std::sync::Mutex<()>>,
}

impl PartFile {
    pub(crate) fn new(file: File) -> Self {
        PartFile {
            file: Arc::new(file),
            writing: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// The file itself.
    pub(crate) fn raw(&self) -> &File {
        &self.file
    }

    /// The digests of the file's contents in each of `algos`.
    pub(crate) async fn checksums(
        &self,
        algos: Vec<crate::checksum::Algo>,
    ) -> io::Result<Vec<crate::checksum::Checksum>> {
        self.with(move |file| crate::checksum::hash_file(file, &algos))
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

/// The largest write done on the async thread itself.
const INLINE_MAX: usize = 64 * 1024;

/// Gathers the chunks of one part and writes them behind the transfer: a
/// batch of at least `batch` bytes is written in the background while the
/// next is gathered. The chunks are written as they came (no copy), so a
/// part holds at most about two batches in memory.
#[derive(Debug)]
pub(crate) struct WriteBehind {
    file: PartFile,
    batch: usize,
    offset: u64,
    chunks: Vec<Bytes>,
    gathered: usize,
    pending: Option<JoinHandle<io::Result<u64>>>,
}

impl WriteBehind {
    /// Writes from `offset` on.
    pub(crate) fn new(file: PartFile, offset: u64, batch: usize) -> Self {
        WriteBehind {
            file,
            batch,
            offset,
            chunks: Vec::new(),
            gathered: 0,
            pending: None,
        }
    }

    /// Adds the next chunk. Returns how many bytes reached the file since
    /// the last call (for progress).
    pub(crate) async fn push(&mut self, chunk: Bytes) -> io::Result<u64> {
        self.gathered += chunk.len();
        self.chunks.push(chunk);
        if self.gathered < self.batch {
            return Ok(0);
        }
        let done = self.wait().await?;
        self.start();
        Ok(done)
    }

    /// Writes everything gathered and waits for it. Returns how many bytes
    /// reached the file since the last call.
    pub(crate) async fn finish(&mut self) -> io::Result<u64> {
        let done = self.wait().await?;
        if self.gathered <= INLINE_MAX {
            // A small file, or the small tail of one: a handoff to the
            // blocking pool costs more than this write into the page cache.
            return Ok(done + self.write_inline()?);
        }
        self.start();
        Ok(done + self.wait().await?)
    }

    fn write_inline(&mut self) -> io::Result<u64> {
        let mut written = 0;
        let _writing = self.file.writing.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in std::mem::take(&mut self.chunks) {
            write_all_at(&self.file.file, &chunk, self.offset)?;
            self.offset += chunk.len() as u64;
            written += chunk.len() as u64;
        }
        self.gathered = 0;
        Ok(written)
    }

    fn start(&mut self) {
        if self.chunks.is_empty() {
            return;
        }
        let chunks = std::mem::take(&mut self.chunks);
        let (file, mut offset) = (self.file.file.clone(), self.offset);
        let writing = self.file.writing.clone();
        self.offset += self.gathered as u64;
        self.gathered = 0;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut written = 0;
            let _writing = writing.lock().unwrap_or_else(|e| e.into_inner());
            for chunk in chunks {
                write_all_at(&file, &chunk, offset)?;
                offset += chunk.len() as u64;
                written += chunk.len() as u64;
            }
            Ok(written)
        }));
    }

    async fn wait(&mut self) -> io::Result<u64> {
        match self.pending.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(0),
        }
    }
}
