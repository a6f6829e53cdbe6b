//! SFTP v3's wire format: packet types, status codes, the attributes a
//! download reads, and the framing of one packet; kept apart from the
//! session (`client.rs`) so the byte layout can be read and tested on its
//! own.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

// Packet types (draft-ietf-secsh-filexfer-02 §3).
pub(super) const FXP_INIT: u8 = 1;
pub(super) const FXP_VERSION: u8 = 2;
pub(super) const FXP_OPEN: u8 = 3;
pub(super) const FXP_CLOSE: u8 = 4;
pub(super) const FXP_READ: u8 = 5;
pub(super) const FXP_FSTAT: u8 = 8;
pub(super) const FXP_OPENDIR: u8 = 11;
pub(super) const FXP_READDIR: u8 = 12;
pub(super) const FXP_STAT: u8 = 17;
pub(super) const FXP_READLINK: u8 = 19;
pub(super) const FXP_NAME: u8 = 104;
pub(super) const FXP_STATUS: u8 = 101;
pub(super) const FXP_HANDLE: u8 = 102;
pub(super) const FXP_DATA: u8 = 103;
pub(super) const FXP_ATTRS: u8 = 105;
pub(super) const FXP_EXTENDED: u8 = 200;
pub(super) const FXP_EXTENDED_REPLY: u8 = 201;

pub(super) const FXF_READ: u32 = 0x1;

pub(super) const ATTR_SIZE: u32 = 0x1;
pub(super) const ATTR_UIDGID: u32 = 0x2;
pub(super) const ATTR_PERMISSIONS: u32 = 0x4;
pub(super) const ATTR_ACMODTIME: u32 = 0x8;
pub(super) const ATTR_EXTENDED: u32 = 0x8000_0000;

/// The protocol version we speak; servers answer with theirs, at most ours.
pub(super) const VERSION: u32 = 3;

/// OpenSSH's extension that tells the largest read and the open handles
/// a session may have.
pub(crate) const LIMITS: &[u8] = b"limits@openssh.com";

/// SFTP status codes (§7). Later drafts added more (up to 31); a v3 server
/// may still send some, and they are told apart by number only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusCode(pub(crate) u32);

impl StatusCode {
    pub(crate) const OK: StatusCode = StatusCode(0);
    pub(crate) const EOF: StatusCode = StatusCode(1);
    pub(crate) const NO_SUCH_FILE: StatusCode = StatusCode(2);
    pub(crate) const PERMISSION_DENIED: StatusCode = StatusCode(3);
    pub(crate) const FAILURE: StatusCode = StatusCode(4);
    pub(crate) const BAD_MESSAGE: StatusCode = StatusCode(5);
    pub(crate) const NO_CONNECTION: StatusCode = StatusCode(6);
    pub(crate) const CONNECTION_LOST: StatusCode = StatusCode(7);
    pub(crate) const OP_UNSUPPORTED: StatusCode = StatusCode(8);
    /// filexfer-05 on; some v3 servers send it for a missing directory.
    pub(crate) const NO_SUCH_PATH: StatusCode = StatusCode(10);
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "Ok",
            1 => "Eof",
            2 => "No such file",
            3 => "Permission denied",
            4 => "Failure",
            5 => "Bad message",
            6 => "No connection",
            7 => "Connection lost",
            8 => "Operation unsupported",
            10 => "No such path",
            n => return write!(f, "status {n}"),
        };
        f.write_str(name)
    }
}

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum SftpError {
    /// The server answered with a status other than OK.
    Status { code: StatusCode, message: String },
    /// No answer within the session's timeout.
    Timeout,
    /// The channel under the session ended, or broke.
    Closed(String),
    /// The server sent what SFTP v3 does not allow here.
    Protocol(String),
}

impl fmt::Display for SftpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SftpError::Status { code, message } => {
                // OpenSSH's messages repeat the code ("No such file"): say
                // it once.
                let name = code.to_string();
                if message.is_empty() || message.eq_ignore_ascii_case(&name) {
                    write!(f, "{name}")
                } else {
                    write!(f, "{name}: {message}")
                }
            }
            SftpError::Timeout => f.write_str("no answer in time"),
            SftpError::Closed(why) => write!(f, "SFTP session closed: {why}"),
            SftpError::Protocol(what) => write!(f, "bad SFTP reply: {what}"),
        }
    }
}

impl std::error::Error for SftpError {}

pub(super) type Result<T> = std::result::Result<T, SftpError>;

/// A file handle: opaque bytes, sent back exactly as received (§6.3).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Handle(pub(super) Bytes);

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle(")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The attributes a download uses; the rest are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub(crate) size: Option<u64>,
    pub(crate) permissions: Option<u32>,
    pub(crate) mtime: Option<u32>,
}

