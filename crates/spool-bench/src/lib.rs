//! `spool-bench`: a load generator for Spool over RESP, which can also drive Redis with the equivalent list patterns
//! so the two are measured by the same client. Modes: `enqueue` (producers only), `consume` (a prefilled queue
//! drained with fetch + ack), `e2e` (producers and consumers at once; the enqueue→ack latency comes from a send
//! timestamp carried in each payload) and `mixed` (e2e with some jobs delayed and some nacked for a retry). It
//! talks to the server only as a client would (never linking the engine or store), and its one invariant is that speed never
//! excuses loss: every job the server confirmed must come back (counted exactly once, or duplicates reported), and a
//! run that loses one fails with a non-zero exit, however fast it was. `--pattern grpc` drives the gRPC door
//! through `spool-client` with the same producers, consumers and checks.

pub mod daemon;
mod grpc;
pub mod resp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::resp::{Conn, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Producers only; afterwards LLEN must show every confirmed job.
    Enqueue,
    /// Prefill `--jobs` (unmeasured), then drain them with the consumers.
    Consume,
    /// Producers and consumers at once; latency is enqueue → ack (or pop).
    E2e,
    /// e2e where `--delay-fraction` of pushes are delayed and `--retry-fraction` of first deliveries are nacked.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Spool's job commands: JOB.PUSH / JOB.PUSHMANY, JOB.FETCH … COUNT, JOB.ACK (multi-id when batching).
    Native,
    /// Redis list queue, at-most-once: LPUSH, BRPOP (RPOP count when batching).
    List,
    /// Redis "reliable queue", at-least-once: LPUSH, BLMOVE into a processing list, LREM once handled (Redis only).
    Reliable,
    /// Spool's gRPC door (`--grpc`): Enqueue / EnqueueBatch, Reserve with a count, Ack / AckBatch, Nack.
    Grpc,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "spool-bench",
    about = "Load generator for Spool (and Redis) over RESP",
    version
)]
pub struct Options {
    /// Address of a running server (Spool or Redis).
    #[arg(long, default_value = "127.0.0.1:6379", conflicts_with = "spawn")]
    pub server: String,
    /// gRPC endpoint for `--pattern grpc` (RESP at `--server` is still used for fills and LLEN checks).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// Start this `spool` binary with a fresh temporary data directory instead of using `--server`.
    #[arg(long)]
    pub spawn: Option<std::path::PathBuf>,
    /// Durability of a spawned daemon (SPOOL_STORAGE__DURABILITY): always, interval or none.
    #[arg(long, default_value = "always")]
    pub durability: String,
    #[arg(long, value_enum, default_value = "e2e")]
    pub mode: Mode,
    #[arg(long, value_enum, default_value = "native")]
    pub pattern: Pattern,
    /// Producer connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Consumer connections (default: as many as producers).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Commands in flight per connection: each round sends this many, then reads their replies.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,
    /// Jobs per command: JOB.PUSHMANY / multi-value LPUSH size, JOB.FETCH COUNT / RPOP count, jobs per JOB.ACK.
    #[arg(long, short = 'b', default_value_t = 1)]
    pub batch: usize,
    /// Payload size in bytes (at least 32: a send timestamp and the job's bench id).
    #[arg(long, short = 'd', default_value_t = 200)]
    pub payload: usize,
    /// Number of queues; producer i pushes to queue i mod n, consumers take from all.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Seconds to produce for (ignored when --jobs is given).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Total jobs to produce (or to prefill, in consume mode; default there 100,000).
    #[arg(long, short = 'n')]
    pub jobs: Option<u64>,
    /// Total jobs/s all producers together aim for (default: as fast as the server answers). A closed loop at full
    /// speed builds a backlog whenever producers outrun consumers, so its e2e latency is mostly queueing; a rate
    /// below capacity measures the latency a job sees on a server that keeps up.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Ready jobs to put in each queue before measuring, at a lower priority than the bench's own so they are
    /// never fetched: shows how a large backlog changes throughput (native pattern only).
    #[arg(long, default_value_t = 0)]
    pub backlog: u64,
    /// mixed: fraction of pushes sent with DELAY.
    #[arg(long, default_value_t = 0.2)]
    pub delay_fraction: f64,
    /// mixed: the DELAY of those pushes, in ms.
    #[arg(long, default_value_t = 200)]
    pub delay_ms: u64,
    /// mixed: fraction of first deliveries nacked (retried after --retry-delay-ms) instead of acked.
    #[arg(long, default_value_t = 0.1)]
    pub retry_fraction: f64,
    #[arg(long, default_value_t = 100)]
    pub retry_delay_ms: u64,
    /// Prefix of the queue names; default unique per run so earlier runs' leftovers are never counted.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Once producers stop, how long consumers may go without receiving anything before the rest count as lost.
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,
    /// Write the report here as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Free-form label copied into the report (e.g. "redis-everysec").
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub mode: Mode,
    pub pattern: Pattern,
    pub target: String,
    pub durability: Option<String>,
    pub connections: usize,
    pub consumers: usize,
    pub pipeline: usize,
    pub batch: usize,
    pub payload_bytes: usize,
    pub queues: usize,
    pub backlog_per_queue: u64,
    /// Seconds from the first command to the last counted reply of the measured phase.
    pub elapsed_s: f64,
    /// Jobs the server confirmed as enqueued (prefilled ones in consume mode).
    pub enqueued: u64,
    /// Distinct jobs received (acked or popped), counted once each.
    pub received: u64,
    /// The headline: jobs/s enqueued (enqueue mode) or received (other modes).
    pub throughput_per_s: f64,
    pub enqueue_per_s: f64,
    /// Enqueue mode: per-command round trip. Consume: fetch→ack round trip per job. e2e/mixed: enqueue→ack per job.
    pub latency: Latency,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Confirmed jobs never received: must be 0.
    pub lost: u64,
    /// Receipts of a job already received (at-least-once redelivery after a completed ack would be a bug).
    pub duplicates: u64,
    /// Jobs received whose enqueue got an error reply or no reply (the push may still have landed).
    pub unconfirmed_received: u64,
    pub delayed_pushes: u64,
    pub nacks: u64,
    /// Backlog jobs consumers took (only when the bench's own queue ran dry) and acked out of the way.
    pub ballast_acked: u64,
    /// CPU cores the bench itself used on average: near the machine's core count means the generator, not the
    /// server, may be the limit.
    pub client_cpu_cores: f64,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_kb: Option<u64>,
    pub ok: bool,
}

