//! End-to-end tests of pymatris: the CLI and the library against real
//! servers started on loopback by `pymatris-harness`, and against an
//! in-process server that misbehaves on demand.

mod adapt;
mod cli;
mod config;
mod conformance;
mod disk;
mod dry_run;
mod endgame;
mod faults;
mod ftp;
mod ftp_cuts;
mod h2;
#[cfg(unix)]
mod handles;
mod http;
mod integrity;
mod local_traps;
mod long_lists;
mod mirror;
mod mirror_ftp;
mod mirrors;
mod per_file;
mod progress_json;
mod resume;
mod sftp;
mod shards;
mod shared_link;
mod socks;
