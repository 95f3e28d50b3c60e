//! Parse throughput on TSBS cpu-shaped lines (10 tags, 10 float fields, a timestamp).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-lp cargo run --release -p line_protocol --example parse_bench [LINES] [RUNS]
//! ```
//!
//! Builds one body of LINES lines (default 100,000) with varied hosts and values, parses it
//! in RUNS samples (default 15) with one reused `ParsedLine`, and prints the rates by wall
//! clock and by this thread's CPU time (from `/proc/thread-self/schedstat`, Linux only). On
//! a shared machine the CPU-time rate is the steadier one. For scale it also times a bare
//! `memchr` newline scan of the same body, the floor any parser pays.

use std::hint::black_box;
use std::time::Instant;

use line_protocol::{FieldValue, LineParser, ParsedLine};

const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
    "usage_irq",
];

const REGIONS: [(&str, &str); 4] = [
    ("eu-central-1", "eu-central-1a"),
    ("us-west-2", "us-west-2b"),
    ("ap-southeast-1", "ap-southeast-1c"),
    ("sa-east-1", "sa-east-1a"),
];

/// xorshift64*: deterministic values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in [0, 100) with 16 fraction digits, as TSBS writes them.
    fn usage(&mut self) -> String {
        let whole = self.next() % 100;
        let fraction = self.next() % 10_000_000_000_000_000;
        format!("{whole}.{fraction:016}")
    }
}

fn body(lines: usize) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(lines * 420);
    for i in 0..lines {
        let host = i % 4000;
        let (region, datacenter) = REGIONS[host % REGIONS.len()];
        out.push_str(&format!(
            "cpu,hostname=host_{host},region={region},datacenter={datacenter},rack={},\
             os=Ubuntu15.10,arch=x86,team=SF,service={},service_version={},\
             service_environment=test ",
            host % 100,
            host % 20,
            host % 2,
        ));
        for (j, field) in FIELDS.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(field);
            out.push('=');
            out.push_str(&rng.usage());
        }
        let time_ns = 1_451_606_400_000_000_000i64 + (i / 4000) as i64 * 10_000_000_000;
        out.push_str(&format!(" {time_ns}\n"));
    }
    out.into_bytes()
}

/// Parses every line, returning a checksum so the work cannot be optimised away.
fn parse(body: &[u8]) -> (usize, f64) {
    let mut parser = LineParser::new(body);
    let mut line = ParsedLine::default();
    let mut lines = 0;
    let mut sum = 0.0;
    while let Some(result) = parser.next_line(&mut line) {
        result.expect("benchmark lines are valid");
        lines += 1;
        if let Some((_, FieldValue::F64(v))) = line.fields.first() {
            sum += v;
        }
        black_box(&line);
    }
    (lines, sum)
}

/// CPU time this thread has run, if the kernel reports it.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Median and best lines/s of `runs` calls of `f`.
struct Rates {
    median: f64,
    best: f64,
}

impl std::fmt::Display for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.2} M lines/s ({:.0} ns/line), best {:.2} M",
            self.median / 1e6,
            1e9 / self.median,
            self.best / 1e6
        )
    }
}

/// Rates of `runs` samples of `reps` calls of `f` each, by wall clock and (if available) by
/// CPU time. The kernel updates a thread's CPU time only every few milliseconds, so a
/// sample must last far longer than that.
fn measure(
    lines: usize,
    runs: usize,
    reps: usize,
    mut f: impl FnMut() -> usize,
) -> (Rates, Option<Rates>) {
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    let total = (lines * reps) as f64;
    for _ in 0..runs {
        let cpu_start = thread_cpu_ns();
        let start = Instant::now();
        for _ in 0..reps {
            assert_eq!(f(), lines);
        }
        wall.push(total / start.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ns()) {
            cpu.push(total / ((b - a) as f64 / 1e9));
        }
    }
    (
        rates(&mut wall),
        (cpu.len() == runs).then(|| rates(&mut cpu)),
    )
}

fn rates(samples: &mut [f64]) -> Rates {
    samples.sort_by(f64::total_cmp);
    Rates {
        median: samples[samples.len() / 2],
        best: samples[samples.len() - 1],
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let lines: usize = args
        .next()
        .map_or(100_000, |a| a.parse().expect("LINES is a number"));
    let runs: usize = args
        .next()
        .map_or(15, |a| a.parse().expect("RUNS is a number"));

    let body = body(lines);
    let (parsed, _) = parse(&body); // warm up
    assert_eq!(parsed, lines);

    // About 0.25 s per sample at 1 M lines/s.
    let reps = (250_000 / lines).max(1);
    let (wall, cpu) = measure(lines, runs, reps, || {
        let (parsed, sum) = parse(black_box(&body));
        black_box(sum);
        parsed
    });
    let (scan_wall, scan_cpu) = measure(lines, runs, reps * 20, || {
        memchr::memchr_iter(b'\n', black_box(&body)).count()
    });
    let per_line = body.len() as f64 / lines as f64;
    let cpu_text = |r: Option<Rates>| r.map_or("n/a".to_owned(), |r| r.to_string());
    println!("{lines} lines of {per_line:.0} bytes, {runs} runs:");
    println!("  parse, by CPU time:        {}", cpu_text(cpu));
    println!(
        "  parse, by wall clock:      {wall} ({:.0} MB/s)",
        wall.median * per_line / 1e6
    );
    println!("  newline scan, by CPU time: {}", cpu_text(scan_cpu));
    println!("  newline scan, by wall:     {scan_wall}");
}