impl Report {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "spool-bench {label}mode={mode:?} pattern={pattern:?} c={c}/{k} P={p} b={b} d={d} q={q} backlog={bl} \
             enqueued={e} received={r} throughput={t:.0}/s p50={p50:.0}us p99={p99:.0}us p99.9={p999:.0}us \
             max={max:.0}us errors={err} lost={lost} dup={dup} client_cpu={cc:.2} {verdict}",
            label = if self.label.is_empty() {
                String::new()
            } else {
                format!("[{}] ", self.label)
            },
            mode = self.mode,
            pattern = self.pattern,
            c = self.connections,
            k = self.consumers,
            p = self.pipeline,
            b = self.batch,
            d = self.payload_bytes,
            q = self.queues,
            bl = self.backlog_per_queue,
            e = self.enqueued,
            r = self.received,
            t = self.throughput_per_s,
            p50 = self.latency.p50_us,
            p99 = self.latency.p99_us,
            p999 = self.latency.p999_us,
            max = self.latency.max_us,
            err = self.errors,
            lost = self.lost,
            dup = self.duplicates,
            cc = self.client_cpu_cores,
            verdict = if self.ok { "OK" } else { "FAILED" },
        )
    }
}

/// What every task of one run shares.
struct Shared {
    origin: Instant,
    stop_producing: AtomicBool,
    producers_left: AtomicUsize,
    enqueued: AtomicU64,
    received: AtomicU64,
    /// Nanoseconds since `origin` of the latest receipt: the drain timeout and the e2e elapsed time are measured
    /// from it.
    last_receipt_ns: AtomicU64,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn error(&self, n: u64, what: &str) {
        self.errors.fetch_add(n, Ordering::Relaxed);
        let mut samples = self.error_samples.lock().expect("samples lock");
        if samples.len() < 5 && !samples.iter().any(|s| s == what) {
            samples.push(what.to_string());
        }
    }
}

/// When a consumer stops: once producers are done and everything they got confirmed has come back, or nothing has
/// come back for the drain timeout (the rest then counts as lost).
struct Drain {
    timeout_ns: u64,
    started_ns: Option<u64>,
}

impl Drain {
    fn new(opts: &Options) -> Self {
        Self {
            timeout_ns: (opts.drain_timeout * 1e9) as u64,
            started_ns: None,
        }
    }

    fn done(&mut self, shared: &Shared) -> bool {
        if shared.producers_left.load(Ordering::Acquire) > 0 {
            return false;
        }
        if shared.received.load(Ordering::Relaxed) >= shared.enqueued.load(Ordering::Relaxed) {
            return true;
        }
        let now = shared.now_ns();
        let since = *self.started_ns.get_or_insert(now);
        let quiet_from = shared.last_receipt_ns.load(Ordering::Relaxed).max(since);
        now.saturating_sub(quiet_from) > self.timeout_ns
    }
}

/// What one producer or consumer task hands back.
#[derive(Default)]
struct TaskResult {
    /// Producers: bench ids the server confirmed. Consumers: bench ids received (with any repeats).
    ids: Vec<u64>,
    /// Producers: ids whose push got an error or no reply.
    unconfirmed: Vec<u64>,
    latency: Option<Histogram<u64>>,
    delayed: u64,
    nacks: u64,
    ballast_acked: u64,
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds")
}

