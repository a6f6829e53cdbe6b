//! lighttpd, a second HTTP and HTTPS implementation beside nginx: one
//! process in the foreground, a private config, logs and ports, the shared
//! data directory, byte ranges on (lighttpd's default).

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::process::{Proc, StartError, Tool, free_port, with_port_retries};

const LIGHTTPD: Tool = Tool {
    path: "/usr/sbin/lighttpd",
    package: "lighttpd lighttpd-mod-openssl",
};

#[derive(Debug)]
pub(crate) struct Lighttpd {
    pub(crate) proc: Proc,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
}

pub(crate) fn start(dir: &Path, data: &Path, tls: &Path) -> Result<Lighttpd> {
    let lighttpd = LIGHTTPD.check()?;
    with_port_retries(|| {
        let http_port = free_port()?;
        let https_port = free_port()?;
        let conf = dir.join("lighttpd.conf");
        fs::write(&conf, config(dir, data, tls, http_port, https_port))
            .map_err(anyhow::Error::from)?;
        let _ = fs::remove_file(dir.join("error.log"));
        let mut proc = Proc::spawn(
            "lighttpd",
            lighttpd,
            &["-D", "-f", &conf.display().to_string()],
            &dir.join("stderr.log"),
        )?;
        match proc.wait_ready(&[http_port, https_port]) {
            Ok(()) => Ok(Lighttpd {
                proc,
                http_port,
                https_port,
            }),
            Err(e) => {
                proc.kill();
                Err::<_, StartError>(e)
            }
        }
    })
}

fn config(dir: &Path, data: &Path, tls: &Path, http_port: u16, https_port: u16) -> String {
    let d = |p: &Path| format!("\"{}\"", p.display());
    let (data, error_log, access_log) = (
        d(data),
        d(&dir.join("error.log")),
        d(&dir.join("access.log")),
    );
    let (cert, key) = (d(&tls.join("server.pem")), d(&tls.join("server.key")));
    format!(
        r#"# Written by pymatris-harness.
server.modules = ("mod_openssl", "mod_accesslog")
server.document-root = {data}
server.bind = "127.0.0.1"
server.port = {http_port}
server.errorlog = {error_log}
server.tag = "lighttpd"
server.max-fds = 4096
server.max-connections = 1024
server.max-keep-alive-requests = 1000
server.range-requests = "enable"
static-file.etags = "enable"
dir-listing.activate = "disable"
mimetype.assign = ("" => "application/octet-stream")
# Remote host, time, request line, status, body bytes sent.
accesslog.filename = {access_log}
accesslog.format = "%h %t \"%r\" %>s %b"

$SERVER["socket"] == "127.0.0.1:{https_port}" {{
    ssl.engine = "enable"
    ssl.pemfile = {cert}
    ssl.privkey = {key}
}}
"#
    )
}
