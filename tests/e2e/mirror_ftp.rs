//! What an FTP mirror asks per file: the listing already gave each file's
//! size, so a file costs no `SIZE`; and a file that grew after it was
//! listed is never written cut to its listed size. And what it asks of the
//! server in all: no more sessions than the transfers it runs at once.

use pymatris_harness::{Server, Servers, Which};
use pymatris_tests::fake_ftp::{DuringTransfers, FakeFtp, FakeFtpTree};
use pymatris_tests::run_pymatris;

use crate::mirror::{json, log_count, mirror as mirror_tree, read_tree, write_tree};

fn tree_of(files: &[(&str, &[u8], usize)]) -> FakeFtpTree {
    let mut tree = FakeFtpTree::default();
    let listing: Vec<String> = files
        .iter()
        .map(|(name, _, listed)| format!("type=file;size={listed};modify=20260101000000; {name}"))
        .collect();
    tree.dirs.insert("t".into(), listing.join("\n"));
    for (name, body, _) in files {
        tree.files.insert(format!("t/{name}"), body.to_vec());
    }
    tree
}

fn mirror(server: &FakeFtp) -> (std::process::Output, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let out = mirror_into(server, &root.path().join("dl"), &[]);
    (out, root)
}

/// Mirrors the fake server's `t/` into `dir` with `--json` and `flags`.
fn mirror_into(server: &FakeFtp, dir: &std::path::Path, flags: &[&str]) -> std::process::Output {
    let mut args = vec!["-r", "--json", "--quiet", "--dir", dir.to_str().unwrap()];
    args.extend(flags);
    let url = server.url("t/");
    args.push(&url);
    run_pymatris(args)
}

/// Each file of an `MLSD` listing is fetched with `RETR` and no `SIZE`:
/// one round trip fewer per file.
#[test]
fn an_ftp_mirror_takes_each_files_size_from_the_listing() {
    let files: [(&str, &[u8], usize); 3] = [
        ("a.bin", b"aaaa", 4),
        ("b.bin", b"bb", 2),
        ("c.bin", b"", 0),
    ];
    let server = FakeFtp::start(tree_of(&files));
    let (out, root) = mirror(&server);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let got = read_tree(&root.path().join("dl"));
    for (name, body, _) in files {
        assert_eq!(got.get(name).map(Vec::as_slice), Some(body), "{name}");
    }
    let commands = server.commands();
    let sizes: Vec<&String> = commands.iter().filter(|c| c.starts_with("SIZE")).collect();
    assert!(sizes.is_empty(), "{commands:#?}");
    let mut retrs = server.retrs();
    retrs.sort();
    assert_eq!(retrs, ["t/a.bin", "t/b.bin", "t/c.bin"], "{commands:#?}");
}

/// A file longer than its listing said (it grew in between) is fetched
/// whole or reported, never kept cut to the listed size.
#[test]
fn a_file_grown_since_its_listing_is_not_cut_to_its_listed_size() {
    let files: [(&str, &[u8], usize); 2] =
        [("grown.txt", b"hello world", 5), ("same.txt", b"same", 4)];
    let server = FakeFtp::start(tree_of(&files));
    let (out, root) = mirror(&server);
    let v = json(&out);
    let got = read_tree(&root.path().join("dl"));
    assert_eq!(
        got.get("same.txt").map(Vec::as_slice),
        Some(&b"same"[..]),
        "{v:#}"
    );
    match got.get("grown.txt") {
        Some(body) => assert_eq!(body.as_slice(), b"hello world", "{v:#}"),
        None => assert_eq!(out.status.code(), Some(1), "{v:#}"),
    }
}