/// A job's payload: 16 hex digits of send time (ns since the run's origin), 16 of its bench id, then padding.
fn payload(size: usize, sent_ns: u64, id: u64) -> Vec<u8> {
    let mut p = format!("{sent_ns:016x}{id:016x}").into_bytes();
    p.resize(size.max(32), b'x');
    p
}

/// The send time and bench id in a payload; `None` for anything the bench did not write.
fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    if payload.len() < 32 {
        return None;
    }
    Some((hex(&payload[..16])?, hex(&payload[16..32])?))
}

/// A bench id: producer index in the high bits, its sequence number below.
fn bench_id(producer: usize, seq: u64) -> u64 {
    ((producer as u64) << 40) | seq
}

/// The next command's share of producer `p`'s jobs, for either door: up to `batch` ids taken from `left` (advancing
/// `seq`), and the delay a mixed load puts on them (counted in `result`). `left` must not be 0.
pub(crate) fn next_batch(
    opts: &Options,
    p: usize,
    seq: &mut u64,
    left: &mut u64,
    result: &mut TaskResult,
) -> (Vec<u64>, Option<u64>) {
    let n = (opts.batch as u64).min(*left);
    *left -= n;
    let ids: Vec<u64> = (0..n).map(|i| bench_id(p, *seq + i)).collect();
    *seq += n;
    let delay = (opts.mode == Mode::Mixed && chosen(ids[0], 1, opts.delay_fraction)).then_some(opts.delay_ms);
    result.delayed += u64::from(delay.is_some()) * n;
    (ids, delay)
}

/// Deterministic per-job choice (delays, nacks) so reruns load the server the same way.
fn chosen(id: u64, salt: u64, fraction: f64) -> bool {
    let mut x = id ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 10_000) < (fraction * 10_000.0) as u64
}

/// Runs one benchmark against `opts.server`, or against a daemon it starts when `opts.spawn` is set.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.connections > 0 && opts.pipeline > 0 && opts.batch > 0 && opts.queues > 0);
    anyhow::ensure!(
        opts.batch <= 1000,
        "--batch is at most 1000 (JOB.PUSHMANY and JOB.FETCH COUNT limits)"
    );
    anyhow::ensure!(
        opts.backlog == 0 || matches!(opts.pattern, Pattern::Native | Pattern::Grpc),
        "--backlog needs the native pattern (priorities keep the backlog out of the bench's way)"
    );
    let daemon = match &opts.spawn {
        Some(bin) => Some(daemon::Daemon::start(bin, &opts.durability, opts.pattern == Pattern::Grpc).await?),
        None => None,
    };
    let addr = daemon.as_ref().map_or(opts.server.clone(), |d| d.addr.clone());
    let grpc = daemon
        .as_ref()
        .and_then(|d| d.grpc_endpoint.clone())
        .unwrap_or(opts.grpc.clone());
    let result = run_against(opts, &addr, &grpc, daemon.as_ref()).await;
    if let Some(d) = daemon {
        d.stop().await?;
    }
    result
}

