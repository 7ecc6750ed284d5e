//! The daemon's configuration: a TOML file (every key optional, defaults embedded), then `SPOOL_SECTION__KEY`
//! environment overrides, then command-line flags. `config/spool.toml` documents every key with its default; keep it
//! in step with the structs here.
//!
//! Errors name the file and the key (`config/spool.toml: storage.durability: unknown variant …`), because the person
//! reading them is an operator with a broken deploy, not the author of this code.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use spool_core::{Jitter, QueueName, RetryPolicy};
use spool_engine::{EngineConfig, QueueSettings};
use spool_store::{Durability, SledConfig};

/// A configuration problem, naming where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or "environment", or "defaults") the bad value came from.
    pub source_name: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: where data lives.
    pub server: ServerSection,
    /// `[storage]`: durability and sled tuning.
    pub storage: StorageSection,
    /// `[limits]`: request size limits.
    pub limits: LimitsSection,
    /// `[log]`: log format and level.
    pub log: LogSection,
    /// `[queue_defaults]`: settings of queues created on first use, inherited by `[queues.NAME]`.
    pub queue_defaults: QueueSection,
    /// `[queues.NAME]`: queues that exist from the start (besides `critical`, `default`, `bulk`), with overrides.
    pub queues: BTreeMap<String, QueueOverrides>,
    /// `[resp]`: the Redis-protocol listener.
    pub resp: RespSection,
    /// `[grpc]`: the gRPC listener.
    pub grpc: GrpcSection,
    /// `[auth]`: the shared token of every door that authenticates.
    pub auth: AuthSection,
    /// `[[schedules]]`: periodic jobs, applied at every start (see docs/scheduling.md).
    pub schedules: Vec<spool_scheduler::ScheduleSpec>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Data directory. Default `./data`.
    pub data_dir: PathBuf,
    /// Unknown queue names are created on first use (default true); false rejects them with `NOQUEUE`.
    pub auto_create_queues: bool,
    /// Threads running the doors and the engine; 0 (the default) means one fewer than the CPUs, at least one. See
    /// [`ServerSection::workers`].
    pub worker_threads: usize,
}

impl ServerSection {
    /// The async worker threads to start. Under load the store's own threads (the log writer and the checkpointer)
    /// want about a core between them; a worker on every CPU as well takes that core from them and from each other.
    /// On two cores one worker served unpipelined pushes 7–20% faster than two, other loads level (docs/benchmarks.md).
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
            n => n,
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            auto_create_queues: true,
            worker_threads: 0,
        }
    }
}