/// A file's commands go to the server in one write (`MDTM`, `EPSV` and
/// `RETR`): the server waits for the client once per file, not three
/// times. The first file, before the server showed that `EPSV` transfers
/// work, takes them one at a time.
#[test]
fn an_ftp_mirror_sends_each_files_commands_at_once() {
    let bodies: Vec<Vec<u8>> = (0..6u8)
        .map(|i| vec![b'a' + i; 100 + usize::from(i)])
        .collect();
    let names: Vec<String> = (0..6).map(|i| format!("f{i}.bin")).collect();
    let files: Vec<(&str, &[u8], usize)> = (names.iter().zip(&bodies))
        .map(|(n, b)| (n.as_str(), b.as_slice(), b.len()))
        .collect();
    let server = FakeFtp::start(tree_of(&files));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let out = mirror_into(&server, &dir, &["--max-parallel", "1"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let got = read_tree(&dir);
    for (name, body, _) in &files {
        assert_eq!(got.get(*name).map(Vec::as_slice), Some(*body), "{name}");
    }
    let commands = server.commands_waited_for();
    let first_retr = commands.iter().position(|(c, _)| c.starts_with("RETR"));
    let later = &commands[first_retr.expect("a RETR") + 1..];
    let retrs = later.iter().filter(|(c, _)| c.starts_with("RETR")).count();
    assert_eq!(retrs, 5, "{commands:#?}");
    let waited: Vec<&String> = later
        .iter()
        .filter(|(c, waited)| *waited && (c.starts_with("EPSV") || c.starts_with("RETR")))
        .map(|(c, _)| c)
        .collect();
    assert!(
        waited.is_empty(),
        "the server waited for {waited:?}, sent apart from the command before: {commands:#?}"
    );
}

/// A request whose new session is still logging in takes a session that
/// another request lets go meanwhile: a slow login (a password hash on a
/// busy server) holds no file back while a session is free. Here every
/// login but the first takes 5 s, and every file goes on the first
/// session, which frees up within milliseconds.
#[test]
fn a_request_takes_a_session_freed_while_its_own_logs_in() {
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 10]).collect();
    let names: Vec<String> = (0..4).map(|i| format!("f{i}.bin")).collect();
    let files: Vec<(&str, &[u8], usize)> = (names.iter().zip(&bodies))
        .map(|(n, b)| (n.as_str(), b.as_slice(), b.len()))
        .collect();
    let mut tree = tree_of(&files);
    tree.slow_logins = Some(std::time::Duration::from_secs(5));
    let server = FakeFtp::start(tree);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let out = mirror_into(&server, &dir, &["--max-parallel", "2"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(read_tree(&dir).len(), 4, "{v:#}");
    let commands = server.commands_by_connection();
    let elsewhere: Vec<&(String, usize)> = (commands.iter())
        .filter(|(c, n)| c.starts_with("RETR") && *n > 0)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "files waited for a slow login: {elsewhere:?} in {commands:#?}"
    );
}

/// A server on the same machine (its round trip well under a
/// millisecond) gets at most four sessions, however many files go at
/// once: there the CPUs bound the files at once, and each more login
/// costs the server a process and a password hash for nothing.
#[test]
fn a_server_next_door_gets_few_sessions() {
    assert!(logins_next_door(&[]) <= 4);
    // A limit the user sets holds there too.
    assert!(logins_next_door(&["--max-per-host", "8"]) > 4);
}

/// The logins of a tree of 12 small files fetched from the fake server
/// with `--max-parallel 8` and `flags`.
fn logins_next_door(flags: &[&str]) -> usize {
    let bodies: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'a' + i; 1000]).collect();
    let names: Vec<String> = (0..12).map(|i| format!("f{i:02}.bin")).collect();
    let files: Vec<(&str, &[u8], usize)> = (names.iter().zip(&bodies))
        .map(|(n, b)| (n.as_str(), b.as_slice(), b.len()))
        .collect();
    let server = FakeFtp::start(tree_of(&files));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let flags = [&["--max-parallel", "8"], flags].concat();
    let out = mirror_into(&server, &dir, &flags);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(read_tree(&dir).len(), 12, "{v:#}");
    let commands = server.commands();
    commands.iter().filter(|c| c.starts_with("USER")).count()
}

/// A tree's listings take places among the connections its files use, as
/// lftp's `mirror --parallel` does: a login costs vsftpd a process and a
/// password hash, so a session opened for a listing beside those of the
/// downloads costs the server more than the listing itself.
#[test]
fn an_ftp_tree_logs_in_no_more_often_than_it_transfers_at_once() {
    let servers = Servers::start(Which::ftp_only()).expect("start vsftpd");
    let files = write_tree(&servers);
    let out = tempfile::tempdir().unwrap();
    let url = servers.ftp_url("mirror/");
    mirror_tree(
        &["--max-parallel", "3", "--max-splits", "1"],
        &url,
        out.path(),
    );
    assert!(read_tree(out.path()) == files, "the tree differs");
    let logins = log_count(&servers, Server::Vsftpd, |l| l.contains("OK LOGIN: "));
    assert!(logins <= 3, "{logins} sessions for 3 transfers at once");
}