async fn run_against(
    opts: &Options,
    addr: &str,
    grpc: &str,
    daemon: Option<&daemon::Daemon>,
) -> anyhow::Result<Report> {
    let prefix = opts.prefix.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("bench-{}-{nanos}", std::process::id())
    });
    let queues: Arc<Vec<String>> = Arc::new((0..opts.queues).map(|i| format!("{prefix}-{i}")).collect());
    let consumers = match opts.mode {
        Mode::Enqueue => 0,
        _ => opts.consumers.unwrap_or(opts.connections),
    };
    if opts.backlog > 0 {
        fill_backlog(addr, &queues, opts).await.context("filling the backlog")?;
    }

    let shared = Arc::new(Shared {
        origin: Instant::now(),
        stop_producing: AtomicBool::new(false),
        producers_left: AtomicUsize::new(0),
        enqueued: AtomicU64::new(0),
        received: AtomicU64::new(0),
        last_receipt_ns: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        error_samples: Mutex::new(Vec::new()),
    });

    // consume mode: the prefill is the "production", done before the clock that matters starts.
    let mut prefilled = Vec::new();
    let mut measure_from = Duration::ZERO;
    if opts.mode == Mode::Consume {
        let jobs = opts.jobs.unwrap_or(100_000);
        prefilled = prefill(addr, &queues, opts, &shared, jobs)
            .await
            .context("prefilling")?;
        shared.enqueued.store(prefilled.len() as u64, Ordering::Relaxed);
        measure_from = shared.origin.elapsed();
    }

    let cpu_before = (process_cpu_s(None), daemon.map(|d| process_cpu_s(Some(d.pid()))));
    let started = Instant::now();
    let producers = if opts.mode == Mode::Consume {
        0
    } else {
        opts.connections
    };
    shared.producers_left.store(producers, Ordering::Relaxed);
    let mut producer_tasks = Vec::new();
    for p in 0..producers {
        let quota = opts
            .jobs
            .map(|n| n / producers as u64 + u64::from((p as u64) < n % producers as u64));
        let (opts, shared, queues, addr, grpc) = (
            opts.clone(),
            shared.clone(),
            queues.clone(),
            addr.to_string(),
            grpc.to_string(),
        );
        producer_tasks.push(tokio::spawn(async move {
            if opts.pattern == Pattern::Grpc {
                grpc::produce(p, quota, &opts, &shared, &queues[p % queues.len()], &grpc).await
            } else {
                produce(p, quota, &opts, &shared, &queues, &addr).await
            }
        }));
    }
    let mut consumer_tasks = Vec::new();
    for k in 0..consumers {
        let (opts, shared, queues, addr, grpc) = (
            opts.clone(),
            shared.clone(),
            queues.clone(),
            addr.to_string(),
            grpc.to_string(),
        );
        consumer_tasks.push(tokio::spawn(async move {
            if opts.pattern == Pattern::Grpc {
                grpc::consume(&opts, &shared, &queues, &grpc).await
            } else {
                consume(k, &opts, &shared, &queues, &addr).await
            }
        }));
    }
    if opts.jobs.is_none() && producers > 0 {
        tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
        shared.stop_producing.store(true, Ordering::Relaxed);
    }

    let mut confirmed = prefilled;
    let mut unconfirmed = Vec::new();
    let mut latency = histogram();
    let (mut delayed, mut nacks, mut ballast_acked) = (0, 0, 0);
    for task in producer_tasks {
        let r = task.await.context("producer task")?;
        confirmed.extend(r.ids);
        unconfirmed.extend(r.unconfirmed);
        delayed += r.delayed;
        if opts.mode == Mode::Enqueue {
            latency.add(r.latency.expect("producers measure")).expect("same bounds");
        }
    }
    let produce_elapsed = started.elapsed();
    let mut received = Vec::new();
    for task in consumer_tasks {
        let r = task.await.context("consumer task")?;
        received.extend(r.ids);
        nacks += r.nacks;
        ballast_acked += r.ballast_acked;
        latency.add(r.latency.expect("consumers measure")).expect("same bounds");
    }
    let cpu_after = (process_cpu_s(None), daemon.map(|d| process_cpu_s(Some(d.pid()))));

    let (elapsed, lost, duplicates, unconfirmed_received, distinct) = if opts.mode == Mode::Enqueue {
        // Nothing consumed: every confirmed job must be waiting in its queue (the backlog too).
        let mut conn = Conn::connect(addr).await?;
        let mut waiting = 0u64;
        for q in queues.iter() {
            match conn.call(&["LLEN", q.as_str()]).await? {
                Reply::Int(n) => waiting += n as u64,
                other => anyhow::bail!("LLEN {q}: {other:?}"),
            }
        }
        let expected = confirmed.len() as u64 + opts.backlog * opts.queues as u64;
        let extra = (waiting.saturating_sub(expected)).min(unconfirmed.len() as u64);
        (produce_elapsed, expected.saturating_sub(waiting), 0, extra, 0)
    } else {
        let end_ns = shared.last_receipt_ns.load(Ordering::Relaxed);
        let elapsed = Duration::from_nanos(end_ns).saturating_sub(measure_from);
        let (lost, duplicates, unconfirmed_received, distinct) = reconcile(confirmed.clone(), received, unconfirmed);
        (elapsed, lost, duplicates, unconfirmed_received, distinct)
    };

    let secs = elapsed.as_secs_f64().max(1e-9);
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let q = |v: f64| latency.value_at_quantile(v) as f64 / 1000.0;
    let errors = shared.errors.load(Ordering::Relaxed);
    let report = Report {
        label: opts.label.clone(),
        mode: opts.mode,
        pattern: opts.pattern,
        target: addr.to_string(),
        durability: daemon.map(|_| opts.durability.clone()),
        connections: producers,
        consumers,
        pipeline: opts.pipeline,
        batch: opts.batch,
        payload_bytes: opts.payload.max(32),
        queues: opts.queues,
        backlog_per_queue: opts.backlog,
        elapsed_s: secs,
        enqueued: confirmed.len() as u64,
        received: distinct,
        throughput_per_s: if opts.mode == Mode::Enqueue {
            confirmed.len() as f64 / secs
        } else {
            distinct as f64 / secs
        },
        enqueue_per_s: if producers > 0 {
            confirmed.len() as f64 / produce_elapsed.as_secs_f64().max(1e-9)
        } else {
            0.0
        },
        latency: Latency {
            count: latency.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: latency.max() as f64 / 1000.0,
            mean_us: latency.mean() / 1000.0,
        },
        errors,
        error_samples: shared.error_samples.lock().expect("samples lock").clone(),
        lost,
        duplicates,
        unconfirmed_received,
        delayed_pushes: delayed,
        nacks,
        ballast_acked,
        client_cpu_cores: (cpu_after.0 - cpu_before.0) / wall,
        server_cpu_cores: match (cpu_before.1, cpu_after.1) {
            (Some(a), Some(b)) => Some((b - a) / wall),
            _ => None,
        },
        server_rss_kb: daemon.and_then(|d| rss_kb(d.pid())),
        // A job received twice after its ack completed is as wrong as a lost one for the native pattern; the
        // at-most-once list patterns cannot duplicate at all. Errors fail the run too: a bench that hides them
        // would report the speed of a server that is refusing work.
        ok: lost == 0 && duplicates == 0 && errors == 0 && !confirmed.is_empty(),
    };
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Compares what was confirmed with what came back: (lost, duplicates, received-but-unconfirmed, distinct received).
fn reconcile(mut confirmed: Vec<u64>, mut received: Vec<u64>, unconfirmed: Vec<u64>) -> (u64, u64, u64, u64) {
    confirmed.sort_unstable();
    received.sort_unstable();
    let total = received.len() as u64;
    received.dedup();
    let distinct = received.len() as u64;
    let lost = confirmed
        .iter()
        .filter(|id| received.binary_search(id).is_err())
        .count() as u64;
    let unconfirmed_received = unconfirmed
        .iter()
        .filter(|id| received.binary_search(id).is_ok())
        .count() as u64;
    (lost, total - distinct, unconfirmed_received, distinct)
}

