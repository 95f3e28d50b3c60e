//! SQL behaviour as sqllogictest files (`tests/slt/*.slt` at the repository root), each run
//! against its own real `tributary serve` on a free port.
//!
//! Besides SQL, a statement may write line protocol (nanosecond timestamps):
//!
//! ```text
//! statement ok
//! WRITE LP
//! cpu,host=a usage=1 10
//! ```
//!
//! `RESTART` as a statement stops the server gracefully (which persists every buffered row to
//! Parquet) and starts it again on the same data directory, so the queries after it read
//! Parquet files, and, after more writes, files and buffer together:
//!
//! ```text
//! statement ok
//! RESTART
//! ```
//!
//! Query results come back as CSV; an empty field is shown as `NULL`. Regenerate expected
//! results with `TRIBUTARY_SLT_COMPLETE=1 cargo nextest run -p tributary slt` and review the diff.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::server::Server;

/// The database every `.slt` file writes to and queries.
const DB: &str = "slt";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

/// One client connection's view of the server, as sqllogictest drives it.
struct HttpDb {
    server: Arc<Mutex<Server>>,
}

impl HttpDb {
    async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(u16, String), SltError> {
        let err = |e: &dyn std::fmt::Display| SltError(e.to_string());
        let addr = self.server.lock().unwrap().addr.clone();
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| err(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(&e))?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", &addr)
            .body(Full::new(body))
            .map_err(|e| err(&e))?;
        let response = sender.send_request(request).await.map_err(|e| err(&e))?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .collect()
            .await
            .map_err(|e| err(&e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }
}

fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for HttpDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if sql.trim() == "RESTART" {
            let server = Arc::clone(&self.server);
            tokio::task::spawn_blocking(move || server.lock().unwrap().restart())
                .await
                .map_err(|e| SltError(e.to_string()))?
                .map_err(SltError)?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(lines) = sql.trim_start().strip_prefix("WRITE LP") {
            let path = format!("/api/v3/write_lp?db={DB}&precision=nanosecond");
            let (status, body) = self
                .request("POST", &path, Bytes::from(lines.trim().to_owned()))
                .await?;
            return match status {
                204 => Ok(DBOutput::StatementComplete(0)),
                _ => Err(SltError(format!("write failed with {status}: {body}"))),
            };
        }
        let query: String = url_encode(&[("db", DB), ("q", sql), ("format", "csv")]);
        let (status, body) = self
            .request("GET", &format!("/api/v3/query_sql?{query}"), Bytes::new())
            .await?;
        if status != 200 {
            return Err(SltError(error_text(&body)));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(body.as_bytes());
        let columns = reader.headers().map_err(|e| SltError(e.to_string()))?.len();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| SltError(e.to_string()))?;
            rows.push(
                record
                    .iter()
                    .map(|v| {
                        if v.is_empty() {
                            "NULL".to_owned()
                        } else {
                            v.to_owned()
                        }
                    })
                    .collect(),
            );
        }
        if columns == 0 {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tributary"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let encoded: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={encoded}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[test]
fn sql_behaviour_matches_the_slt_files() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let complete = std::env::var_os("TRIBUTARY_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in slt_files() {
        let server = Arc::new(Mutex::new(Server::start()));
        let shared = Arc::clone(&server);
        let mut runner = sqllogictest::Runner::new(move || {
            let server = Arc::clone(&shared);
            async move { Ok::<_, SltError>(HttpDb { server }) }
        });
        let result = runtime.block_on(async {
            if complete {
                runner
                    .update_test_file(
                        &file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::default_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner
                    .run_file_async(&file)
                    .await
                    .map_err(|e| e.display(true).to_string())
            }
        });
        if let Err(e) = result {
            failures.push(format!("{}:\n{e}", file.display()));
        }
        // The runner holds clones of the server; the last one kills it.
        drop(runner);
        drop(server);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