/// How an acknowledged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fsync before every reply (group commit). Default.
    #[default]
    Always,
    /// fsync every `storage.interval`.
    Interval,
    /// Leave it to sled's background flush.
    None,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// `always` (default), `interval` or `none`.
    pub durability: DurabilityMode,
    /// fsync period for `durability = "interval"`. Default 1 s.
    #[serde(deserialize_with = "human_duration")]
    pub interval: Duration,
    /// sled's page cache in MiB. Default 64.
    pub cache_mb: u64,
    /// Most mutations per group commit. Default 4096.
    pub max_group_mutations: usize,
    /// Write-ahead log segment size in MiB; a full segment is checkpointed into sled. Default 32.
    pub wal_segment_mb: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            durability: DurabilityMode::Always,
            interval: Duration::from_secs(1),
            cache_mb: 64,
            max_group_mutations: 4_096,
            wal_segment_mb: 32,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest job payload in bytes. Default 1048576 (1 MiB).
    pub max_payload_bytes: usize,
    /// Most jobs per enqueue batch or reservation. Default 1000.
    pub max_batch: usize,
    /// Most payload bytes one reservation hands out (it stops before the job that would pass this, and always hands
    /// out one). Default 3145728 (3 MiB), under the 4 MiB a stock gRPC client accepts.
    pub max_reserve_bytes: usize,
    /// Payloads held in memory, MiB, before those of checkpointed jobs are dropped and read back on delivery.
    /// Default 256.
    pub payload_memory_mb: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            max_payload_bytes: engine.max_payload_bytes,
            max_batch: engine.max_batch,
            max_reserve_bytes: engine.max_reserve_bytes,
            payload_memory_mb: engine.payload_memory_bytes / (1024 * 1024),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines. Default.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `spool_engine=debug,info`. Default `info`; `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Retry backoff as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffSection {
    /// First retry delay. Default 1 s.
    #[serde(deserialize_with = "human_duration")]
    pub initial: Duration,
    /// Growth per failure. Default 2.0.
    pub multiplier: f64,
    /// Cap. Default 1 h.
    #[serde(deserialize_with = "human_duration")]
    pub max: Duration,
    /// `full` (default), `equal` or `none`.
    pub jitter: Jitter,
}

impl Default for BackoffSection {
    fn default() -> Self {
        let p = RetryPolicy::default();
        Self {
            initial: Duration::from_millis(p.initial_ms),
            multiplier: p.multiplier,
            max: Duration::from_millis(p.max_ms),
            jitter: p.jitter,
        }
    }
}

impl From<&BackoffSection> for RetryPolicy {
    fn from(b: &BackoffSection) -> Self {
        RetryPolicy {
            initial_ms: b.initial.as_millis() as u64,
            multiplier: b.multiplier,
            max_ms: b.max.as_millis() as u64,
            jitter: b.jitter,
        }
    }
}

/// `[queue_defaults]`: every key of a queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSection {
    /// Lease per reservation. Default 30 s.
    #[serde(deserialize_with = "human_duration")]
    pub lease: Duration,
    /// Reservations before dead-lettering. Default 25.
    pub max_attempts: u32,
    /// Retry backoff.
    pub backoff: BackoffSection,
    /// Start paused. Default false.
    pub paused: bool,
}

impl Default for QueueSection {
    fn default() -> Self {
        let q = QueueSettings::default();
        Self {
            lease: Duration::from_millis(q.lease_ms),
            max_attempts: q.max_attempts,
            backoff: BackoffSection::default(),
            paused: q.paused,
        }
    }
}

impl From<&QueueSection> for QueueSettings {
    fn from(q: &QueueSection) -> Self {
        QueueSettings {
            lease_ms: q.lease.as_millis() as u64,
            max_attempts: q.max_attempts,
            retry: (&q.backoff).into(),
            paused: q.paused,
        }
    }
}

/// `[queues.NAME]`: each key overrides `[queue_defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueOverrides {
    /// Lease per reservation.
    #[serde(deserialize_with = "optional_human_duration")]
    pub lease: Option<Duration>,
    /// Reservations before dead-lettering.
    pub max_attempts: Option<u32>,
    /// Retry backoff: each key given overrides that key of `[queue_defaults.backoff]`.
    pub backoff: BackoffOverrides,
    /// Start paused.
    pub paused: Option<bool>,
}

/// `[queues.NAME.backoff]`: each key overrides that of `[queue_defaults.backoff]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffOverrides {
    /// First retry delay.
    #[serde(deserialize_with = "optional_human_duration")]
    pub initial: Option<Duration>,
    /// Growth per failure.
    pub multiplier: Option<f64>,
    /// Cap.
    #[serde(deserialize_with = "optional_human_duration")]
    pub max: Option<Duration>,
    /// `full`, `equal` or `none`.
    pub jitter: Option<Jitter>,
}

impl BackoffOverrides {
    /// `defaults` with these keys in place of its own.
    fn over(&self, defaults: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            initial_ms: self.initial.map_or(defaults.initial_ms, |d| d.as_millis() as u64),
            multiplier: self.multiplier.unwrap_or(defaults.multiplier),
            max_ms: self.max.map_or(defaults.max_ms, |d| d.as_millis() as u64),
            jitter: self.jitter.unwrap_or(defaults.jitter),
        }
    }
}