/// Builds one push command for `jobs` payloads.
fn push_command(opts: &Options, queue: &str, payloads: Vec<Vec<u8>>, delay_ms: Option<u64>) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(payloads.len() + 6);
    match opts.pattern {
        Pattern::Native => {
            args.push(if payloads.len() == 1 {
                b"JOB.PUSH".to_vec()
            } else {
                b"JOB.PUSHMANY".to_vec()
            });
            args.push(queue.as_bytes().to_vec());
            let multi = payloads.len() > 1;
            let mut options: Vec<Vec<u8>> = Vec::new();
            if opts.backlog > 0 {
                options.extend([b"PRIORITY".to_vec(), b"1".to_vec()]);
            }
            if let Some(ms) = delay_ms {
                options.extend([b"DELAY".to_vec(), ms.to_string().into_bytes()]);
            }
            if multi {
                args.extend(options);
                args.push(b"PAYLOADS".to_vec());
                args.extend(payloads);
            } else {
                args.extend(payloads);
                args.extend(options);
            }
        }
        Pattern::Grpc => unreachable!("gRPC producers enqueue through grpc::produce"),
        Pattern::List | Pattern::Reliable => {
            args.push(b"LPUSH".to_vec());
            args.push(queue.as_bytes().to_vec());
            args.extend(payloads);
        }
    }
    args
}

async fn produce(
    p: usize,
    quota: Option<u64>,
    opts: &Options,
    shared: &Shared,
    queues: &[String],
    addr: &str,
) -> TaskResult {
    let mut result = TaskResult {
        latency: Some(histogram()),
        ..TaskResult::default()
    };
    let queue = &queues[p % queues.len()];
    let mut seq = 0u64;
    let per_job = opts.rate.map(|r| Duration::from_secs_f64(opts.connections as f64 / r));
    let start = Instant::now();
    match Conn::connect(addr).await {
        Err(e) => shared.error(1, &format!("connect: {e}")),
        Ok(mut conn) => loop {
            let remaining = quota.map_or(u64::MAX, |q| q - seq);
            if remaining == 0 || shared.stop_producing.load(Ordering::Relaxed) {
                break;
            }
            if let Some(per_job) = per_job {
                // Paced: job `seq` is due at start + seq × interval; a late round is sent at once, never skipped.
                tokio::time::sleep_until((start + per_job.mul_f64(seq as f64)).into()).await;
            }
            let mut in_flight: Vec<Vec<u64>> = Vec::with_capacity(opts.pipeline);
            let mut left = remaining;
            for _ in 0..opts.pipeline {
                if left == 0 {
                    break;
                }
                let now = shared.now_ns();
                let (ids, delay) = next_batch(opts, p, &mut seq, &mut left, &mut result);
                let payloads = ids.iter().map(|&id| payload(opts.payload, now, id)).collect();
                conn.command(&push_command(opts, queue, payloads, delay));
                in_flight.push(ids);
            }
            let sent = Instant::now();
            match conn.exchange().await {
                Err(e) => {
                    let n: usize = in_flight.iter().map(Vec::len).sum();
                    shared.error(n as u64, &format!("push: {e}"));
                    result.unconfirmed.extend(in_flight.into_iter().flatten());
                    break;
                }
                Ok(replies) => {
                    let took = sent.elapsed().as_nanos() as u64;
                    for (reply, ids) in replies.into_iter().zip(in_flight) {
                        if let Some(e) = reply.error() {
                            shared.error(ids.len() as u64, e);
                            result.unconfirmed.extend(ids);
                        } else {
                            shared.enqueued.fetch_add(ids.len() as u64, Ordering::Relaxed);
                            result.ids.extend(ids);
                            let _ = result.latency.as_mut().expect("set above").record(took.max(1));
                        }
                    }
                }
            }
        },
    }
    shared.producers_left.fetch_sub(1, Ordering::Release);
    result
}

