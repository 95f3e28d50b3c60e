//! `tributary bench write`: the TSBS "cpu-only" load, sent over HTTP.
//!
//! Bodies are generated before the clock starts (the loader must stay cheap: it shares the
//! machine with the server), then sent by N connections in turn. Server CPU seconds and peak
//! RSS come from `/proc/<pid>` when `--server-pid` is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone, Args)]
pub(crate) struct WriteBenchConfig {
    /// Server base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8181")]
    url: String,
    /// Database to write to.
    #[arg(long, default_value = "bench")]
    db: String,
    /// Number of hosts (series) in the data set.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Hours of data, one line per host every 10 s, starting 2016-01-01T00:00:00Z.
    #[arg(long, default_value_t = 24)]
    hours: usize,
    /// Lines per request body.
    #[arg(long, default_value_t = 5000)]
    batch_lines: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Server process to read CPU time and peak RSS from.
    #[arg(long)]
    server_pid: Option<u32>,
}

const REGIONS: &[(&str, &[&str])] = &[
    (
        "us-east-1",
        &["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"],
    ),
    ("us-west-1", &["us-west-1a", "us-west-1b"]),
    ("us-west-2", &["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", &["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    ("eu-central-1", &["eu-central-1a", "eu-central-1b"]),
    ("ap-southeast-1", &["ap-southeast-1a", "ap-southeast-1b"]),
    ("ap-southeast-2", &["ap-southeast-2a", "ap-southeast-2b"]),
    ("ap-northeast-1", &["ap-northeast-1a", "ap-northeast-1c"]),
    ("sa-east-1", &["sa-east-1a", "sa-east-1b", "sa-east-1c"]),
];
const FIELDS: &[&str] = &[
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];
/// 2016-01-01T00:00:00Z in nanoseconds, TSBS's default start.
const START_NS: i64 = 1_451_606_400_000_000_000;

/// A small deterministic generator (xorshift): the data set is the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The TSBS cpu-only data set as line protocol bodies of `batch_lines` lines, in time order.
pub(crate) fn tsbs_cpu_bodies(hosts: usize, hours: usize, batch_lines: usize) -> Vec<Bytes> {
    use std::fmt::Write;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let tag_sets: Vec<String> = (0..hosts)
        .map(|h| {
            let (region, zones) = REGIONS[rng.below(REGIONS.len() as u64) as usize];
            let zone = zones[rng.below(zones.len() as u64) as usize];
            let os = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"][rng.below(3) as usize];
            let arch = ["x64", "x86"][rng.below(2) as usize];
            let team = ["SF", "NYC", "LON", "CHI"][rng.below(4) as usize];
            let env = ["production", "staging", "test"][rng.below(3) as usize];
            format!(
                "cpu,hostname=host_{h},region={region},datacenter={zone},rack={},os={os},arch={arch},team={team},service={},service_version={},service_environment={env}",
                rng.below(100),
                rng.below(20),
                rng.below(2),
            )
        })
        .collect();
    let mut values: Vec<[f64; 10]> = (0..hosts)
        .map(|_| [0.0; 10].map(|_: f64| rng.unit() * 100.0))
        .collect();
    let steps = hours * 360;
    let mut bodies = Vec::new();
    let mut body = String::with_capacity(batch_lines * 520);
    let mut lines = 0;
    for step in 0..steps {
        let ts = START_NS + step as i64 * 10_000_000_000;
        for (h, tags) in tag_sets.iter().enumerate() {
            body.push_str(tags);
            body.push(' ');
            for (i, field) in FIELDS.iter().enumerate() {
                // A bounded random walk, as TSBS does.
                let v = &mut values[h][i];
                *v = (*v + (rng.unit() - 0.5) * 2.0).clamp(0.0, 100.0);
                if i > 0 {
                    body.push(',');
                }
                let _ = write!(body, "{field}={v}");
            }
            let _ = writeln!(body, " {ts}");
            lines += 1;
            if lines == batch_lines {
                bodies.push(Bytes::from(std::mem::take(&mut body)));
                body.reserve(batch_lines * 520);
                lines = 0;
            }
        }
    }
    if lines > 0 {
        bodies.push(Bytes::from(body));
    }
    bodies
}

pub(crate) fn main(config: WriteBenchConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

async fn run(config: WriteBenchConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let authority = config
        .url
        .strip_prefix("http://")
        .context("--url must start with http://")?
        .trim_end_matches('/')
        .to_owned();
    let t = Instant::now();
    let bodies = Arc::new(tsbs_cpu_bodies(
        config.hosts,
        config.hours,
        config.batch_lines,
    ));
    let total_lines = config.hosts * config.hours * 360;
    let total_bytes: usize = bodies.iter().map(|b| b.len()).sum();
    eprintln!(
        "generated {total_lines} lines ({:.1} MB) in {} bodies in {:.1}s",
        total_bytes as f64 / 1e6,
        bodies.len(),
        t.elapsed().as_secs_f64()
    );
    let cpu_before = config.server_pid.map(server_cpu_seconds).transpose()?;
    let wal_before = wal_counters(&authority).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..config.connections {
        let (bodies, next, authority) = (Arc::clone(&bodies), Arc::clone(&next), authority.clone());
        let path = format!("/api/v3/write_lp?db={}&precision=nanosecond", config.db);
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let request = Request::post(&path)
                    .header("host", &authority)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(Full::new(body.clone()))?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let text = response.into_body().collect().await?.to_bytes();
                latencies.push(sent.elapsed());
                if !status.is_success() {
                    anyhow::bail!(
                        "write {i} failed with {status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let values = total_lines * FIELDS.len();
    println!("lines:            {total_lines}");
    println!("elapsed:          {elapsed:.2} s");
    println!("lines/s:          {:.0}", total_lines as f64 / elapsed);
    println!("values/s:         {:.0}", values as f64 / elapsed);
    println!(
        "MB/s (body):      {:.1}",
        total_bytes as f64 / 1e6 / elapsed
    );
    println!("request p50/p99:  {:.1} / {:.1} ms", pct(0.5), pct(0.99));
    let wal_after = wal_counters(&authority).await?;
    let (appends, fsyncs) = (wal_after.0 - wal_before.0, wal_after.1 - wal_before.1);
    println!(
        "WAL appends/fsyncs: {appends} / {fsyncs} ({:.2} appends per fsync: group commit)",
        appends / fsyncs.max(1.0)
    );
    if let (Some(pid), Some(before)) = (config.server_pid, cpu_before) {
        let cpu = server_cpu_seconds(pid)? - before;
        println!("server CPU:       {cpu:.2} s");
        println!("values/CPU-s:     {:.0}", values as f64 / cpu);
        println!(
            "server peak RSS:  {:.0} MiB",
            server_peak_rss_kib(pid)? as f64 / 1024.0
        );
    }
    Ok(())
}

/// (appends, fsyncs) of the server's WAL, from `/metrics`.
async fn wal_counters(authority: &str) -> anyhow::Result<(f64, f64)> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get("/metrics")
        .header("host", authority)
        .body(Full::new(Bytes::new()))?;
    let text = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    Ok((
        counter("tributary_wal_appends_total "),
        counter("tributary_wal_fsyncs_total "),
    ))
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn server_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux this runs on.
    Ok(ticks / 100.0)
}

/// Peak resident set size (VmHWM) of a process in KiB.
fn server_peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}