/// `[resp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespSection {
    /// Whether to listen at all. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:6379`, so `redis://localhost:6379` URLs work unchanged.
    pub listen: SocketAddr,
    /// Password for `AUTH`; empty (default) falls back to `auth.token`, and with both empty there is no authentication.
    pub password: String,
    /// Most simultaneous connections. Default 10000.
    pub max_connections: usize,
    /// Close a connection idle this long; `0s` (default) never does, like Redis's `timeout 0`.
    #[serde(deserialize_with = "human_duration")]
    pub idle_timeout: Duration,
    /// Largest bulk string in bytes. Default 2 MiB (above the payload limit, so big payloads get `TOOBIG`).
    pub max_bulk_bytes: usize,
    /// Most elements in one array frame. Default 10000.
    pub max_array_len: usize,
    /// Longest inline command line in bytes. Default 65536.
    pub max_inline_bytes: usize,
}

impl Default for RespSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 6379)),
            password: String::new(),
            max_connections: 10_000,
            idle_timeout: Duration::ZERO,
            max_bulk_bytes: 2 * 1024 * 1024,
            max_array_len: 10_000,
            max_inline_bytes: 64 * 1024,
        }
    }
}

/// `[grpc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSection {
    /// Whether to listen at all. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:50051`, the gRPC convention.
    pub listen: SocketAddr,
    /// Largest request message in bytes. Default 4194304 (4 MiB, tonic's default): above the payload limit, so an
    /// oversized payload gets `TOOBIG` from the engine rather than a transport error.
    pub max_message_bytes: usize,
}

