//! The `spool` binary as an operator runs it: start on a data directory, serve Redis clients, stop cleanly on
//! SIGTERM or SIGINT, survive `kill -9` without losing an acknowledged job, and refuse bad directories and bad config
//! files with messages that name what is wrong.
//!
//! Every daemon listens on port 0 and the test reads the bound address from its log, so tests run in parallel
//! without port races. Readiness is a log line, never a sleep.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::Value;

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");

struct Daemon {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A test that panics must not leave its daemon running: kill it (a no-op once it has exited and been waited for).
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `spool serve` on `dir` and waits for its "RESP listener ready" line.
    fn start(dir: &Path) -> Daemon {
        let mut child = Command::new(SPOOL)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .env("SPOOL_RESP__LISTEN", "127.0.0.1:0")
            .env("SPOOL_GRPC__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spool");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("RESP listener ready") {
                        let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap();
                        let _ = ready_tx.send(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                    }
                    log.lock().unwrap().push(line);
                }
            })
        };
        let port = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("spool never became ready; log: {:?}", log.lock().unwrap()));
        Daemon {
            child,
            port,
            log,
            reader: Some(reader),
        }
    }

    async fn connect(&self) -> MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_multiplexed_tokio_connection()
            .await
            .unwrap()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        // The reader thread ends at EOF on stderr, which comes with the process's exit.
        self.reader.take().expect("waited once").join().unwrap();
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

async fn stats_ready(con: &mut MultiplexedConnection, queue: &str) -> i64 {
    redis::cmd("LLEN").arg(queue).query_async(con).await.unwrap()
}

/// `JOB.FETCH queue COUNT n` → (id, token) pairs; the reply is an array of maps (flat arrays under RESP2).
async fn fetch(
    con: &mut MultiplexedConnection,
    queue: &str,
    count: usize,
) -> redis::RedisResult<Vec<(String, String)>> {
    let reply: Value = redis::cmd("JOB.FETCH")
        .arg(queue)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    let Value::Array(jobs) = reply else {
        panic!("unexpected fetch reply {reply:?}")
    };
    Ok(jobs
        .into_iter()
        .map(|job| {
            let Value::Array(fields) = job else {
                panic!("unexpected job {job:?}")
            };
            let field = |name: &str| {
                let i = fields
                    .iter()
                    .position(|f| matches!(f, Value::BulkString(b) if b == name.as_bytes()))
                    .unwrap();
                match &fields[i + 1] {
                    Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                    other => panic!("unexpected {name} {other:?}"),
                }
            };
            (field("id"), field("token"))
        })
        .collect())
}

#[tokio::test]
async fn sigterm_and_sigint_stop_cleanly_and_jobs_survive() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let mut con = daemon.connect().await;
    for i in 0..50 {
        let _: String = redis::cmd("JOB.PUSH")
            .arg("mail")
            .arg(format!("job-{i}"))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("QUEUE.PAUSE")
        .arg("bulk")
        .query_async(&mut con)
        .await
        .unwrap();
    drop(con);
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "exit {status:?}; log {log:?}");
    assert!(log.iter().any(|l| l.contains("SIGTERM")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("spool stopped")), "{log:?}");

    let daemon = Daemon::start(dir.path());
    let mut con = daemon.connect().await;
    assert_eq!(stats_ready(&mut con, "mail").await, 50);
    let first: Vec<String> = redis::cmd("RPOP")
        .arg("mail")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(first, ["job-0"]);
    let info: String = redis::cmd("INFO").arg("spool").query_async(&mut con).await.unwrap();
    assert!(info.contains("bulk"), "{info}");
    drop(con);
    daemon.signal("INT");
    let (status, log) = daemon.wait();
    assert!(status.success(), "exit {status:?}; log {log:?}");
    assert!(log.iter().any(|l| l.contains("SIGINT")), "{log:?}");
}

