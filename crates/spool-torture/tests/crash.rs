//! Crash test: runs `spool-torture produce` against one data directory, kills it with SIGKILL at a random moment,
//! recovers the directory with `spool-torture dump`, and checks every promise the producer printed — round after
//! round on the same directory, so the store also recovers from crashes that hit a previous recovery's writes.
//!
//! What must hold after each kill: a job whose enqueue was acknowledged (`ENQ`) is stored unless its ack was
//! acknowledged (`ACK`); an acked job never comes back, in this round or any later one; a dead-lettered job (`DEAD`)
//! stays dead; a job left leased (`LEASE`) is ready again. An ack or nack that was in flight at the kill (`ACKING` or
//! `NACKING` without its answer) may have landed or not, and either outcome is accepted.
#![cfg(unix)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_spool-torture");
const ROUNDS: usize = 8;
/// The producer's write-ahead log segments (the daemon's default is 32 MiB): at 256 KiB a round seals and checkpoints
/// dozens of them, so kills land in every stage of a checkpoint (sealing, folding into sled, deleting the segment).
const SEGMENT_BYTES: u64 = 256 * 1024;
/// How long a round may take to show every kind of event before the producer counts as stuck. Generous, because the
/// machine is shared; a healthy producer shows them all within a second.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// What the checker knows about a job, carried from round to round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Stored, not dead (ready or scheduled).
    Live,
    /// Stored and dead.
    Dead,
    /// Acked: must never be stored again.
    Gone,
}

/// What one round's output says about a job.
#[derive(Debug, Default)]
struct Seen {
    enq: bool,
    acking: bool,
    ack: bool,
    nacking: bool,
    dead: bool,
    lease: bool,
}

/// What the dump must show for a job.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Absent.
    Gone,
    /// Present and dead.
    Dead,
    /// Present and ready: it was leased at the kill.
    Ready,
    /// Present and ready or scheduled.
    Live,
    /// An ack was in flight: absent, or present and not dead.
    LiveOrGone,
    /// A dead-letter nack was in flight: present, dead or not.
    Present,
}

