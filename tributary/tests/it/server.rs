//! A real `tributary serve` process for integration tests: a fresh data directory, a free
//! port, killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tributary serve` process on a fresh data directory; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    data_dir: tempfile::TempDir,
}

impl Server {
    pub(crate) fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (child, addr) = Self::spawn(data_dir.path());
        Self {
            child,
            addr,
            data_dir,
        }
    }

    /// Stops the server with SIGTERM (it persists its buffer) and starts it again.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !status.success() {
            return Err("kill -TERM failed".to_owned());
        }
        let exit = self
            .child
            .wait()
            .map_err(|e| format!("cannot wait for tributary: {e}"))?;
        if !exit.success() {
            return Err(format!("tributary stopped with {exit}"));
        }
        let _ = std::fs::remove_file(self.data_dir.path().join("http-addr"));
        let (child, addr) = Self::spawn(self.data_dir.path());
        self.child = child;
        self.addr = addr;
        Ok(())
    }

    fn spawn(data_dir: &Path) -> (Child, String) {
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args([
                "serve",
                "--http-bind",
                "127.0.0.1:0",
                "--log-filter",
                "warn",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tributary starts");
        let addr_file = data_dir.join("http-addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "tributary did not write {}",
                addr_file.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (child, addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Writes line protocol (nanosecond timestamps) to `db` over HTTP; panics unless it is
    /// accepted.
    pub(crate) async fn write_lp(&self, db: &str, lines: &str) {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let request =
            hyper::Request::post(format!("/api/v3/write_lp?db={db}&precision=nanosecond"))
                .header("host", &self.addr)
                .body(Full::new(bytes::Bytes::from(lines.to_owned())))
                .expect("request");
        let response = sender.send_request(request).await.expect("write");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            status,
            204,
            "write failed: {}",
            String::from_utf8_lossy(&body)
        );
    }
}