impl Default for GrpcSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[auth]`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Shared bearer token: gRPC calls must send `authorization: Bearer <token>`, and RESP clients `AUTH <token>`
    /// unless `resp.password` is set. Empty (default) means no authentication. Env: `SPOOL_AUTH__TOKEN`.
    pub token: String,
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Configs are logged and printed in errors; the secret must not be.
        let shown = if self.token.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthSection").field("token", &shown).finish()
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\" or \"5m\": {e}")))
}

fn optional_human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    human_duration(d).map(Some)
}

/// Where a configuration came from, for error messages.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// Embedded defaults plus environment.
    Defaults,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Defaults => f.write_str("built-in defaults"),
        }
    }
}

impl Config {
    /// Reads `file` (if any), applies `SPOOL_SECTION__KEY` overrides from `env`, and validates the result.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let origin = file.map_or(Origin::Defaults, |p| Origin::File(p.to_path_buf()));
        let err = |message: String| ConfigError {
            source_name: origin.to_string(),
            message,
        };
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
                // Parsing to a plain table first gives syntax errors with line and column.
                text.parse::<toml::Table>()
                    .map_err(|e| err(e.to_string().trim_end().to_string()))?
            }
            None => toml::Table::new(),
        };
        let mut applied = apply_env(&mut table, env).map_err(|message| ConfigError {
            source_name: "environment".into(),
            message,
        })?;
        let config: Config = loop {
            let e = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
                Ok(config) => break config,
                Err(e) => e,
            };
            let key = e.path().to_string();
            // `SPOOL_AUTH__TOKEN=12345678` read as a number where the key wants text: it is the text. (Only there:
            // `SPOOL_RESP__MAX_CONNECTIONS=-1` must keep its own error, not one about a string.)
            let wants_text = e.inner().to_string().contains("expected a string");
            if let Some(var) = applied.iter_mut().find(|a| wants_text && a.key == key && !a.text) {
                var.text = true;
                set_key(&mut table, &var.path, toml::Value::String(var.raw.clone())).expect("set before");
                continue;
            }
            let from_env = applied
                .iter()
                .any(|a| key.starts_with(a.key.as_str()) || a.key.starts_with(&key));
            return Err(ConfigError {
                source_name: if from_env {
                    "environment".into()
                } else {
                    origin.to_string()
                },
                // toml repeats the key on a last line ("in `storage.durability`"); we already lead with it.
                message: format!("{key}: {}", e.inner().to_string().lines().next().unwrap_or_default()),
            });
        };
        config.validate().map_err(|message| {
            // Messages lead with the key they refuse (`resp.max_bulk_bytes: …`, `queues.x: …`, `resp: …`) and name
            // any other key the check compares it with: blame the environment when a variable set one of them.
            let key = message.split(':').next().unwrap_or_default();
            let from_env = applied
                .iter()
                .any(|a| a.key.starts_with(&format!("{key}.")) || message.contains(a.key.as_str()));
            ConfigError {
                source_name: if from_env {
                    "environment".into()
                } else {
                    origin.to_string()
                },
                message,
            }
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.storage.durability == DurabilityMode::Interval && self.storage.interval.is_zero() {
            return Err("storage.interval: must be more than 0s with durability = \"interval\"".into());
        }
        if !(1..=1024 * 1024).contains(&self.storage.cache_mb) {
            return Err("storage.cache_mb: must be between 1 and 1048576".into());
        }
        if !(1..=1024).contains(&self.storage.wal_segment_mb) {
            return Err("storage.wal_segment_mb: must be between 1 and 1024".into());
        }
        if self.grpc.max_message_bytes < 1024 {
            return Err("grpc.max_message_bytes: must be at least 1024".into());
        }
        if self.limits.max_payload_bytes == 0 || self.limits.max_batch == 0 || self.limits.max_reserve_bytes == 0 {
            return Err("limits: max_payload_bytes, max_batch and max_reserve_bytes must be at least 1".into());
        }
        // Room for a job's other fields: a job of the largest payload must fit in one request.
        if self.grpc.enabled && self.grpc.max_message_bytes < self.limits.max_payload_bytes.saturating_add(4096) {
            return Err(format!(
                "grpc.max_message_bytes: must be at least limits.max_payload_bytes + 4096 ({}), or the largest \
                 payload cannot be sent over gRPC",
                self.limits.max_payload_bytes.saturating_add(4096)
            ));
        }
        let resp = &self.resp;
        if [
            resp.max_connections,
            resp.max_bulk_bytes,
            resp.max_array_len,
            resp.max_inline_bytes,
        ]
        .contains(&0)
        {
            return Err(
                "resp: max_connections, max_bulk_bytes, max_array_len and max_inline_bytes must be at least 1".into(),
            );
        }
        // Above the payload limit, so that a push of a payload too large gets `TOOBIG` and the connection lives on,
        // instead of a protocol error that closes it.
        if resp.enabled && resp.max_bulk_bytes <= self.limits.max_payload_bytes {
            return Err(format!(
                "resp.max_bulk_bytes: must be more than limits.max_payload_bytes ({}), or a payload too large closes \
                 the connection instead of getting TOOBIG",
                self.limits.max_payload_bytes
            ));
        }
        check_log_level(&self.log.level)?;
        // It travels in an HTTP header (`authorization: Bearer <token>`), which cannot carry spaces or control bytes.
        if !self.auth.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("auth.token: must be printable ASCII without spaces (it is sent in an HTTP header)".into());
        }
        let engine = self.engine_config()?;
        spool_scheduler::check_queues(&self.schedule_defs()?, &engine)?;
        Ok(())
    }

    /// The `[[schedules]]` of the file, checked; errors read `schedules.NAME: FIELD: problem`.
    pub fn schedule_defs(&self) -> Result<Vec<spool_core::ScheduleDef>, String> {
        spool_scheduler::validate_specs(&self.schedules)
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> Result<EngineConfig, String> {
        let defaults = QueueSettings::from(&self.queue_defaults);
        defaults
            .validate()
            .map_err(|e| format!("queue_defaults: {}", e.message))?;
        let mut engine = EngineConfig {
            max_payload_bytes: self.limits.max_payload_bytes,
            max_batch: self.limits.max_batch,
            max_reserve_bytes: self.limits.max_reserve_bytes,
            payload_memory_bytes: self.limits.payload_memory_mb.saturating_mul(1024 * 1024),
            auto_create_queues: self.server.auto_create_queues,
            queue_defaults: defaults.clone(),
            ..EngineConfig::default()
        };
        for settings in engine.queues.values_mut() {
            *settings = defaults.clone();
        }
        for (name, o) in &self.queues {
            let queue = QueueName::new(name).map_err(|e| format!("queues.{name}: {}", e.message))?;
            let settings = QueueSettings {
                lease_ms: o.lease.map_or(defaults.lease_ms, |d| d.as_millis() as u64),
                max_attempts: o.max_attempts.unwrap_or(defaults.max_attempts),
                retry: o.backoff.over(defaults.retry),
                paused: o.paused.unwrap_or(defaults.paused),
            };
            settings
                .validate()
                .map_err(|e| format!("queues.{name}: {}", e.message))?;
            engine.queues.insert(queue, settings);
        }
        Ok(engine)
    }

    /// The store's settings.
    pub fn store_config(&self) -> SledConfig {
        let mut store = SledConfig::new(&self.server.data_dir);
        store.durability = match self.storage.durability {
            DurabilityMode::Always => Durability::Always,
            DurabilityMode::Interval => Durability::Interval(self.storage.interval),
            DurabilityMode::None => Durability::None,
        };
        store.cache_bytes = self.storage.cache_mb * 1024 * 1024;
        store.max_group_mutations = self.storage.max_group_mutations;
        store.segment_bytes = self.storage.wal_segment_mb * 1024 * 1024;
        store
    }
}

/// A tracing filter treats any word as a target name, so a misspelt level (`inof`) would silently log nothing at all:
/// the filter must parse, and must let Spool's own lines through (a level on its own, or a `spool…` target).
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log.level: {level:?}: {e}"))?;
    let reaches_spool = level.split(',').map(str::trim).any(|directive| {
        let target = directive.split('=').next().unwrap_or_default();
        LEVELS.contains(&directive.to_ascii_lowercase().as_str()) || target.starts_with("spool")
    });
    if reaches_spool {
        Ok(())
    } else {
        Err(format!(
            "log.level: {level:?} sets no level for Spool's own logs: give one of {} (alone or after other \
             directives, e.g. \"tower=debug,info\") or a spool target (\"spool_engine=debug\")",
            LEVELS.join(", ")
        ))
    }
}

/// One `SPOOL_A__B=value` variable, as applied.
struct EnvKey {
    /// `a.b`.
    key: String,
    path: Vec<String>,
    raw: String,
    /// Whether it went in as a string (it did not read as another TOML value, or it was retried as text).
    text: bool,
}

/// Applies `SPOOL_A__B=value` as `a.b = value`. A value that parses as a TOML value (number, bool, array, inline
/// table, quoted string) is taken as such; anything else is a string, so `SPOOL_RESP__LISTEN=0.0.0.0:6379` works
/// without quotes (and `Config::load` retries a number or bool as text where a key wants text: a numeric password).
/// Variables without `__` (`SPOOL_CONFIG`, `SPOOL_DATA_DIR`) belong to command-line flags.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<Vec<EnvKey>, String> {
    let mut applied = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("SPOOL_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("{name}: empty key segment"));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let text = value.is_str();
        set_key(table, &path, value).map_err(|segment| format!("{name}: {segment} is not a table"))?;
        applied.push(EnvKey {
            key: path.join("."),
            path,
            raw,
            text,
        });
    }
    Ok(applied)
}

/// Sets the key at `path`, making tables on the way; fails with the segment that is not a table.
fn set_key(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("at least two segments");
    let mut node = table;
    for segment in parents {
        node = match node
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            _ => return Err(segment.clone()),
        };
    }
    node.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.storage.durability, DurabilityMode::Always);
        let engine = c.engine_config().unwrap();
        let names: Vec<_> = engine.queues.keys().map(|q| q.to_string()).collect();
        assert_eq!(names, ["bulk", "critical", "default"]);
    }

    /// The shipped file documents every setting as a `# key = value` line at its default: uncommenting them all
    /// must give exactly the embedded defaults, so the file cannot drift from the code.
    #[test]
    fn shipped_config_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/spool.toml");
        let shipped = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = shipped
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.lines().count() > 20, "expected the settings to be listed");
        let f = write(&uncommented);
        let explicit = Config::load(Some(f.path()), []).unwrap();
        let defaults = Config::load(None, []).unwrap();
        assert_eq!(format!("{explicit:?}"), format!("{defaults:?}"));
        assert!(Config::load(Some(&path), []).is_ok());
    }

    #[test]
    fn env_overrides_file() {
        let f = write("[storage]\ndurability = \"none\"\n[queues.emails]\nlease = \"10s\"\n");
        let env = [
            ("SPOOL_STORAGE__DURABILITY".to_string(), "interval".to_string()),
            ("SPOOL_STORAGE__INTERVAL".to_string(), "250ms".to_string()),
            ("SPOOL_RESP__LISTEN".to_string(), "127.0.0.1:7000".to_string()),
            ("SPOOL_QUEUES__EMAILS__MAX_ATTEMPTS".to_string(), "3".to_string()),
            ("SPOOL_GRPC__LISTEN".to_string(), "127.0.0.1:7001".to_string()),
            ("SPOOL_AUTH__TOKEN".to_string(), "s3cret".to_string()),
            ("SPOOL_DATA_DIR".to_string(), "ignored-here".to_string()),
        ];
        let c = Config::load(Some(f.path()), env).unwrap();
        assert_eq!(c.storage.durability, DurabilityMode::Interval);
        assert_eq!(c.storage.interval, Duration::from_millis(250));
        assert_eq!(c.resp.listen.port(), 7000);
        assert_eq!(c.grpc.listen.port(), 7001);
        assert_eq!(c.auth.token, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"), "the token is never printed");
        let engine = c.engine_config().unwrap();
        let emails = &engine.queues[&QueueName::new("emails").unwrap()];
        assert_eq!((emails.lease_ms, emails.max_attempts), (10_000, 3));

        // A secret that reads as a number (or a bool) is still the text it was given.
        for (key, value) in [("SPOOL_AUTH__TOKEN", "12345678"), ("SPOOL_RESP__PASSWORD", "true")] {
            let c = Config::load(None, [(key.to_string(), value.to_string())]).unwrap();
            assert_eq!(
                if key.contains("AUTH") {
                    &c.auth.token
                } else {
                    &c.resp.password
                },
                value
            );
        }
        // ... but a number where a number is wanted is still checked as one.
        for (value, said) in [("12abc", "string \"12abc\""), ("-1", "integer `-1`")] {
            let env = [("SPOOL_RESP__MAX_CONNECTIONS".to_string(), value.to_string())];
            let e = Config::load(None, env).unwrap_err().to_string();
            assert!(e.contains("resp.max_connections") && e.contains(said), "{value}: {e}");
        }
    }

    #[test]
    fn a_queues_backoff_keys_fall_back_to_the_defaults_one_by_one() {
        let f = write(
            "[queue_defaults.backoff]\ninitial = \"60s\"\njitter = \"none\"\n[queues.x]\nbackoff = { max = \"2h\" }\n",
        );
        let env = [("SPOOL_QUEUES__Y__BACKOFF__MULTIPLIER".to_string(), "3".to_string())];
        let engine = Config::load(Some(f.path()), env).unwrap().engine_config().unwrap();
        let retry = |q: &str| engine.queues[&QueueName::new(q).unwrap()].retry;
        let x = retry("x");
        assert_eq!(
            (x.initial_ms, x.multiplier, x.max_ms, x.jitter),
            (60_000, 2.0, 7_200_000, Jitter::None)
        );
        let y = retry("y");
        assert_eq!(
            (y.initial_ms, y.multiplier, y.max_ms, y.jitter),
            (60_000, 3.0, 3_600_000, Jitter::None)
        );
    }

    #[test]
    fn worker_threads_leave_a_core_to_the_store_unless_set() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        let auto = Config::load(None, []).unwrap();
        assert_eq!(auto.server.workers(), (cpus - 1).max(1));
        let env = [("SPOOL_SERVER__WORKER_THREADS".to_string(), "3".to_string())];
        assert_eq!(Config::load(None, env).unwrap().server.workers(), 3);
    }

    #[test]
    fn settings_that_would_start_a_broken_daemon_are_refused() {
        for (key, value, expect) in [
            // 2^44 MiB in bytes wraps to 0 in a release build.
            ("SPOOL_STORAGE__CACHE_MB", "17592186044416", "storage.cache_mb"),
            ("SPOOL_RESP__MAX_CONNECTIONS", "0", "resp: max_connections"),
            ("SPOOL_RESP__MAX_ARRAY_LEN", "0", "resp: max_connections"),
            ("SPOOL_LIMITS__MAX_RESERVE_BYTES", "0", "max_reserve_bytes"),
            ("SPOOL_LIMITS__MAX_PAYLOAD_BYTES", "4194304", "grpc.max_message_bytes"),
            ("SPOOL_AUTH__TOKEN", "\"two words\"", "auth.token"),
            ("SPOOL_RESP__MAX_BULK_BYTES", "1048576", "resp.max_bulk_bytes"),
            ("SPOOL_LOG__LEVEL", "inof", "log.level"),
            ("SPOOL_LOG__LEVEL", "tower=debug", "log.level"),
            ("SPOOL_LOG__LEVEL", "info,=", "log.level"),
        ] {
            let e = Config::load(None, [(key.to_string(), value.to_string())])
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{key}={value}: {e}");
        }
        let grpc_off = [
            ("SPOOL_LIMITS__MAX_PAYLOAD_BYTES".to_string(), "4194304".to_string()),
            ("SPOOL_RESP__MAX_BULK_BYTES".to_string(), "8388608".to_string()),
            ("SPOOL_GRPC__ENABLED".to_string(), "false".to_string()),
        ];
        assert!(
            Config::load(None, grpc_off).is_ok(),
            "the gRPC limit matters only with gRPC on"
        );
        for level in ["debug", "spool_engine=debug", "tower=warn,INFO", "off"] {
            let env = [("SPOOL_LOG__LEVEL".to_string(), level.to_string())];
            assert!(Config::load(None, env).is_ok(), "{level}");
        }
    }

    #[test]
    fn errors_name_file_and_key() {
        let f = write("[storage]\ndurability = \"sometimes\"\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("storage.durability"), "{e}");
        assert!(e.contains("sometimes"), "{e}");

        let f = write("[storage]\ndurabilty = \"always\"\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(e.contains("durabilty"), "{e}");

        let f = write("[queues.\"bad name\"]\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(e.contains("queues.bad name"), "{e}");

        let f = write("[queue_defaults]\nlease = \"soon\"\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(e.contains("queue_defaults.lease") && e.contains("soon"), "{e}");

        let f = write("[queue_defaults]\nlease = \"0s\"\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(e.contains("queue_defaults") && e.contains("lease"), "{e}");

        let f = write("[storage\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");

        let f = write("[[schedules]]\nname = \"nightly\"\nqueue = \"default\"\ncron = \"0 25 * * *\"\n");
        let e = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("schedules.nightly: cron:"),
            "{e}"
        );

        let env = [("SPOOL_STORAGE__CACHE_MB".to_string(), "lots".to_string())];
        let e = Config::load(None, env).unwrap_err().to_string();
        assert!(e.starts_with("environment") && e.contains("storage.cache_mb"), "{e}");
        // Checks past parsing blame the environment too when a variable set the key.
        let f = write("[storage]\ndurability = \"always\"\n");
        let env = [("SPOOL_RESP__MAX_CONNECTIONS".to_string(), "0".to_string())];
        let e = Config::load(Some(f.path()), env).unwrap_err().to_string();
        assert!(e.starts_with("environment: resp:"), "{e}");
        let env = [("SPOOL_QUEUES__X__LEASE".to_string(), "0s".to_string())];
        let e = Config::load(Some(f.path()), env).unwrap_err().to_string();
        assert!(e.starts_with("environment: queues.x:"), "{e}");
        let env = [("SPOOL_LIMITS__MAX_PAYLOAD_BYTES".to_string(), "4194304".to_string())];
        let e = Config::load(Some(f.path()), env).unwrap_err().to_string();
        assert!(e.starts_with("environment: grpc.max_message_bytes:"), "{e}");
    }
}
