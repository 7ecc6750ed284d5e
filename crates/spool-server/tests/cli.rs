//! The operator's client subcommands against a real daemon over gRPC, with a token: health, refusal without the
//! token, enqueue, queues, job, pause/resume, dead letters and schedules, as tables and as `--json`.
//!
//! The daemon listens on port 0 and the test reads the bound gRPC address from its log: readiness is a log line,
//! never a sleep.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");

struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(dir: &std::path::Path, token: &str) -> Daemon {
        let mut child = Command::new(SPOOL)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .env("SPOOL_RESP__LISTEN", "127.0.0.1:0")
            .env("SPOOL_GRPC__LISTEN", "127.0.0.1:0")
            .env("SPOOL_AUTH__TOKEN", token)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spool");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the daemon logs its gRPC address")
                .expect("log line");
            if let Some(rest) = line.split("gRPC listener ready addr=").nth(1) {
                break rest.split_whitespace().next().expect("an address").to_string();
            }
        };
        // Keep draining the log so the daemon never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Daemon {
            child,
            url: format!("http://{addr}"),
        }
    }

    fn spool(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(SPOOL);
        cmd.args(args).env("SPOOL_SERVER", &self.url).env_remove("SPOOL_TOKEN");
        if let Some(token) = token {
            cmd.env("SPOOL_TOKEN", token);
        }
        cmd.output().expect("run spool")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.spool(Some("tok"), &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn operator_subcommands_over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "tok");

    let health = daemon.spool(None, &["healthcheck"]);
    assert!(health.status.success());
    assert_eq!(text(&health).trim(), "SERVING");

    let refused = daemon.spool(None, &["queues"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains("--token"),
        "{stderr}"
    );
    // An address as `grpc.listen` writes it, without a scheme, is plain HTTP/2.
    let bare = daemon.url.trim_start_matches("http://").to_string();
    let health = Command::new(SPOOL)
        .args(["healthcheck", "--server", &bare])
        .output()
        .expect("run spool");
    assert_eq!(
        text(&health).trim(),
        "SERVING",
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let wrong = daemon.spool(Some("nope"), &["enqueue", "emails", "x"]);
    assert!(!wrong.status.success());

    let enqueued = daemon.json(&["enqueue", "emails", "hello", "--header", "trace=t1", "--priority", "4"]);
    let id = enqueued["id"].as_str().expect("an id").to_string();
    let job = daemon.json(&["job", &id]);
    assert_eq!(
        (job["payload"].as_str(), job["state"].as_str()),
        (Some("hello"), Some("ready"))
    );
    assert_eq!(
        (job["priority"].as_u64(), job["headers"]["trace"].as_str()),
        (Some(4), Some("t1"))
    );
    let shown = daemon.spool(Some("tok"), &["job", &id]);
    assert!(text(&shown).contains("payload      hello"), "{}", text(&shown));

    let paused = daemon.spool(Some("tok"), &["pause", "emails"]);
    assert_eq!(text(&paused).trim(), "emails: paused");
    let queues = daemon.json(&["queues"]);
    let emails = queues
        .as_array()
        .expect("a list")
        .iter()
        .find(|q| q["name"] == "emails")
        .expect("emails listed");
    assert_eq!(
        (emails["paused"].as_bool(), emails["ready"].as_u64()),
        (Some(true), Some(1))
    );
    let table = text(&daemon.spool(Some("tok"), &["queues"]));
    assert!(
        table.starts_with("QUEUE") && table.contains("emails    paused"),
        "{table}"
    );
    assert_eq!(daemon.json(&["resume", "emails"])["changed"], true);

    assert_eq!(daemon.json(&["dead", "list"]), Value::Array(Vec::new()));
    assert_eq!(daemon.json(&["dead", "replay", "--queue", "emails"])["replayed"], 0);
    let missing = daemon.spool(Some("tok"), &["job", "0190b5a0-0000-7000-8000-000000000000"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NOTFOUND"));

    let created = daemon.json(&[
        "schedule",
        "create",
        "nightly",
        "--queue",
        "emails",
        "--payload",
        "report",
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--overlap",
        "skip",
    ]);
    assert_eq!(created["created"], true);
    let bad = daemon.spool(
        Some("tok"),
        &[
            "schedule",
            "create",
            "x",
            "--queue",
            "emails",
            "--every",
            "1h",
            "--cron",
            "* * * * *",
        ],
    );
    assert!(!bad.status.success(), "one trigger only");
    let listed = daemon.json(&["schedules"]);
    let nightly = &listed.as_array().expect("a list")[0];
    assert_eq!(
        (
            nightly["name"].as_str(),
            nightly["trigger"]["timezone"].as_str(),
            nightly["overlap"].as_str()
        ),
        (Some("nightly"), Some("America/New_York"), Some("skip"))
    );
    assert!(nightly["next_tick_at_ms"].as_u64().is_some());
    let table = text(&daemon.spool(Some("tok"), &["schedules"]));
    assert!(table.starts_with("SCHEDULE") && table.contains("nightly"), "{table}");
    let job_id = daemon.json(&["schedule", "trigger", "nightly"])["job_id"]
        .as_str()
        .expect("a job id")
        .to_string();
    let shown = daemon.json(&["schedule", "show", "nightly"]);
    assert_eq!(
        (
            shown["history"][0]["kind"].as_str(),
            shown["history"][0]["job_id"].as_str()
        ),
        (Some("manual"), Some(job_id.as_str()))
    );
    assert_eq!(daemon.json(&["job", &job_id])["payload"], "report");

    // Update replaces the whole definition: a new trigger and payload, and the overlap left out is back to `allow`.
    let updated = daemon.json(&[
        "schedule",
        "update",
        "nightly",
        "--queue",
        "emails",
        "--payload",
        "report v2",
        "--every",
        "1h",
        "--max-attempts",
        "3",
        "--lease",
        "2m",
        "--start",
        "2026-01-01T00:00:00Z",
        "--end",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(updated["updated"], true);
    let shown = daemon.json(&["schedule", "show", "nightly"]);
    assert_eq!(
        (
            shown["trigger"]["every_ms"].as_u64(),
            shown["payload"].as_str(),
            shown["overlap"].as_str()
        ),
        (Some(3_600_000), Some("report v2"), Some("allow"))
    );
    assert_eq!(
        (
            shown["max_attempts"].as_u64(),
            shown["lease_ms"].as_u64(),
            shown["start_at_ms"].as_u64(),
            shown["end_at_ms"].as_u64()
        ),
        (Some(3), Some(120_000), Some(1_767_225_600_000), Some(4_070_908_800_000))
    );
    let table = text(&daemon.spool(Some("tok"), &["schedule", "show", "nightly"]));
    assert!(
        table.contains("max_attempts=3 lease_ms=120000") && table.contains("from 2026-01-01"),
        "{table}"
    );
    let missing = daemon.spool(
        Some("tok"),
        &["schedule", "update", "nope", "--queue", "emails", "--every", "1h"],
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NOTFOUND"));
    assert_eq!(daemon.json(&["schedule", "disable", "nightly"])["changed"], true);
    daemon.json(&["schedule", "delete", "nightly"]);
    let gone = daemon.spool(Some("tok"), &["schedule", "show", "nightly"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NOTFOUND"));

    let url = daemon.url.clone();
    drop(daemon);
    let down = Command::new(SPOOL)
        .args(["healthcheck", "--server", &url])
        .output()
        .expect("run spool");
    assert!(!down.status.success(), "a stopped broker is not healthy");
}
