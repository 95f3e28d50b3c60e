//! Flags of `tributary serve`: one place for names, environment variables and defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Default for `--max-http-request-size`.
pub(crate) const DEFAULT_MAX_HTTP_REQUEST_SIZE: &str = "10MiB";
/// Default for `--buffer-mem-limit`.
pub(crate) const DEFAULT_BUFFER_MEM_LIMIT: &str = "1GiB";
/// Default for `--query-mem-limit`.
pub(crate) const DEFAULT_QUERY_MEM_LIMIT: &str = "1GiB";
/// Default for `--persist-interval`.
pub(crate) const DEFAULT_PERSIST_INTERVAL: &str = "10s";
/// Default for `--parquet-cache-size`.
pub(crate) const DEFAULT_PARQUET_CACHE_SIZE: &str = "512MiB";
/// Default for `--compaction-interval`.
pub(crate) const DEFAULT_COMPACTION_INTERVAL: &str = "10s";
/// Default for `--compaction-target-file-size`.
pub(crate) const DEFAULT_COMPACTION_TARGET_FILE_SIZE: &str = "100MiB";
/// Default for `--compaction-mem-limit`.
pub(crate) const DEFAULT_COMPACTION_MEM_LIMIT: &str = "256MiB";
/// Default for `--gc-grace-period`.
pub(crate) const DEFAULT_GC_GRACE_PERIOD: &str = "1h";
/// Default for `--retention-check-interval`.
pub(crate) const DEFAULT_RETENTION_CHECK_INTERVAL: &str = "1m";

