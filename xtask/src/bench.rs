//! `cargo xtask bench`: pymatris against aria2c, curl, wget, lftp and
//! OpenSSH sftp on the harness's servers.

/// Flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Runs of each tool on each workload.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: u32,
    /// Only the workloads whose name contains this.
    #[arg(long)]
    pub(crate) only: Option<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`cargo xtask bench` is not yet implemented")
}
