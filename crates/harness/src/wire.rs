//! How many bytes a range of server ports put on the wire, counted by the
//! kernel's packet filter (nftables): the measure of what a transfer cost
//! the network, where a server's own log counts what it handed to its
//! socket.
//!
//! The two differ when a client closes a data connection early, as a resumed
//! or split FTP download does at the end of each part: the server logs what
//! it had written into its send buffer (megabytes), but only what the
//! client's receive window let through ever left it; the rest is dropped with
//! the connection. An FTP data connection goes to a port the server picks
//! from its passive range, so the meter counts a port range: the payload of
//! the TCP packets leaving those ports.
//!
//! Needs root and the `nft` command (Debian's nftables). Each meter is its
//! own table, removed when the meter is dropped, so meters of servers on
//! other ports (tests run in parallel) never see each other's packets.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result, bail};

/// A packet counter on the packets leaving a range of local TCP ports.
#[derive(Debug)]
pub struct WireMeter {
    table: String,
}

impl WireMeter {
    /// Starts counting the packets sent from local TCP ports `lo..=hi`.
    pub fn ports(lo: u16, hi: u16) -> Result<WireMeter> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "pymatris_wire_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let meter = WireMeter { table };
        let t = &meter.table;
        nft(&["add", "table", "inet", t])?;
        nft(&[
            "add",
            "chain",
            "inet",
            t,
            "out",
            "{ type filter hook output priority 0; policy accept; }",
        ])?;
        let range = format!("{lo}-{hi}");
        nft(&[
            "add", "rule", "inet", t, "out", "tcp", "sport", &range, "counter",
        ])?;
        Ok(meter)
    }

    /// The TCP payload counted so far: the bytes of every packet less
    /// their IPv4 and TCP headers (with the timestamps option Linux sends
    /// by default). On small segments the headers are several percent of
    /// the bytes, which a server's log does not count either.
    pub fn bytes(&self) -> Result<u64> {
        const HEADERS: u64 = 20 + 20 + 12;
        let listing = nft(&["list", "table", "inet", &self.table])?;
        let (packets, bytes) = counter(&listing)
            .with_context(|| format!("no counter in the listing of {}:\n{listing}", self.table))?;
        Ok(bytes.saturating_sub(packets * HEADERS))
    }
}

impl Drop for WireMeter {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}

fn nft(args: &[&str]) -> Result<String> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .context("running nft (Debian's nftables; the tests need root)")?;
    if !out.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `(P, N)` of the `counter packets P bytes N` of a rule.
fn counter(listing: &str) -> Option<(u64, u64)> {
    let mut words = listing.split_whitespace();
    while let Some(w) = words.next() {
        if w == "counter" {
            let (p, packets, b, bytes) =
                (words.next()?, words.next()?, words.next()?, words.next()?);
            if p == "packets" && b == "bytes" {
                return Some((packets.parse().ok()?, bytes.parse().ok()?));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter_of_a_listing() {
        let listing = "table inet t {\n\tchain out {\n\t\ttype filter hook output priority \
                       filter; policy accept;\n\t\ttcp sport 40000-40010 counter packets 4 \
                       bytes 16849\n\t}\n}\n";
        assert_eq!(counter(listing), Some((4, 16849)));
        assert_eq!(counter("table inet t {}"), None);
    }

    /// Bytes sent from a listening port are counted, those of other ports
    /// not (needs root and nft, like the FTP and SFTP servers).
    ///
    /// What leaves the port includes TCP's retransmissions: on a loaded
    /// machine a tail loss probe resends a segment whose ACK came late, and
    /// the counter rightly sees it twice. The kernel's own account of the
    /// connection (`ss`: `bytes_sent`, which counts retransmitted bytes, and
    /// `bytes_retrans`) says what the counter must read.
    #[test]
    fn counts_what_leaves_its_ports_only() {
        use std::io::{Read as _, Write as _};
        use std::net::{TcpListener, TcpStream};

        let counted = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = counted.local_addr().unwrap().port();
        let meter = WireMeter::ports(port, port).unwrap();
        let mut sent = (0, 0);
        for (listener, len) in [(&counted, 300_000), (&other, 500_000)] {
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut served, _) = listener.accept().unwrap();
            let local = served.local_addr().unwrap().port();
            let peer = served.peer_addr().unwrap().port();
            let sender = std::thread::spawn(move || {
                served.write_all(&vec![7u8; len]).unwrap();
                // The client's one byte comes once it holds every byte, and
                // acknowledges them all: nothing is resent after it.
                let mut ack = [0u8];
                served.read_exact(&mut ack).unwrap();
                kernel_counts(local, peer)
            });
            let mut got = vec![0u8; len];
            client.read_exact(&mut got).unwrap();
            client.write_all(b"!").unwrap();
            let counts = sender.join().unwrap();
            if listener.local_addr().unwrap().port() == port {
                sent = counts;
            }
        }
        let (bytes_sent, bytes_retrans) = sent;
        assert_eq!(bytes_sent - bytes_retrans, 300_000);
        let bytes = meter.bytes().unwrap();
        // The handshake and the closing packets carry no payload; the
        // SYN-ACK's options are longer than the timestamps alone.
        assert!(
            (bytes_sent..bytes_sent + 64).contains(&bytes),
            "counted {bytes} bytes of payload for 300000 sent from the port \
             ({bytes_retrans} of them sent again)"
        );
    }

    /// `(bytes_sent, bytes_retrans)` of the established connection from
    /// local port `from` to peer port `to`, as `ss` reports them.
    fn kernel_counts(from: u16, to: u16) -> (u64, u64) {
        let filter = format!("( sport = :{from} and dport = :{to} )");
        let out = std::process::Command::new("ss")
            .args(["-tinH", "state", "established", &filter])
            .output()
            .expect("ss (Debian's iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.parse::<u64>().ok())
        };
        let sent = field("bytes_sent:").unwrap_or_else(|| panic!("no bytes_sent in {text}"));
        (sent, field("bytes_retrans:").unwrap_or(0))
    }
}