/// A server that refuses `REST` (here `500`, as a server that never knew
/// it) in a file's pipelined commands (`[SIZE] [MDTM] EPSV [REST] RETR` in
/// one write, `crates/proto-ftp/src/pipeline.rs`): under `-c`, a partial
/// file's rest is asked on the session that showed `EPSV` transfers work
/// (with the file before it), the server refuses, and the file is fetched
/// again whole, byte-exact, with no error.
#[test]
fn a_refused_rest_in_pipelined_commands_fetches_the_file_whole() {
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let files: [(&str, &[u8], usize); 2] = [("a.bin", b"first", 5), ("big.bin", &big, big.len())];
    let server = FakeFtp::start(tree_of(&files));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big.bin"), &big[..1 << 20]).unwrap();
    let out = mirror_into(
        &server,
        &dir,
        &["-c", "--max-parallel", "1", "--max-per-host", "1"],
    );
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let got = read_tree(&dir);
    assert!(got.get("big.bin") == Some(&big), "big.bin differs: {v:#}");
    assert_eq!(got.get("a.bin").map(Vec::as_slice), Some(&b"first"[..]));
    let commands = server.commands_waited_for();
    let pipelined_rest = commands
        .iter()
        .any(|(c, waited)| c.starts_with("REST") && !waited);
    assert!(
        pipelined_rest,
        "no REST sent with the commands before it: {commands:#?}"
    );
}

/// Six small files of one listing, four asked at once over one session to
/// a server that holds each `226` 100 ms after its data, and then does
/// what `during` says with the commands that came meanwhile.
fn behind_transfers(during: Option<DuringTransfers>) -> (FakeFtp, Vec<(String, Vec<u8>)>) {
    let files: Vec<(String, Vec<u8>)> = (0..6u8)
        .map(|i| (format!("f{i}.bin"), vec![b'a' + i; 1000 + usize::from(i)]))
        .collect();
    let listed: Vec<(&str, &[u8], usize)> = (files.iter())
        .map(|(n, b)| (n.as_str(), b.as_slice(), b.len()))
        .collect();
    let mut tree = tree_of(&listed);
    tree.hold_226 = Some(std::time::Duration::from_millis(100));
    tree.during_transfers = during;
    let server = FakeFtp::start(tree);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let flags = ["--max-per-host", "1", "--max-parallel", "4"];
    let out = mirror_into(&server, &dir, &flags);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let got = read_tree(&dir);
    for (name, body) in &files {
        assert!(got.get(name) == Some(body), "{name} differs: {v:#}");
    }
    (server, files)
}

/// On a server next door, a listed small file gives its session back as
/// its transfer begins (`EARLY_MAX` in `crates/proto-ftp/src/pipeline.rs`):
/// the next file's commands go out behind it, and the server finds them
/// once it has sent the data, before its `226`, instead of waiting for
/// the client between two files. The first file goes alone (the server
/// has not yet shown that `EPSV` transfers work) and the last has none
/// behind it; the four between each had the next file's commands behind.
#[test]
fn a_session_next_door_sends_the_next_files_commands_behind_a_transfer() {
    let (server, _) = behind_transfers(None);
    let behind = server.retrs_with_commands_behind();
    assert!(
        behind.len() >= 3,
        "the next file's commands came behind {behind:?} only: {:#?}",
        server.commands_waited_for()
    );
}

/// A server that reads its control connection during a transfer and
/// refuses the commands it finds there (`503`): the session whose
/// commands went behind a transfer is closed, its file asked again on a
/// session of its own, and no later file's commands go behind a transfer
/// on that server. Every file arrives, with no error.
#[test]
fn a_server_refusing_commands_during_a_transfer_gets_each_file_after_the_one_before() {
    each_file_after_the_one_before_once_out_of_step(DuringTransfers::Refuse);
}

/// A server that answers the next file's `MDTM` during a transfer,
/// before that transfer's `226`: the replies come out of the order the
/// client reads them in. A positive reply where the end of the transfer
/// was due puts the session out of step (it was taken for a failing final
/// reply, and the exchange went on with each reply one late, the file's
/// time lost); the file is asked again on a session of its own, and no
/// later file's commands go behind a transfer on that server.
#[test]
fn a_server_answering_commands_during_a_transfer_gets_each_file_after_the_one_before() {
    each_file_after_the_one_before_once_out_of_step(DuringTransfers::AnswerMdtm);
}