/// Where persisted Parquet files are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ObjectStoreKind {
    /// Files under `<data-dir>/objects`.
    File,
    /// In memory: nothing written outlives the process (tests, benchmarks). The catalog and
    /// the write-ahead log go to `<data-dir>/memory` and are deleted at start-up.
    Memory,
    /// An S3-compatible store (AWS S3, MinIO, Ceph...): see `--bucket` and the `--aws-*` flags.
    S3,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeConfig {
    /// Directory for the catalog, the write-ahead log and local objects.
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = "./tributary-data")]
    pub(crate) data_dir: PathBuf,

    /// Address for HTTP and gRPC (Flight SQL, Flight). Port 0 picks a free port; the bound
    /// address is logged and written to `<data-dir>/http-addr`.
    #[arg(long, env = "TRIBUTARY_HTTP_BIND", default_value = "127.0.0.1:8181")]
    pub(crate) http_bind: SocketAddr,

    /// Catalog store: `sqlite:PATH` (default: `sqlite:<data-dir>/catalog.sqlite`).
    #[arg(long, env = "TRIBUTARY_CATALOG")]
    pub(crate) catalog: Option<String>,

    /// Bytes of Arrow data the write buffer may hold. Over half of it the largest partitions
    /// are persisted early; a write that finds it full waits up to 3 s for room, then gets 503.
    #[arg(long, env = "TRIBUTARY_BUFFER_MEM_LIMIT", default_value = DEFAULT_BUFFER_MEM_LIMIT, value_parser = parse_size)]
    pub(crate) buffer_mem_limit: u64,

    /// Largest request body accepted, before and after gzip decompression; larger gets 413.
    #[arg(long, env = "TRIBUTARY_MAX_HTTP_REQUEST_SIZE", default_value = DEFAULT_MAX_HTTP_REQUEST_SIZE, value_parser = parse_size)]
    pub(crate) max_http_request_size: u64,

    /// Memory all running queries may use for sorts, joins and aggregates.
    #[arg(long, env = "TRIBUTARY_QUERY_MEM_LIMIT", default_value = DEFAULT_QUERY_MEM_LIMIT, value_parser = parse_size)]
    pub(crate) query_mem_limit: u64,

    /// Live databases allowed.
    #[arg(long, env = "TRIBUTARY_MAX_DATABASES", default_value_t = catalog::DEFAULT_MAX_DATABASES)]
    pub(crate) max_databases: usize,

    /// Tables allowed in one database.
    #[arg(long, env = "TRIBUTARY_MAX_TABLES_PER_DATABASE", default_value_t = catalog::DEFAULT_MAX_TABLES_PER_DATABASE)]
    pub(crate) max_tables_per_database: usize,

    /// Columns allowed in one table, `time` included.
    #[arg(long, env = "TRIBUTARY_MAX_COLUMNS_PER_TABLE", default_value_t = catalog::DEFAULT_MAX_COLUMNS_PER_TABLE)]
    pub(crate) max_columns_per_table: usize,

    /// A partition (table, UTC day) is persisted to Parquet once its oldest buffered rows are
    /// this old, e.g. `10s`, `1m`.
    #[arg(long, env = "TRIBUTARY_PERSIST_INTERVAL", default_value = DEFAULT_PERSIST_INTERVAL, value_parser = humantime::parse_duration)]
    pub(crate) persist_interval: Duration,

    /// Object store for Parquet files.
    #[arg(
        long,
        env = "TRIBUTARY_OBJECT_STORE",
        value_enum,
        default_value = "file"
    )]
    pub(crate) object_store: ObjectStoreKind,

    /// Bucket for `--object-store s3`.
    #[arg(long, env = "TRIBUTARY_BUCKET")]
    pub(crate) bucket: Option<String>,

    /// S3 endpoint URL, for S3-compatible servers (e.g. `http://127.0.0.1:9000` for MinIO);
    /// requests are path-style (`<endpoint>/<bucket>/<key>`). Also read from `AWS_ENDPOINT_URL`
    /// or `AWS_ENDPOINT`.
    #[arg(long, env = "TRIBUTARY_AWS_ENDPOINT")]
    pub(crate) aws_endpoint: Option<String>,

    /// S3 region (default `us-east-1`). Also read from `AWS_DEFAULT_REGION` or `AWS_REGION`.
    #[arg(long, env = "TRIBUTARY_AWS_DEFAULT_REGION")]
    pub(crate) aws_default_region: Option<String>,

    /// S3 access key id. Also read from `AWS_ACCESS_KEY_ID`.
    #[arg(long, env = "TRIBUTARY_AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub(crate) aws_access_key_id: Option<String>,

    /// S3 secret access key. Also read from `AWS_SECRET_ACCESS_KEY`.
    #[arg(long, env = "TRIBUTARY_AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub(crate) aws_secret_access_key: Option<String>,

    /// S3 session token, for temporary credentials. Also read from `AWS_SESSION_TOKEN`.
    #[arg(long, env = "TRIBUTARY_AWS_SESSION_TOKEN", hide_env_values = true)]
    pub(crate) aws_session_token: Option<String>,

    /// Allow a plain-HTTP `--aws-endpoint`. Also read from `AWS_ALLOW_HTTP`.
    #[arg(long, env = "TRIBUTARY_AWS_ALLOW_HTTP")]
    pub(crate) aws_allow_http: bool,

    /// Memory for cached Parquet data (file metadata and recently read or written files).
    /// 0 turns the cache off.
    #[arg(long, env = "TRIBUTARY_PARQUET_CACHE_SIZE", default_value = DEFAULT_PARQUET_CACHE_SIZE, value_parser = parse_size)]
    pub(crate) parquet_cache_size: u64,

    /// How often the compactor looks for partitions to merge, e.g. `10s`.
    #[arg(long, env = "TRIBUTARY_COMPACTION_INTERVAL", default_value = DEFAULT_COMPACTION_INTERVAL, value_parser = humantime::parse_duration)]
    pub(crate) compaction_interval: Duration,

    /// Level-0 (freshly persisted) files that make a partition of the current day worth
    /// merging; past days are merged as soon as they have new files.
    #[arg(long, env = "TRIBUTARY_COMPACTION_L0_THRESHOLD", default_value_t = compactor::DEFAULT_L0_THRESHOLD)]
    pub(crate) compaction_l0_threshold: usize,

    /// Largest file the compactor writes; a larger partition is cut by time into several.
    #[arg(long, env = "TRIBUTARY_COMPACTION_TARGET_FILE_SIZE", default_value = DEFAULT_COMPACTION_TARGET_FILE_SIZE, value_parser = parse_size)]
    pub(crate) compaction_target_file_size: u64,

    /// Memory the compactor's merge may hold.
    #[arg(long, env = "TRIBUTARY_COMPACTION_MEM_LIMIT", default_value = DEFAULT_COMPACTION_MEM_LIMIT, value_parser = parse_size)]
    pub(crate) compaction_mem_limit: u64,

    /// How long an object replaced by compaction, or never recorded (a crashed upload), is
    /// kept before it is deleted: longer than any query runs.
    #[arg(long, env = "TRIBUTARY_GC_GRACE_PERIOD", default_value = DEFAULT_GC_GRACE_PERIOD, value_parser = humantime::parse_duration)]
    pub(crate) gc_grace_period: Duration,

    /// How often partitions past their database's retention period are dropped (queries leave
    /// such rows out at once).
    #[arg(long, env = "TRIBUTARY_RETENTION_CHECK_INTERVAL", default_value = DEFAULT_RETENTION_CHECK_INTERVAL, value_parser = humantime::parse_duration)]
    pub(crate) retention_check_interval: Duration,

    /// Log filter in `tracing` syntax, e.g. `info` or `info,ingester=debug`.
    #[arg(long, env = "TRIBUTARY_LOG_FILTER", default_value = "info")]
    pub(crate) log_filter: String,
}