/// The bench id given to a fetched ballast job.
const BALLAST: u64 = u64::MAX;

/// A job as a consumer holds it between fetch and ack.
struct Delivery {
    /// Native pattern: the job id and lease token; list patterns: the payload (and, reliable, its processing list).
    handle: Vec<Vec<u8>>,
    sent_ns: u64,
    bench_id: u64,
    attempt: i64,
}

/// Reads a JOB.FETCH reply (RESP2: an array of flat key/value arrays) into deliveries.
fn fetched_jobs(reply: Reply, shared: &Shared, out: &mut Vec<Delivery>) {
    let Reply::Array(Some(jobs)) = reply else {
        if let Some(e) = reply.error() {
            shared.error(1, e);
        }
        return;
    };
    for job in jobs {
        let Reply::Array(Some(fields)) = job else { continue };
        let mut map: HashMap<String, Reply> = HashMap::new();
        let mut it = fields.into_iter();
        while let (Some(Reply::Bulk(Some(k))), Some(v)) = (it.next(), it.next()) {
            map.insert(String::from_utf8_lossy(&k).into_owned(), v);
        }
        let bulk = |r: Option<&Reply>| match r {
            Some(Reply::Bulk(Some(b))) => Some(b.clone()),
            _ => None,
        };
        let (Some(id), Some(token), Some(body)) =
            (bulk(map.get("id")), bulk(map.get("token")), bulk(map.get("payload")))
        else {
            shared.error(1, "JOB.FETCH reply without id, token or payload");
            continue;
        };
        let attempt = match map.get("attempt") {
            Some(Reply::Int(n)) => *n,
            _ => 1,
        };
        match decode(&body) {
            Some((sent_ns, bench_id)) => out.push(Delivery {
                handle: vec![id, token],
                sent_ns,
                bench_id,
                attempt,
            }),
            // Ballast is only handed out when the bench's own jobs have run dry: ack it out of the way, counted.
            None if body.starts_with(b"ballast") => out.push(Delivery {
                handle: vec![id, token],
                sent_ns: 0,
                bench_id: BALLAST,
                attempt,
            }),
            None => shared.error(1, "fetched a job the bench did not write"),
        }
    }
}

/// A payload taken from a list; `processing` is the list BLMOVE put it in (reliable pattern).
fn popped(payload: Vec<u8>, processing: Option<&str>, shared: &Shared, out: &mut Vec<Delivery>) {
    match decode(&payload) {
        Some((sent_ns, bench_id)) => out.push(Delivery {
            handle: std::iter::once(payload)
                .chain(processing.map(|p| p.as_bytes().to_vec()))
                .collect(),
            sent_ns,
            bench_id,
            attempt: 1,
        }),
        None => shared.error(1, "popped a payload the bench did not write"),
    }
}