#[test]
fn acknowledged_work_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut rng = rand::thread_rng();
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut total_checked = 0;
    // The highest log segment a killed run left: above 1 means that run sealed segments (and handed them to the
    // checkpointer), which is what the small segment size is for.
    let mut highest_segment = 0;
    for round in 1..=ROUNDS {
        let delay = Duration::from_millis(rng.gen_range(100..=800));
        let (seen, lines) = run_and_kill(&data, delay);
        highest_segment = std::fs::read_dir(data.join("wal"))
            .expect("the log directory")
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wal")?.parse::<u64>().ok())
            .fold(highest_segment, u64::max);
        let stored = dump(&data);

        let mut expected: HashMap<String, Expect> = known
            .iter()
            .map(|(id, k)| {
                let e = match k {
                    Known::Live => Expect::Live,
                    Known::Dead => Expect::Dead,
                    Known::Gone => Expect::Gone,
                };
                (id.clone(), e)
            })
            .collect();
        for (id, s) in &seen {
            assert_ne!(
                known.get(id),
                Some(&Known::Gone),
                "round {round}: job {id} was acked in an earlier round but handed out again ({s:?})"
            );
            let e = if s.ack {
                Expect::Gone
            } else if s.dead {
                Expect::Dead
            } else if s.nacking {
                Expect::Present
            } else if s.acking {
                Expect::LiveOrGone
            } else if s.lease {
                Expect::Ready
            } else {
                Expect::Live
            };
            expected.insert(id.clone(), e);
        }

        let mut failures = Vec::new();
        for (id, e) in &expected {
            let state = stored.get(id).map(String::as_str);
            let ok = match e {
                Expect::Gone => state.is_none(),
                Expect::Dead => state == Some("dead"),
                Expect::Ready => state == Some("ready"),
                Expect::Live => matches!(state, Some("ready" | "scheduled")),
                Expect::LiveOrGone => matches!(state, None | Some("ready" | "scheduled")),
                Expect::Present => state.is_some(),
            };
            if !ok {
                failures.push(format!("{id}: expected {e:?}, stored as {state:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "round {round}: {} of {} jobs wrong after kill -9, e.g.:\n{}",
            failures.len(),
            expected.len(),
            failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );

        // Stored jobs the checker never heard of were enqueued, but killed before the answer was printed: durable
        // without having been promised, which is allowed. From now on they are held to the same promises.
        let unannounced = stored.keys().filter(|id| !expected.contains_key(*id)).count();
        for (id, state) in &stored {
            known.insert(id.clone(), if state == "dead" { Known::Dead } else { Known::Live });
        }
        for id in expected.keys().filter(|id| !stored.contains_key(*id)) {
            known.insert(id.clone(), Known::Gone);
        }

        let count = |f: fn(&Seen) -> bool| seen.values().filter(|s| f(s)).count();
        total_checked += expected.len();
        println!(
            "round {round}: killed at {} ms after {lines} lines: {} ENQ, {} ACK ({} in flight), {} DEAD ({} in flight), \
             {} LEASE; dump: {} stored jobs; checked {} jobs ({} unannounced enqueues adopted)",
            delay.as_millis(),
            count(|s| s.enq),
            count(|s| s.ack),
            count(|s| s.acking && !s.ack),
            count(|s| s.dead),
            count(|s| s.nacking && !s.dead),
            count(|s| s.lease),
            stored.len(),
            expected.len(),
            unannounced,
        );
    }
    assert!(
        highest_segment > 1,
        "no run sealed a log segment, so no kill landed in a checkpoint"
    );
    println!("{ROUNDS} rounds, {total_checked} job checks, highest segment {highest_segment}");
}

/// Runs the producer until `delay` has passed since its start *and* it has shown every kind of event, kills it with
/// SIGKILL, and returns what it printed (complete lines only) and how many lines that was.
fn run_and_kill(data: &Path, delay: Duration) -> (HashMap<String, Seen>, usize) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .arg("produce")
        .arg(data)
        .env("SPOOL_TORTURE_SEGMENT_BYTES", SEGMENT_BYTES.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn spool-torture produce");
    let stdout = child.stdout.take().expect("piped stdout");
    // A reader thread drains the pipe all the time, so the producer never blocks on a full pipe and the kill lands
    // in the middle of real work.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                // A line cut short by the kill was never fully printed, so it promised nothing.
                Ok(0) => return,
                Ok(_) if !line.ends_with('\n') => return,
                Ok(_) => {
                    if tx.send(line.trim_end().to_string()).is_err() {
                        return;
                    }
                }
                Err(e) => panic!("reading the producer's stdout: {e}"),
            }
        }
    });

    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut lines = 0;
    let mut record = |line: String| {
        lines += 1;
        let Some((tag, id)) = line.split_once(' ') else {
            panic!("malformed line {line:?}");
        };
        if tag == "READY" {
            return tag.to_string();
        }
        let s = seen.entry(id.to_string()).or_default();
        match tag {
            "ENQ" => s.enq = true,
            "ACKING" => s.acking = true,
            "ACK" => s.ack = true,
            "NACKING" => s.nacking = true,
            "DEAD" => s.dead = true,
            "LEASE" => s.lease = true,
            _ => panic!("unknown line {line:?}"),
        }
        tag.to_string()
    };

    // Wait on the producer's own output, not on the clock, for it to be doing everything it can do.
    let mut pending: HashSet<&str> = ["READY", "ENQ", "ACK", "DEAD", "LEASE"].into();
    let progress_deadline = Instant::now() + PROGRESS_TIMEOUT;
    while !pending.is_empty() {
        let left = progress_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let tag = record(line);
                pending.remove(tag.as_str());
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the producer stopped before showing {pending:?}: {e:?} (its stderr is above)");
            }
        }
    }
    std::thread::sleep((start + delay).saturating_duration_since(Instant::now()));
    child.kill().expect("kill -9 the producer");
    let status = child.wait().expect("wait for the producer");
    assert_eq!(status.signal(), Some(9), "the producer exited on its own: {status}");
    reader.join().expect("reader thread");
    for line in rx.try_iter() {
        record(line);
    }
    (seen, lines)
}

/// Recovers the directory in a fresh process and returns each stored job's state, by id.
fn dump(data: &Path) -> HashMap<String, String> {
    let out = Command::new(BIN)
        .arg("dump")
        .arg(data)
        .output()
        .expect("run spool-torture dump");
    assert!(
        out.status.success(),
        "dump failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 dump");
    let mut jobs = HashMap::new();
    let mut end = None;
    for line in text.lines() {
        match line.split(' ').collect::<Vec<_>>()[..] {
            ["JOB", id, state] => {
                jobs.insert(id.to_string(), state.to_string());
            }
            ["END", n] => end = Some(n.parse::<usize>().expect("END count")),
            _ => panic!("unexpected dump line {line:?}"),
        }
    }
    assert_eq!(end, Some(jobs.len()), "the dump is truncated or lists a job twice");
    jobs
}
