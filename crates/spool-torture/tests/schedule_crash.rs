//! Schedule crash test: runs `spool-torture schedule` (a one-second schedule with `catch_up = all`) on one data
//! directory, kills it with SIGKILL at random moments over many ticks, restarts it, and then checks the store: every
//! tick from the schedule's creation to the last one recorded produced exactly one job — none doubled by a crash
//! right after a firing, none lost to a crash right before one — and the ticks that fell while the process was dead
//! were caught up by the time it said `READY`.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_spool-torture");
const ROUNDS: usize = 10;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Starts the scheduler, waits for `READY` (catch-up done), lets it run, kills it. Returns the time of `READY`.
fn round(dir: &Path, run_for: Duration) -> u64 {
    let mut child = Command::new(BIN)
        .arg("schedule")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn spool-torture schedule");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY", "the scheduler did not start");
    let ready = now_ms();
    std::thread::sleep(run_for);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    ready
}

#[test]
fn every_tick_fires_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut last_ready = 0;
    for _ in 0..ROUNDS {
        // Random kill points over 0.2–2.5 s cover every phase of a tick: idle, firing, committing.
        last_ready = round(dir.path(), Duration::from_millis(rng.gen_range(200..2_500)));
        // Some rounds stay down for more than a tick, so catch-up has work to do.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1_500)));
    }

    let out = Command::new(BIN).arg("schedule-dump").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut ticks: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut since, mut last) = (0, 0);
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("TICK", t)) => *ticks.entry(t.parse().unwrap()).or_default() += 1,
            Some(("SINCE", t)) => since = t.parse().unwrap(),
            Some(("LAST", t)) => last = t.parse().unwrap(),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    let doubled: Vec<_> = ticks.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubled.is_empty(), "ticks fired twice: {doubled:?}");
    let first = (since / 1_000 + 1) * 1_000;
    let expected: Vec<u64> = (first / 1_000..=last / 1_000).map(|s| s * 1_000).collect();
    let got: Vec<u64> = ticks.keys().copied().collect();
    assert_eq!(got, expected, "every tick from the first to the last exactly once");
    // The last start caught up every tick that fell while the process was dead, before it said READY.
    assert!(
        last + 1_000 > last_ready,
        "last tick {last} is behind the last start at {last_ready}"
    );
    assert!(got.len() >= 10, "only {} ticks in the window", got.len());
}