impl Attrs {
    pub(crate) fn is_dir(&self) -> bool {
        self.permissions.is_some_and(|p| p & 0o170000 == 0o040000)
    }

    pub(crate) fn is_file(&self) -> bool {
        self.permissions.is_some_and(|p| p & 0o170000 == 0o100000)
    }

    pub(crate) fn is_link(&self) -> bool {
        self.permissions.is_some_and(|p| p & 0o170000 == 0o120000)
    }
}

/// What `limits@openssh.com` answers; 0 means "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_packet_len: u64,
    pub(crate) max_read_len: u64,
    pub(crate) max_write_len: u64,
    pub(crate) max_open_handles: u64,
}

/// A reply: its type and what follows the request id.
pub(super) struct Reply {
    pub(super) kind: u8,
    pub(super) body: Bytes,
}

pub(super) fn closed(e: std::io::Error) -> SftpError {
    SftpError::Closed(e.to_string())
}

/// One packet: its type and the rest.
pub(super) async fn read_packet<R: AsyncRead + Unpin>(
    rx: &mut R,
    max_packet: u32,
) -> Result<(u8, Bytes)> {
    let len = match rx.read_u32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(SftpError::Closed("the server ended the channel".into()));
        }
        Err(e) => return Err(closed(e)),
    };
    if len == 0 || len > max_packet {
        return Err(SftpError::Protocol(format!(
            "a packet of {len} bytes (at most {max_packet} accepted)"
        )));
    }
    let mut buf = BytesMut::zeroed(len as usize);
    rx.read_exact(&mut buf).await.map_err(closed)?;
    let mut body = buf.freeze();
    let kind = body.get_u8();
    Ok((kind, body))
}

/// The body of a reply of `kind`; a STATUS in its place is the error.
pub(super) fn expect(reply: Reply, kind: u8) -> Result<Bytes> {
    if reply.kind == kind {
        return Ok(reply.body);
    }
    if reply.kind == FXP_STATUS {
        status(reply.body)??;
        return Err(SftpError::Protocol(format!(
            "OK where packet type {kind} was expected"
        )));
    }
    Err(SftpError::Protocol(format!(
        "packet type {} where {kind} was expected",
        reply.kind
    )))
}

pub(super) fn expect_ok(reply: Reply) -> Result<()> {
    if reply.kind != FXP_STATUS {
        return Err(SftpError::Protocol(format!(
            "packet type {} where STATUS was expected",
            reply.kind
        )));
    }
    status(reply.body)?
}

/// A STATUS body: `Ok(Ok(()))` for OK, `Ok(Err(status))` otherwise, `Err`
/// when malformed.
pub(super) fn status(mut body: Bytes) -> Result<Result<()>> {
    let code = StatusCode(get_u32(&mut body)?);
    // Servers of the oldest drafts send the code alone.
    let message = if body.has_remaining() {
        String::from_utf8_lossy(&get_string(&mut body)?).into_owned()
    } else {
        String::new()
    };
    if code == StatusCode::OK {
        Ok(Ok(()))
    } else {
        Ok(Err(SftpError::Status { code, message }))
    }
}

pub(super) fn short() -> SftpError {
    SftpError::Protocol("a reply shorter than its fields".into())
}

pub(super) fn get_u32(b: &mut Bytes) -> Result<u32> {
    b.try_get_u32().map_err(|_| short())
}

pub(super) fn get_u64(b: &mut Bytes) -> Result<u64> {
    b.try_get_u64().map_err(|_| short())
}

/// A `string` field: a u32 length and that many bytes, as a slice of the
/// packet (no copy).
pub(super) fn get_string(b: &mut Bytes) -> Result<Bytes> {
    let len = get_u32(b)? as usize;
    if b.remaining() < len {
        return Err(short());
    }
    Ok(b.split_to(len))
}

pub(super) fn put_string(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

/// ATTRS (§5).
pub(super) fn get_attrs(b: &mut Bytes) -> Result<Attrs> {
    let flags = get_u32(b)?;
    let mut attrs = Attrs::default();
    if flags & ATTR_SIZE != 0 {
        attrs.size = Some(get_u64(b)?);
    }
    if flags & ATTR_UIDGID != 0 {
        get_u32(b)?;
        get_u32(b)?;
    }
    if flags & ATTR_PERMISSIONS != 0 {
        attrs.permissions = Some(get_u32(b)?);
    }
    if flags & ATTR_ACMODTIME != 0 {
        get_u32(b)?;
        attrs.mtime = Some(get_u32(b)?);
    }
    if flags & ATTR_EXTENDED != 0 {
        for _ in 0..get_u32(b)? {
            get_string(b)?;
            get_string(b)?;
        }
    }
    Ok(attrs)
}