impl ServeConfig {
    /// Checks values clap cannot, naming the flag and variable on failure.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let min = |value: u64, flag: &str, env: &str, least: u64| {
            if value < least {
                Err(format!(
                    "--{flag} ({env}) must be at least {least} bytes, got {value}"
                ))
            } else {
                Ok(())
            }
        };
        min(
            self.max_http_request_size,
            "max-http-request-size",
            "TRIBUTARY_MAX_HTTP_REQUEST_SIZE",
            1024,
        )?;
        min(
            self.buffer_mem_limit,
            "buffer-mem-limit",
            "TRIBUTARY_BUFFER_MEM_LIMIT",
            1024 * 1024,
        )?;
        min(
            self.query_mem_limit,
            "query-mem-limit",
            "TRIBUTARY_QUERY_MEM_LIMIT",
            1024 * 1024,
        )?;
        for (value, flag, env) in [
            (
                self.max_databases,
                "max-databases",
                "TRIBUTARY_MAX_DATABASES",
            ),
            (
                self.max_tables_per_database,
                "max-tables-per-database",
                "TRIBUTARY_MAX_TABLES_PER_DATABASE",
            ),
            (
                self.max_columns_per_table,
                "max-columns-per-table",
                "TRIBUTARY_MAX_COLUMNS_PER_TABLE",
            ),
        ] {
            if value == 0 {
                return Err(format!("--{flag} ({env}) must be at least 1, got 0"));
            }
        }
        if self.max_columns_per_table < 2 {
            return Err("--max-columns-per-table (TRIBUTARY_MAX_COLUMNS_PER_TABLE) must be at least 2: `time` and one field".into());
        }
        if self.persist_interval.is_zero() {
            return Err(
                "--persist-interval (TRIBUTARY_PERSIST_INTERVAL) must be longer than 0s".into(),
            );
        }
        if self.compaction_interval.is_zero() {
            return Err(
                "--compaction-interval (TRIBUTARY_COMPACTION_INTERVAL) must be longer than 0s"
                    .into(),
            );
        }
        if self.retention_check_interval.is_zero() {
            return Err(
                "--retention-check-interval (TRIBUTARY_RETENTION_CHECK_INTERVAL) must be longer than 0s"
                    .into(),
            );
        }
        if self.compaction_l0_threshold < 2 {
            return Err(format!(
                "--compaction-l0-threshold (TRIBUTARY_COMPACTION_L0_THRESHOLD) must be at least 2, got {}",
                self.compaction_l0_threshold
            ));
        }
        min(
            self.compaction_target_file_size,
            "compaction-target-file-size",
            "TRIBUTARY_COMPACTION_TARGET_FILE_SIZE",
            1024,
        )?;
        min(
            self.compaction_mem_limit,
            "compaction-mem-limit",
            "TRIBUTARY_COMPACTION_MEM_LIMIT",
            1024 * 1024,
        )?;
        if self.object_store == ObjectStoreKind::S3 && self.bucket.is_none() {
            return Err(
                "--object-store s3 needs --bucket (TRIBUTARY_BUCKET): the bucket must exist".into(),
            );
        }
        if let Some(endpoint) = &self.aws_endpoint
            && endpoint.starts_with("http://")
            && !self.aws_allow_http
        {
            return Err(format!(
                "--aws-endpoint (TRIBUTARY_AWS_ENDPOINT, AWS_ENDPOINT_URL) `{endpoint}` is plain HTTP: add --aws-allow-http (TRIBUTARY_AWS_ALLOW_HTTP=true, AWS_ALLOW_HTTP=true) to allow it"
            ));
        }
        if self.catalog.is_some() && self.object_store == ObjectStoreKind::Memory {
            return Err(
                "--catalog (TRIBUTARY_CATALOG) cannot be used with --object-store memory: the catalog would outlive the files it records, which are lost when the process exits; use --object-store file or s3 to keep a catalog"
                    .to_owned(),
            );
        }
        if let Some(c) = &self.catalog
            && !c.starts_with("sqlite:")
        {
            return Err(format!(
                "--catalog (TRIBUTARY_CATALOG) must be `sqlite:PATH` in this version, got `{c}`"
            ));
        }
        Ok(())
    }

    /// Fills the S3 settings given neither as flags nor as `TRIBUTARY_*` variables from the
    /// usual AWS variables (`var` looks one up), as AWS's own tools name them.
    pub(crate) fn with_aws_environment(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let first = |names: &[&str]| names.iter().find_map(|n| var(n).filter(|v| !v.is_empty()));
        let fill = |slot: &mut Option<String>, names: &[&str]| {
            if slot.is_none() {
                *slot = first(names);
            }
        };
        fill(
            &mut self.aws_endpoint,
            &["AWS_ENDPOINT_URL", "AWS_ENDPOINT"],
        );
        fill(
            &mut self.aws_default_region,
            &["AWS_DEFAULT_REGION", "AWS_REGION"],
        );
        // Credentials come as a set: keys given by flag are not paired with a session token
        // (or secret) some other tool left in the environment.
        if self.aws_access_key_id.is_none() {
            fill(&mut self.aws_access_key_id, &["AWS_ACCESS_KEY_ID"]);
            fill(&mut self.aws_secret_access_key, &["AWS_SECRET_ACCESS_KEY"]);
            fill(&mut self.aws_session_token, &["AWS_SESSION_TOKEN"]);
        }
        if !self.aws_allow_http {
            self.aws_allow_http = first(&["AWS_ALLOW_HTTP"]).is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
            });
        }
        self
    }

    /// The S3 region: `--aws-default-region`, or `us-east-1`.
    pub(crate) fn aws_region(&self) -> &str {
        self.aws_default_region.as_deref().unwrap_or("us-east-1")
    }

    /// This configuration with its secrets blanked, for the log.
    pub(crate) fn redacted(&self) -> Self {
        let hide = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>".to_owned());
        Self {
            aws_secret_access_key: hide(&self.aws_secret_access_key),
            aws_session_token: hide(&self.aws_session_token),
            ..self.clone()
        }
    }

    /// Path of the SQLite catalog file.
    pub(crate) fn catalog_path(&self) -> PathBuf {
        match &self.catalog {
            Some(c) => PathBuf::from(c.trim_start_matches("sqlite:")),
            None => self.state_dir().join("catalog.sqlite"),
        }
    }

    /// Directory of the default catalog and the write-ahead log: `--data-dir`, or with
    /// `--object-store memory` its `memory/` directory, whose catalog and log are deleted at
    /// start-up (having outlived the objects, they would name files that are gone).
    pub(crate) fn state_dir(&self) -> PathBuf {
        match self.object_store {
            ObjectStoreKind::Memory => self.data_dir.join("memory"),
            ObjectStoreKind::File | ObjectStoreKind::S3 => self.data_dir.clone(),
        }
    }
}