async fn consume(k: usize, opts: &Options, shared: &Shared, queues: &[String], addr: &str) -> TaskResult {
    let mut result = TaskResult {
        latency: Some(histogram()),
        ..TaskResult::default()
    };
    let mut conn = match Conn::connect(addr).await {
        Ok(c) => c,
        Err(e) => {
            shared.error(1, &format!("connect: {e}"));
            return result;
        }
    };
    let mut drain = Drain::new(opts);
    let mut round = 0usize;
    while !drain.done(shared) {
        round += 1;
        let mut deliveries = Vec::new();
        let fetch_ns = shared.now_ns();
        let take = match opts.pattern {
            Pattern::Grpc => unreachable!("gRPC consumers use grpc::consume"),
            Pattern::Native => {
                let mut args: Vec<&str> = vec!["JOB.FETCH"];
                args.extend(queues.iter().map(String::as_str));
                let count = opts.batch.to_string();
                args.extend(["TIMEOUT", "100", "COUNT", count.as_str()]);
                for _ in 0..opts.pipeline {
                    conn.command(&args);
                }
                conn.exchange().await.map(|replies| {
                    for reply in replies {
                        fetched_jobs(reply, shared, &mut deliveries);
                    }
                })
            }
            Pattern::List => {
                // Batched: a non-blocking RPOP with a count, and a BRPOP behind it so an empty queue waits
                // instead of spinning.
                let queue = queues[(k + round) % queues.len()].as_str();
                let count = opts.batch.to_string();
                let mut brpop: Vec<&str> = vec!["BRPOP"];
                brpop.extend(queues.iter().map(String::as_str));
                brpop.push("0.1");
                for _ in 0..opts.pipeline {
                    if opts.batch > 1 {
                        conn.command(&["RPOP", queue, count.as_str()]);
                    } else {
                        conn.command(&brpop);
                    }
                }
                let got = conn.exchange().await;
                match got {
                    Ok(replies) => {
                        let mut empty = true;
                        for reply in replies {
                            match reply {
                                Reply::Array(Some(items)) if opts.batch == 1 => {
                                    if let Some(Reply::Bulk(Some(p))) = items.into_iter().nth(1) {
                                        empty = false;
                                        popped(p, None, shared, &mut deliveries);
                                    }
                                }
                                Reply::Array(Some(items)) => {
                                    for item in items {
                                        if let Reply::Bulk(Some(p)) = item {
                                            empty = false;
                                            popped(p, None, shared, &mut deliveries);
                                        }
                                    }
                                }
                                Reply::Error(e) => shared.error(1, &e),
                                _ => {}
                            }
                        }
                        if empty && opts.batch > 1 {
                            match conn.call(&brpop).await {
                                Ok(Reply::Array(Some(items))) => {
                                    if let Some(Reply::Bulk(Some(p))) = items.into_iter().nth(1) {
                                        popped(p, None, shared, &mut deliveries);
                                    }
                                }
                                Ok(Reply::Error(e)) => shared.error(1, &e),
                                Ok(_) => {}
                                Err(e) => shared.error(1, &format!("BRPOP: {e}")),
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Pattern::Reliable => {
                let queue = queues[(k + round) % queues.len()].as_str();
                let processing = format!("{queue}:processing");
                for _ in 0..opts.pipeline {
                    conn.command(&["BLMOVE", queue, processing.as_str(), "RIGHT", "LEFT", "0.1"]);
                }
                conn.exchange().await.map(|replies| {
                    for reply in replies {
                        match reply {
                            Reply::Bulk(Some(p)) => popped(p, Some(&processing), shared, &mut deliveries),
                            Reply::Error(e) => shared.error(1, &e),
                            _ => {}
                        }
                    }
                })
            }
        };
        if let Err(e) = take {
            shared.error(1, &format!("fetch: {e}"));
            break;
        }
        if deliveries.is_empty() {
            continue;
        }
        if opts.mode == Mode::Consume {
            // Jobs were prefilled long before; what consume mode measures is the fetch → ack round trip.
            for d in &mut deliveries {
                d.sent_ns = fetch_ns;
            }
        }
        if let Err(e) = settle(opts, shared, &mut conn, deliveries, &mut result).await {
            shared.error(1, &format!("ack: {e}"));
            break;
        }
    }
    result
}

/// Acks (or, in mixed mode, nacks some of) what one round fetched, and records what came back for good.
async fn settle(
    opts: &Options,
    shared: &Shared,
    conn: &mut Conn,
    deliveries: Vec<Delivery>,
    result: &mut TaskResult,
) -> std::io::Result<()> {
    // Which deliveries each queued command settles, and whether it acks them (nacks record nothing).
    let mut commands: Vec<(Vec<usize>, bool)> = Vec::new();
    match opts.pattern {
        Pattern::Grpc => unreachable!("gRPC consumers use grpc::consume"),
        Pattern::Native => {
            let (mut acks, mut nacks) = (Vec::new(), Vec::new());
            for (i, d) in deliveries.iter().enumerate() {
                if opts.mode == Mode::Mixed && d.attempt == 1 && chosen(d.bench_id, 2, opts.retry_fraction) {
                    nacks.push(i);
                } else {
                    acks.push(i);
                }
            }
            for &i in &nacks {
                let d = &deliveries[i];
                let delay = opts.retry_delay_ms.to_string();
                conn.command(&[
                    b"JOB.NACK".as_slice(),
                    &d.handle[0],
                    &d.handle[1],
                    b"DELAY",
                    delay.as_bytes(),
                ]);
                commands.push((vec![i], false));
            }
            // Multi-id acks when batching (one commit for the lot); one JOB.ACK per job otherwise.
            for chunk in acks.chunks(if opts.batch > 1 { 1000 } else { 1 }) {
                let mut args: Vec<&[u8]> = vec![b"JOB.ACK"];
                for &i in chunk {
                    args.extend(deliveries[i].handle.iter().map(Vec::as_slice));
                }
                conn.command(&args);
                commands.push((chunk.to_vec(), true));
            }
        }
        // At-most-once: the pop was the receipt.
        Pattern::List => commands.push(((0..deliveries.len()).collect(), true)),
        Pattern::Reliable => {
            // Handled: remove it from the processing list it was moved to. Until then a crashed consumer's job
            // stays recoverable there, which is what makes this pattern at-least-once.
            for (i, d) in deliveries.iter().enumerate() {
                conn.command(&[b"LREM".as_slice(), &d.handle[1], b"1", &d.handle[0]]);
                commands.push((vec![i], true));
            }
        }
    }
    let replies = conn.exchange().await?;
    let now = shared.now_ns();
    let mut got = 0u64;
    let mut record = |d: &Delivery, result: &mut TaskResult| {
        if d.bench_id == BALLAST {
            result.ballast_acked += 1;
            return;
        }
        result.ids.push(d.bench_id);
        let _ = result
            .latency
            .as_mut()
            .expect("set")
            .record(now.saturating_sub(d.sent_ns).max(1));
        got += 1;
    };
    if opts.pattern == Pattern::List {
        for d in &deliveries {
            record(d, result);
        }
    } else {
        for ((indexes, is_ack), reply) in commands.into_iter().zip(replies) {
            match reply {
                Reply::Error(e) => shared.error(indexes.len() as u64, &e),
                Reply::Array(Some(items)) => {
                    for (i, item) in indexes.into_iter().zip(items) {
                        match item.error() {
                            Some(e) => shared.error(1, e),
                            None => record(&deliveries[i], result),
                        }
                    }
                }
                // LREM answers how many it removed: 0 means the job was not where this consumer left it.
                Reply::Int(0) => shared.error(1, "LREM removed nothing"),
                _ if is_ack => {
                    for i in indexes {
                        record(&deliveries[i], result);
                    }
                }
                _ => result.nacks += indexes.len() as u64,
            }
        }
    }
    shared.received.fetch_add(got, Ordering::Relaxed);
    shared.last_receipt_ns.fetch_max(now, Ordering::Relaxed);
    Ok(())
}

/// Pushes `per_queue` low-priority ballast jobs into every queue, unmeasured.
async fn fill_backlog(addr: &str, queues: &[String], opts: &Options) -> anyhow::Result<()> {
    for queue in queues {
        fill(addr, queue, opts, opts.backlog, None).await?;
    }
    Ok(())
}

/// Prefills `jobs` bench jobs over the queues for consume mode; returns their ids.
async fn prefill(
    addr: &str,
    queues: &[String],
    opts: &Options,
    shared: &Shared,
    jobs: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(jobs as usize);
    for (i, queue) in queues.iter().enumerate() {
        let n = jobs / queues.len() as u64 + u64::from((i as u64) < jobs % queues.len() as u64);
        ids.extend(fill(addr, queue, opts, n, Some((i, shared))).await?);
    }
    Ok(ids)
}

/// Fills one queue fast: four connections, 1,000 jobs per command, four commands in flight each. `bench` is the
/// producer index and origin for bench jobs; `None` writes ballast (priority 0, never decoded).
async fn fill(
    addr: &str,
    queue: &str,
    opts: &Options,
    jobs: u64,
    bench: Option<(usize, &Shared)>,
) -> anyhow::Result<Vec<u64>> {
    const CONNS: u64 = 4;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let share = jobs / CONNS + u64::from(c < jobs % CONNS);
        let producer = bench.map(|(i, _)| i * CONNS as usize + c as usize);
        let origin_ns = bench.map_or(0, |(_, s)| s.now_ns());
        let (addr, queue, opts) = (addr.to_string(), queue.to_string(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await?;
            let mut ids = Vec::new();
            let mut seq = 0u64;
            while seq < share {
                let mut sent = Vec::new();
                for _ in 0..4 {
                    let n = 1000.min(share - seq);
                    if n == 0 {
                        break;
                    }
                    let batch: Vec<u64> = (seq..seq + n).collect();
                    seq += n;
                    let payloads = batch
                        .iter()
                        .map(|&s| match producer {
                            Some(p) => payload(opts.payload, origin_ns, bench_id(p, s)),
                            None => {
                                let mut b = b"ballast".to_vec();
                                b.resize(opts.payload, b'x');
                                b
                            }
                        })
                        .collect::<Vec<_>>();
                    let args = match (opts.pattern, producer) {
                        // Fills always go over RESP; the gRPC pattern's queues are native queues too.
                        (Pattern::Native | Pattern::Grpc, _) => {
                            let mut a = vec![b"JOB.PUSHMANY".to_vec(), queue.as_bytes().to_vec()];
                            a.extend([b"PRIORITY".to_vec(), b"0".to_vec(), b"PAYLOADS".to_vec()]);
                            a.extend(payloads);
                            a
                        }
                        _ => std::iter::once(b"LPUSH".to_vec())
                            .chain(std::iter::once(queue.as_bytes().to_vec()))
                            .chain(payloads)
                            .collect(),
                    };
                    conn.command(&args);
                    sent.push(batch);
                }
                for (reply, batch) in conn.exchange().await?.into_iter().zip(sent) {
                    if let Some(e) = reply.error() {
                        anyhow::bail!("filling {queue}: {e}");
                    }
                    if let Some(p) = producer {
                        ids.extend(batch.into_iter().map(|s| bench_id(p, s)));
                    }
                }
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

/// CPU seconds (user + system) used so far by this process or by `pid`, from /proc: the kernel's clock ticks are
/// 1/100 s on every Linux configuration we run on.
fn process_cpu_s(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the ")" that closes the command name: state is the 1st, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident set size of `pid` in KiB (VmRSS).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