/// A server that reads the commands behind a transfer and answers one
/// `500` for all of them before its `226` (pure-ftpd). The `500` answers
/// the commands, not the transfer: taken for the transfer's failing final
/// reply, it left the session one reply late and then waiting for replies
/// the server never sends, a minute per session (`--timeouts`) before the
/// file went again. Now the session is out of step at once: the file is
/// asked again on a session of its own, and no later file's commands go
/// behind a transfer on that server.
#[test]
fn a_server_losing_commands_during_a_transfer_gets_each_file_after_the_one_before() {
    each_file_after_the_one_before_once_out_of_step(DuringTransfers::LoseWith500);
}

/// A server that reads the commands behind a transfer and loses them
/// without a word: their first reply never comes. The session waited for
/// it until `--timeouts` (60 s); now it gives up 5 s after the transfer's
/// `226` (`LOST_AFTER` in `crates/proto-ftp/src/pipeline.rs`), and the
/// file goes again as for the other servers out of step.
#[test]
fn a_server_dropping_commands_during_a_transfer_gets_each_file_after_the_one_before() {
    each_file_after_the_one_before_once_out_of_step(DuringTransfers::Lose);
}

/// [`behind_transfers`] with a server that `during` puts out of step with
/// the commands behind a transfer: one transfer had commands behind it,
/// none after, every file was asked for (and arrived whole), and the run
/// ended long before the 60 s (`--timeouts`) a wait for lost replies
/// lasts.
fn each_file_after_the_one_before_once_out_of_step(during: DuringTransfers) {
    let started = std::time::Instant::now();
    let (server, files) = behind_transfers(Some(during));
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "the run took {took:?}: it waited for replies the server never sent"
    );
    let behind = server.retrs_with_commands_behind();
    assert_eq!(behind.len(), 1, "{:#?}", server.commands());
    let retrs = server.retrs();
    for (name, _) in &files {
        let name = format!("t/{name}");
        assert!(retrs.contains(&name), "no RETR {name}: {retrs:?}");
    }
}

/// A file shorter than its listing said (it shrank in between, or the
/// server stopped early and still said `226`), fetched where commands go
/// behind other files' transfers and sessions go back to the pool as
/// their transfers begin (`EARLY_MAX` in `crates/proto-ftp/src/pipeline.rs`): it is
/// reported, never kept under its name with fewer bytes than listed, and
/// the file after it on the same session arrives whole.
#[test]
fn a_file_shorter_than_its_listing_behind_another_is_reported_and_not_kept() {
    let short = vec![b's'; 500];
    let files: [(&str, &[u8], usize); 4] = [
        ("a.bin", &[b'a'; 1000], 1000),
        ("b.bin", &[b'b'; 1000], 1000),
        ("c-short.bin", &short, 1000),
        ("d.bin", &[b'd'; 1000], 1000),
    ];
    let mut tree = tree_of(&files);
    tree.hold_226 = Some(std::time::Duration::from_millis(50));
    let server = FakeFtp::start(tree);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let flags = ["--max-per-host", "1", "--max-parallel", "2"];
    let out = mirror_into(&server, &dir, &flags);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v:#}");
    assert!(
        errors[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/t/c-short.bin"),
        "{v:#}"
    );
    assert_eq!(errors[0]["kind"], "Changed", "{v:#}");
    let got = read_tree(&dir);
    assert!(!got.contains_key("c-short.bin"), "kept: {v:#}");
    for (name, body, _) in &files[..2] {
        assert_eq!(got.get(*name).map(Vec::as_slice), Some(*body), "{name}");
    }
    assert_eq!(got.get("d.bin").map(Vec::as_slice), Some(&[b'd'; 1000][..]));
    // Sessions went back to the pool as transfers began here (some file
    // had the next one's commands behind it); c-short.bin, never the first
    // (which goes alone: the server has not yet shown that `EPSV`
    // transfers work), was one of them. Which files went behind which is
    // the scheduler's.
    let behind = server.retrs_with_commands_behind();
    assert!(
        !behind.is_empty(),
        "no file had the next one's commands behind it"
    );
}