/// Parses a size such as `1024`, `64KiB`, `10MiB`, `1GB` into bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("`{s}` is not a size: expected a number with an optional unit such as 64MiB")
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`: use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ));
        }
    };
    Ok((number * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn parsed(args: &[&str], env: &[(&str, &str)]) -> ServeConfig {
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap()
            .serve
            .with_aws_environment(|k| env.get(k).cloned())
    }

    #[test]
    fn s3_settings_come_from_flags_before_the_usual_aws_variables() {
        let c = parsed(
            &["--aws-endpoint", "http://flag:9000"],
            &[
                ("AWS_ENDPOINT_URL", "http://env:9000"),
                ("AWS_REGION", "eu-west-3"),
                ("AWS_ACCESS_KEY_ID", "key"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_ALLOW_HTTP", "true"),
            ],
        );
        assert_eq!(c.aws_endpoint.as_deref(), Some("http://flag:9000"));
        assert_eq!(c.aws_region(), "eu-west-3");
        assert_eq!(c.aws_access_key_id.as_deref(), Some("key"));
        assert_eq!(c.aws_secret_access_key.as_deref(), Some("secret"));
        assert!(c.aws_allow_http);

        let c = parsed(
            &["--aws-default-region", "us-west-2"],
            &[
                ("AWS_ENDPOINT", "http://old-name:9000"),
                ("AWS_DEFAULT_REGION", "eu-west-3"),
                ("AWS_ALLOW_HTTP", "false"),
            ],
        );
        assert_eq!(c.aws_endpoint.as_deref(), Some("http://old-name:9000"));
        assert_eq!(c.aws_region(), "us-west-2");
        assert!(!c.aws_allow_http);
        assert_eq!(parsed(&[], &[]).aws_region(), "us-east-1");

        let keys = parsed(
            &[
                "--aws-access-key-id",
                "minio",
                "--aws-secret-access-key",
                "minio-secret",
            ],
            &[
                ("AWS_ACCESS_KEY_ID", "sso"),
                ("AWS_SECRET_ACCESS_KEY", "sso-secret"),
                ("AWS_SESSION_TOKEN", "sso-token"),
            ],
        );
        assert_eq!(keys.aws_access_key_id.as_deref(), Some("minio"));
        assert_eq!(keys.aws_secret_access_key.as_deref(), Some("minio-secret"));
        assert_eq!(keys.aws_session_token, None, "a token of other credentials");
    }

    #[test]
    fn the_logged_configuration_hides_secrets() {
        let c = parsed(
            &[],
            &[
                ("AWS_SECRET_ACCESS_KEY", "hunter2"),
                ("AWS_SESSION_TOKEN", "token"),
            ],
        );
        let shown = format!("{:?}", c.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("token\""),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 3 * (1 << 29));
        assert!(parse_size("ten").is_err());
        assert!(
            parse_size("10 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }
}
