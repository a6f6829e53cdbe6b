//! nginx for HTTP and HTTPS: one process, no master, everything it writes
//! kept under its own directory so it runs as root without touching /var.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Result;

use crate::process::{NGINX, Proc, free_port, with_port_retries};

#[derive(Debug)]
pub(crate) struct Nginx {
    pub(crate) proc: Proc,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
}

/// Starts nginx serving `data` over HTTP and HTTPS (with the certificate in `tls`).
pub(crate) fn start(dir: &Path, data: &Path, tls: &Path) -> Result<Nginx> {
    let nginx = NGINX.check()?;
    for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        fs::create_dir_all(dir.join("tmp").join(sub))?;
    }
    with_port_retries(|| {
        let http_port = free_port()?;
        let https_port = free_port()?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(dir, data, tls, http_port, https_port))
            .map_err(anyhow::Error::from)?;
        let _ = fs::remove_file(dir.join("error.log"));
        let mut prefix = dir.display().to_string();
        prefix.push('/');
        let error_log = dir.join("error.log").display().to_string();
        let conf = conf.display().to_string();
        let mut proc = Proc::spawn(
            "nginx",
            nginx,
            &[
                "-p",
                &prefix,
                "-c",
                &conf,
                "-e",
                &error_log,
                "-g",
                "daemon off;",
            ],
            &dir.join("stderr.log"),
        )?;
        // nginx writes its startup errors to the error log, not to stderr.
        proc.log = dir.join("error.log");
        match proc.wait_ready(&[http_port, https_port]) {
            Ok(()) => Ok(Nginx {
                proc,
                http_port,
                https_port,
            }),
            Err(e) => {
                proc.kill();
                Err(e)
            }
        }
    })
}

fn config(dir: &Path, data: &Path, tls: &Path, http_port: u16, https_port: u16) -> String {
    let d = |p: &Path| format!("\"{}\"", p.display());
    let mut temp_paths = String::new();
    for module in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        // A build without the module rejects its directive as unknown.
        if module == "client_body" || !without_module(module) {
            let _ = writeln!(
                temp_paths,
                "    {module}_temp_path {};",
                d(&dir.join("tmp").join(module))
            );
        }
    }
    let data_q = d(data);
    let (pid, error_log, access_log) = (
        d(&dir.join("nginx.pid")),
        d(&dir.join("error.log")),
        d(&dir.join("access.log")),
    );
    let (cert, key) = (d(&tls.join("server.pem")), d(&tls.join("server.key")));
    format!(
        r#"# Written by pymatris-harness.
# One process, no master: a SIGKILL (from Drop or from the parent-death
# signal) then leaves no orphaned worker holding the ports.
master_process off;
worker_processes 1;
user root;
pid {pid};
error_log {error_log} warn;
worker_rlimit_nofile 8192;

events {{
    worker_connections 4096;
}}

http {{
    default_type application/octet-stream;
    access_log {access_log};
{temp_paths}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server_tokens off;

    server {{
        listen 127.0.0.1:{http_port};
        server_name localhost;
        root {data_q};
        autoindex off;
        etag on;
        # Index pages for recursive downloads (tests/e2e/mirror.rs).
        location /mirror/ {{
            autoindex on;
        }}
    }}

    server {{
        listen 127.0.0.1:{https_port} ssl http2;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {data_q};
        autoindex off;
        etag on;
    }}
}}
"#
    )
}

/// Whether this nginx was built `--without-http_<module>_module`.
fn without_module(module: &str) -> bool {
    static VERSION: OnceLock<String> = OnceLock::new();
    let v = VERSION.get_or_init(|| {
        Command::new(NGINX.path)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    });
    v.contains(&format!("--without-http_{module}_module"))
}
