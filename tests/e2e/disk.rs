//! A full disk: the file that does not fit fails with the cause and its
//! URL, leaves nothing behind, and the rest of the batch still lands.

use std::process::Command;

use pymatris_tests::fault_server::{FaultServer, Route};
use pymatris_tests::{list_dir, random_bytes, run_pymatris};

/// A 1 MiB tmpfs, unmounted on drop.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    /// `None` where mounting is not allowed (not root).
    fn mount() -> Option<TinyDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyDisk { dir })
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_one_file_with_its_cause_and_the_others_land() {
    let Some(disk) = TinyDisk::mount() else {
        // CI runs as root and must run this; a developer without root
        // cannot mount a tmpfs.
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs in CI"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: cannot mount a tmpfs (not root)");
        }
        return;
    };
    let big = random_bytes(3 << 20, 51);
    let small = random_bytes(10_000, 52);
    let server = FaultServer::start([
        ("/big.bin", Route::new(big)),
        ("/small.txt", Route::new(small.clone())),
    ]);
    let dir = disk.dir.path().to_str().unwrap();
    let result = run_pymatris([
        "--quiet",
        "--json",
        // One at a time: the big file fills the disk and is removed before
        // the small one starts, which must then land.
        "--max-parallel",
        "1",
        "--dir",
        dir,
        &server.url("/big.bin"),
        &server.url("/small.txt"),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json:#}");
    assert_eq!(errors[0]["url"], server.url("/big.bin"));
    assert_eq!(errors[0]["kind"], "Io");
    let text = errors[0]["error"].as_str().unwrap();
    assert!(
        text.contains("No space left on device") || text.contains("space"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains(&server.url("/big.bin")), "{stderr}");
    assert_eq!(
        list_dir(disk.dir.path()),
        ["small.txt"],
        "the part file of big.bin is removed"
    );
    assert_eq!(
        std::fs::read(disk.dir.path().join("small.txt")).unwrap(),
        small
    );
}