/// Producers push and a worker fetches and acks while the daemon is killed with SIGKILL at a random moment. After
/// each restart: every push answered with an id is there unless it was acked, and no acked job comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().unwrap();
    let pushed = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    // Acks sent whose reply never came (the kill fell between): the job may be gone or back, both are correct.
    let acking = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..4 {
        let mut daemon = Daemon::start(dir.path());
        let mut tasks = Vec::new();
        for producer in 0..3 {
            let (mut con, pushed) = (daemon.connect().await, pushed.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let id: redis::RedisResult<String> = redis::cmd("JOB.PUSH")
                        .arg("crash")
                        .arg(format!("r{round}-p{producer}-{i}"))
                        .query_async(&mut con)
                        .await;
                    match id {
                        Ok(id) => pushed.lock().unwrap().push(id),
                        Err(_) => return,
                    }
                }
            }));
        }
        {
            let (mut con, acked, acking) = (daemon.connect().await, acked.clone(), acking.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok(jobs) = fetch(&mut con, "crash", 8).await else {
                        return;
                    };
                    for (id, token) in jobs {
                        let ok: redis::RedisResult<()> =
                            redis::cmd("JOB.ACK").arg(&id).arg(&token).query_async(&mut con).await;
                        match ok {
                            Ok(()) => acked.lock().unwrap().push(id),
                            Err(e) if e.code() == Some("LEASELOST") => {}
                            Err(_) => {
                                acking.lock().unwrap().push(id);
                                return;
                            }
                        }
                    }
                }
            }));
        }
        let delay = rand::thread_rng().gen_range(150..600);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        daemon.child.kill().unwrap();
        let (status, _) = daemon.wait();
        assert!(!status.success(), "the daemon should have died of SIGKILL");
        for task in tasks {
            task.await.unwrap();
        }

        let daemon = Daemon::start(dir.path());
        let mut con = daemon.connect().await;
        let acked_now: std::collections::HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
        let pushed_now = pushed.lock().unwrap().clone();
        let in_flight: std::collections::HashSet<String> = acking.lock().unwrap().iter().cloned().collect();
        assert!(
            !pushed_now.is_empty(),
            "round {round}: no push was answered before the kill"
        );
        for id in &pushed_now {
            let got: redis::RedisResult<Value> = redis::cmd("JOB.GET").arg(id).query_async(&mut con).await;
            if acked_now.contains(id) {
                let err = got.expect_err("an acked job came back");
                assert_eq!(err.code(), Some("NOTFOUND"), "round {round}: {id}: {err}");
            } else if in_flight.contains(id) {
                if got.is_err() {
                    // Its ack reached the disk before the kill; from now on it counts as acked.
                    acked.lock().unwrap().push(id.clone());
                }
            } else {
                assert!(got.is_ok(), "round {round}: acknowledged push {id} lost: {got:?}");
            }
        }
        // Each in-flight ack is now settled one way or the other; later rounds hold it to the usual rules.
        acking.lock().unwrap().clear();
        eprintln!(
            "round {round}: killed after {delay} ms; {} pushes and {} acks checked",
            pushed_now.len(),
            acked_now.len()
        );
        drop(con);
        daemon.signal("TERM");
        assert!(daemon.wait().0.success());
    }
}

fn run_spool(args: &[&str], data_dir: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(SPOOL);
    cmd.args(args)
        .env("SPOOL_RESP__LISTEN", "127.0.0.1:0")
        .env("SPOOL_GRPC__LISTEN", "127.0.0.1:0");
    if let Some(dir) = data_dir {
        cmd.arg("--data-dir").arg(dir);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn bad_data_directories_are_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (ok, out) = run_spool(&["serve"], Some(&file));
    assert!(!ok && out.contains(&file.display().to_string()), "{out}");

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("db"), vec![0x5A; 32 * 1024]).unwrap();
    let (ok, out) = run_spool(&["serve"], Some(&corrupt));
    assert!(
        !ok && out.contains(&corrupt.display().to_string()) && out.contains("corrupt"),
        "{out}"
    );
}

#[test]
fn check_config_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\ndurability = \"sometimes\"\n").unwrap();
    let (ok, out) = run_spool(&["check-config", bad.to_str().unwrap()], None);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&bad.display().to_string()) && out.contains("storage.durability"),
        "{out}"
    );

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/spool.toml");
    let (ok, out) = run_spool(&["check-config", shipped.to_str().unwrap()], None);
    assert!(ok, "{out}");

    let (ok, out) = run_spool(&["serve", "--config", bad.to_str().unwrap()], None);
    assert!(!ok && out.contains("storage.durability"), "{out}");

    let schedule = dir.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        "[[schedules]]\nname = \"nightly\"\nqueue = \"default\"\ncron = \"0 25 * * *\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    for args in [
        vec!["check-config", schedule.to_str().unwrap()],
        vec!["serve", "--config", schedule.to_str().unwrap()],
    ] {
        let (ok, out) = run_spool(&args, Some(&data).filter(|_| args[0] == "serve").map(|d| d.as_path()));
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(&schedule.display().to_string()) && out.contains("schedules.nightly: cron:"),
            "{args:?}: {out}"
        );
    }
}
