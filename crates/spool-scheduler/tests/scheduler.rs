//! The scheduler on a manual clock: ticks across DST in a named zone, catch-up and overlap policies, disable,
//! trigger-now, restarts and clock steps that must not double a tick, and the errors bad schedules get.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use spool_core::{
    CatchUp, Clock, ErrorCode, FiringKind, ManualClock, Overlap, QueueName, Schedule, ScheduleDef, ScheduleOrigin,
    ScheduleProgress, ScheduledJob, TimestampMs, Trigger,
};
use spool_engine::{Broker, End, EngineConfig, FireOutcome, PutMode, ReserveRequest, RunOutcome};
use spool_scheduler::{validate_specs, ScheduleSpec, Scheduler};
use spool_store::{MemStore, Mutation, Store};

const HOUR: u64 = 3_600_000;

fn ms(rfc3339: &str) -> TimestampMs {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis() as u64
}

struct Rig {
    store: MemStore,
    clock: ManualClock,
    broker: Broker,
    scheduler: Scheduler,
}

impl Rig {
    fn new(start: TimestampMs) -> Self {
        Self::over(MemStore::new(), ManualClock::new(start), EngineConfig::default())
    }

    fn over(store: MemStore, clock: ManualClock, config: EngineConfig) -> Self {
        let broker = Broker::open(Arc::new(store.clone()), Arc::new(clock.clone()), config).unwrap();
        let scheduler = Scheduler::new(broker.clone(), Arc::new(clock.clone()));
        Rig {
            store,
            clock,
            broker,
            scheduler,
        }
    }

    /// A restart: a new broker and scheduler over the same store and clock.
    fn restart(self) -> Self {
        Self::over(self.store, self.clock, EngineConfig::default())
    }

    /// Ticks of the jobs waiting in `queue`, in order (manual runs have none).
    fn job_ticks(&self, queue: &str) -> Vec<TimestampMs> {
        let mut ticks: Vec<TimestampMs> = self
            .broker
            .peek(queue, End::Next, 0, 10_000)
            .unwrap()
            .iter()
            .filter_map(|j| j.headers().get("schedule_tick").map(|t| t.parse().unwrap()))
            .collect();
        ticks.sort_unstable();
        ticks
    }

    /// Moves the clock in `step` increments up to `until`, running the scheduler at each; returns the ticks fired.
    async fn drive(&self, until: TimestampMs, step: u64) -> Vec<TimestampMs> {
        let mut fired = Vec::new();
        while self.clock.now_ms() < until {
            self.clock.advance(step);
            let report = self.scheduler.run_due().await.unwrap();
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            fired.extend(
                report
                    .fired
                    .iter()
                    .filter(|(_, _, o)| matches!(o, FireOutcome::Enqueued(_)))
                    .map(|(_, t, _)| *t),
            );
        }
        fired
    }
}

fn def(name: &str, trigger: Trigger) -> ScheduleDef {
    ScheduleDef {
        catch_up: CatchUp::Skip,
        ..ScheduleDef::new(
            name,
            ScheduledJob::new(QueueName::new("q").unwrap(), b"tick".to_vec()),
            trigger,
        )
    }
}

fn cron(expr: &str, tz: &str) -> Trigger {
    Trigger::Cron {
        expr: expr.into(),
        tz: tz.into(),
    }
}

#[tokio::test]
async fn cron_fires_once_per_day_across_both_dst_changes_in_new_york() {
    let rig = Rig::new(ms("2026-03-07T00:00:00-05:00"));
    let put = |d| rig.broker.schedule_put(d, PutMode::Create);
    put(def("spring", cron("30 2 * * *", "America/New_York")))
        .await
        .unwrap();
    let fired = rig.drive(ms("2026-03-09T12:00:00-04:00"), 60_000).await;
    // 02:30 does not exist on 2026-03-08 (clocks jump 02:00 → 03:00): the run happens once, at 03:00 EDT.
    assert_eq!(
        fired,
        [
            ms("2026-03-07T02:30:00-05:00"),
            ms("2026-03-08T03:00:00-04:00"),
            ms("2026-03-09T02:30:00-04:00")
        ]
    );

    let rig = Rig::new(ms("2026-10-31T00:00:00-04:00"));
    rig.broker
        .schedule_put(def("fall", cron("30 1 * * *", "America/New_York")), PutMode::Create)
        .await
        .unwrap();
    let fired = rig.drive(ms("2026-11-02T12:00:00-05:00"), 60_000).await;
    // 01:30 happens twice on 2026-11-01 (01:00–02:00 repeats): the run happens once, at the first.
    assert_eq!(
        fired,
        [
            ms("2026-10-31T01:30:00-04:00"),
            ms("2026-11-01T01:30:00-04:00"),
            ms("2026-11-02T01:30:00-05:00")
        ]
    );
    assert_eq!(rig.job_ticks("q"), fired);
}

#[tokio::test]
async fn interval_ticks_are_elapsed_time_across_dst() {
    let rig = Rig::new(ms("2026-03-08T00:00:00-05:00") - 1);
    rig.broker
        .schedule_put(def("hourly", Trigger::Every { every_ms: HOUR }), PutMode::Create)
        .await
        .unwrap();
    // The local day of 2026-03-08 in New York is 23 hours long: an hourly interval fires 23 times within it, every
    // tick exactly an hour after the one before.
    let fired = rig.drive(ms("2026-03-09T00:00:00-04:00") - 1, 30_000).await;
    assert_eq!(fired.len(), 23);
    assert!(fired.windows(2).all(|w| w[1] - w[0] == HOUR));
    assert_eq!(fired[0], ms("2026-03-08T00:00:00-05:00"));
}

/// A schedule with an hourly tick, run at 10:00, then the daemon is "down" until 15:30.
async fn after_downtime(catch_up: CatchUp) -> (Rig, Vec<TimestampMs>) {
    let rig = Rig::new(ms("2026-01-01T09:59:00Z"));
    let mut d = def("h", Trigger::Every { every_ms: HOUR });
    d.catch_up = catch_up;
    rig.broker.schedule_put(d, PutMode::Create).await.unwrap();
    let first = rig.drive(ms("2026-01-01T10:00:00Z"), 60_000).await;
    assert_eq!(first, [ms("2026-01-01T10:00:00Z")]);
    let rig = rig.restart();
    rig.clock.set(ms("2026-01-01T15:30:00Z"));
    let report = rig.scheduler.run_due().await.unwrap();
    let fired = report.fired.iter().map(|(_, t, _)| *t).collect();
    (rig, fired)
}

#[tokio::test]
async fn catch_up_policies_after_downtime() {
    // Ticks 11:00 … 15:00 (five) were missed while down.
    let (rig, fired) = after_downtime(CatchUp::Skip).await;
    assert!(fired.is_empty(), "skip fires nothing 30 min late: {fired:?}");
    let info = rig.broker.schedule_get("h").unwrap();
    assert_eq!(info.history[0].firing.kind, FiringKind::Missed(5));
    assert_eq!(info.next_tick, Some(ms("2026-01-01T16:00:00Z")));

    let (rig, fired) = after_downtime(CatchUp::One).await;
    assert_eq!(fired, [ms("2026-01-01T15:00:00Z")]);
    assert_eq!(rig.broker.schedule_get("h").unwrap().history[0].firing.missed_before, 4);

    let (_, fired) = after_downtime(CatchUp::All { limit: 100 }).await;
    assert_eq!(
        fired,
        (11..=15)
            .map(|h| ms(&format!("2026-01-01T{h}:00:00Z")))
            .collect::<Vec<_>>()
    );

    let (rig, fired) = after_downtime(CatchUp::All { limit: 2 }).await;
    assert_eq!(fired, [ms("2026-01-01T14:00:00Z"), ms("2026-01-01T15:00:00Z")]);
    assert_eq!(rig.job_ticks("q").len(), 3);

    // Skip still fires a tick that is only a little late (within the one-minute grace).
    let rig = Rig::new(ms("2026-01-01T09:59:00Z"));
    rig.broker
        .schedule_put(def("h", Trigger::Every { every_ms: HOUR }), PutMode::Create)
        .await
        .unwrap();
    rig.clock.set(ms("2026-01-01T10:00:30Z"));
    assert_eq!(rig.scheduler.run_due().await.unwrap().fired.len(), 1);
}

/// Runs the scheduler once at `at` after an outage; returns the ticks it enqueued.
async fn fired_after_outage(rig: &Rig, at: TimestampMs) -> Vec<TimestampMs> {
    rig.clock.set(at);
    let report = rig.scheduler.run_due().await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report.fired.iter().map(|(_, t, _)| *t).collect()
}

#[tokio::test]
async fn an_outage_of_more_ticks_than_one_scan_still_fires_the_owed_tick() {
    // Every second until an end 30 hours on; the daemon is down until an hour past the end: 108,000 ticks missed,
    // more than one scan takes, and none of them after the point a jump by the average spacing would land on.
    let start = ms("2026-01-05T00:00:00Z");
    let end = start + 30 * HOUR;
    let rig = Rig::new(start);
    let mut d = def("s", Trigger::Every { every_ms: 1_000 });
    (d.catch_up, d.end_at) = (CatchUp::One, Some(end));
    rig.broker.schedule_put(d, PutMode::Create).await.unwrap();
    assert_eq!(fired_after_outage(&rig, end + HOUR).await, [end]);
    let info = rig.broker.schedule_get("s").unwrap();
    assert!(info.history[0].firing.missed_before > 100_000, "{:?}", info.history[0]);
    assert_eq!(
        rig.scheduler.next_wake(),
        None,
        "nothing left to do: the loop must not spin"
    );

    // Ticks every 5 s in office hours only, Monday to Friday; down four weeks, back in the evening: the latest tick
    // is three hours back, far behind where the average spacing (~18 s) puts it.
    let rig = Rig::new(start);
    let mut d = def("office", cron("*/5 * 9-17 * * MON-FRI", "UTC"));
    d.catch_up = CatchUp::One;
    rig.broker.schedule_put(d, PutMode::Create).await.unwrap();
    let back = ms("2026-01-30T20:00:00Z");
    assert_eq!(fired_after_outage(&rig, back).await, [ms("2026-01-30T17:59:55Z")]);
    assert_eq!(rig.scheduler.next_wake(), Some(ms("2026-02-02T09:00:00Z")));
}

#[tokio::test]
async fn a_one_off_created_after_its_time_still_runs_once() {
    let rig = Rig::new(1_000_000);
    let once = ScheduleDef::new(
        "late",
        ScheduledJob::new(QueueName::new("q").unwrap(), b"x".to_vec()),
        Trigger::Once { at: 995_000 },
    );
    rig.broker.schedule_put(once, PutMode::Create).await.unwrap();
    assert_eq!(rig.drive(1_003_000, 1_000).await, [995_000]);
    assert_eq!(rig.job_ticks("q"), [995_000]);

    // Given a window around the same time, it does not run again.
    let once = |at: u64, end_at: Option<u64>| ScheduleDef {
        end_at,
        ..ScheduleDef::new(
            "late",
            ScheduledJob::new(QueueName::new("q").unwrap(), b"x".to_vec()),
            Trigger::Once { at },
        )
    };
    rig.broker
        .schedule_put(once(995_000, Some(2_000_000)), PutMode::Update)
        .await
        .unwrap();
    assert!(rig.drive(1_005_000, 1_000).await.is_empty());
    // Moved to a time before the tick it already fired, it runs again, once.
    rig.broker
        .schedule_put(once(990_000, None), PutMode::Update)
        .await
        .unwrap();
    assert_eq!(rig.drive(1_008_000, 1_000).await, [990_000]);
}

#[tokio::test]
async fn restarts_clock_steps_and_racing_schedulers_never_double_a_tick() {
    let rig = Rig::new(1_000_000);
    let mut d = def("s", Trigger::Every { every_ms: 1_000 });
    d.catch_up = CatchUp::All { limit: 1_000 };
    rig.broker.schedule_put(d, PutMode::Create).await.unwrap();
    rig.drive(1_010_000, 700).await;
    let rig = rig.restart();
    // The clock steps back ten seconds, then forward again: nothing fires twice.
    rig.clock.set(1_000_000);
    rig.drive(1_020_000, 1_300).await;
    // Two schedulers over one broker, racing over the same due ticks.
    rig.clock.advance(30_000);
    let other = Scheduler::new(rig.broker.clone(), Arc::new(rig.clock.clone()));
    let (a, b) = tokio::join!(rig.scheduler.run_due(), other.run_due());
    let enqueued = |r: &spool_scheduler::RunReport| {
        r.fired
            .iter()
            .filter(|(_, _, o)| matches!(o, FireOutcome::Enqueued(_)))
            .count()
    };
    assert_eq!(enqueued(&a.unwrap()) + enqueued(&b.unwrap()), 30);
    let ticks = rig.job_ticks("q");
    let expected: Vec<TimestampMs> = (1_001..=1_050).map(|s| s * 1_000).collect();
    assert_eq!(ticks, expected, "every tick exactly once");
}

#[tokio::test]
async fn overlap_skip_waits_for_the_previous_run() {
    let rig = Rig::new(0);
    let mut d = def("o", Trigger::Every { every_ms: 10_000 });
    d.overlap = Overlap::Skip;
    rig.broker.schedule_put(d.clone(), PutMode::Create).await.unwrap();
    d.name = "a".into();
    d.overlap = Overlap::Allow;
    d.job.queue = QueueName::new("allowed").unwrap();
    rig.broker.schedule_put(d, PutMode::Create).await.unwrap();

    rig.drive(10_000, 10_000).await;
    rig.drive(20_000, 10_000).await;
    assert_eq!(
        rig.job_ticks("q"),
        [10_000],
        "tick 20 s skipped: the 10 s job is still ready"
    );
    let info = rig.broker.schedule_get("o").unwrap();
    assert!(matches!(info.history[0].firing.kind, FiringKind::SkippedOverlap(_)));
    assert_eq!(rig.job_ticks("allowed"), [10_000, 20_000]);

    // Leased still counts as running; acked does not.
    let job = rig
        .broker
        .reserve(ReserveRequest::new(vec!["q".into()], 1, Duration::ZERO))
        .await
        .unwrap()
        .remove(0);
    rig.drive(30_000, 10_000).await;
    assert_eq!(rig.broker.queue_stats("q").unwrap().enqueued_total, 1);
    rig.broker.ack(job.id, job.lease.unwrap().token).await.unwrap();
    rig.drive(40_000, 10_000).await;
    assert_eq!(rig.job_ticks("q"), [40_000]);
    let history = rig.broker.schedule_get("o").unwrap().history;
    assert_eq!(history[3].outcome, Some(RunOutcome::Done), "{history:?}");
}

#[tokio::test]
async fn disabling_stops_firing_and_trigger_now_fires_once() {
    let rig = Rig::new(0);
    let mut d = def("d", Trigger::Every { every_ms: 1_000 });
    d.catch_up = CatchUp::All { limit: 100 };
    rig.broker.schedule_put(d, PutMode::Create).await.unwrap();
    rig.drive(3_000, 1_000).await;
    assert!(rig.broker.schedule_set_enabled("d", false).await.unwrap());
    rig.drive(10_000, 1_000).await;
    assert_eq!(rig.job_ticks("q"), [1_000, 2_000, 3_000]);
    assert_eq!(rig.broker.schedule_get("d").unwrap().next_tick, None);

    // Trigger-now works while disabled, once per call, and leaves the tick sequence alone.
    let id = rig.broker.schedule_trigger("d").await.unwrap();
    let info = rig.broker.schedule_get("d").unwrap();
    assert_eq!(info.history[0].firing.kind, FiringKind::Manual(id));
    assert_eq!(
        info.history[0].outcome,
        Some(RunOutcome::Live(spool_core::JobState::Ready))
    );
    assert_eq!(rig.broker.queue_stats("q").unwrap().ready, 4);

    // Re-enabled, it does not owe the ticks that fell while it was disabled.
    assert!(rig.broker.schedule_set_enabled("d", true).await.unwrap());
    rig.drive(12_000, 1_000).await;
    assert_eq!(rig.job_ticks("q"), [1_000, 2_000, 3_000, 11_000, 12_000]);
}

#[tokio::test]
async fn bad_schedules_get_errors_naming_the_field() {
    let config = EngineConfig {
        auto_create_queues: false,
        ..EngineConfig::default()
    };
    let rig = Rig::over(MemStore::new(), ManualClock::new(0), config);
    let put = |d: ScheduleDef| rig.broker.schedule_put(d, PutMode::Create);
    let e = put(def("c", cron("61 * * * *", "UTC"))).await.unwrap_err();
    assert!(e.code == ErrorCode::Invalid && e.message.starts_with("cron:"), "{e}");
    let e = put(def("z", cron("* * * * *", "Mars/Olympus"))).await.unwrap_err();
    assert!(
        e.message.starts_with("timezone:") && e.message.contains("Mars/Olympus"),
        "{e}"
    );
    let e = put(def("i", Trigger::Every { every_ms: 0 })).await.unwrap_err();
    assert!(e.message.starts_with("every:"), "{e}");
    let e = put(def("bad name", Trigger::Every { every_ms: 1 })).await.unwrap_err();
    assert!(e.message.starts_with("name:"), "{e}");
    let mut d = def("nq", Trigger::Every { every_ms: 1 });
    d.job.queue = QueueName::new("nowhere").unwrap();
    let e = put(d).await.unwrap_err();
    assert!(
        e.code == ErrorCode::UnknownQueue && e.message.starts_with("queue:"),
        "{e}"
    );
    let mut d = def("dup", Trigger::Every { every_ms: 1_000 });
    d.job.queue = QueueName::new("default").unwrap();
    put(d.clone()).await.unwrap();
    let e = put(d).await.unwrap_err();
    assert!(
        e.message.starts_with("name:") && e.message.contains("already exists"),
        "{e}"
    );
    assert_eq!(rig.broker.schedule_list().len(), 1);

    // The config file's form: the error names the schedule and the field.
    let specs: Vec<ScheduleSpec> = toml::from_str::<BTreeMap<String, Vec<ScheduleSpec>>>(
        r#"
        [[schedules]]
        name = "ok"
        queue = "default"
        every = "30s"
        [[schedules]]
        name = "nightly"
        queue = "default"
        cron = "0 25 * * *"
        "#,
    )
    .unwrap()
    .remove("schedules")
    .unwrap();
    let e = validate_specs(&specs).unwrap_err();
    assert!(e.starts_with("schedules.nightly: cron:"), "{e}");
    let mut dup = specs.clone();
    dup[1] = dup[0].clone();
    let e = validate_specs(&dup).unwrap_err();
    assert!(e.starts_with("schedules.ok: name: duplicate"), "{e}");
    let mut zero = specs.clone();
    zero[1].cron = None;
    zero[1].every = Some("0s".into());
    assert!(validate_specs(&zero)
        .unwrap_err()
        .starts_with("schedules.nightly: every:"));
    let mut huge = specs.clone();
    huge[1].cron = None;
    huge[1].every = Some("600000000y".into());
    let e = validate_specs(&huge).unwrap_err();
    assert!(
        e.starts_with("schedules.nightly: every:") && e.contains("longer"),
        "{e}"
    );
    let mut zone = specs.clone();
    zone[1].cron = Some("0 3 * * *".into());
    zone[1].timezone = Some("Europe/Atlantis".into());
    assert!(validate_specs(&zone)
        .unwrap_err()
        .starts_with("schedules.nightly: timezone:"));
    let mut queue = specs;
    queue[1].queue = "no spaces".into();
    queue[1].cron = Some("0 3 * * *".into());
    assert!(validate_specs(&queue)
        .unwrap_err()
        .starts_with("schedules.nightly: queue:"));
}

#[tokio::test]
async fn config_schedules_apply_report_changes_and_are_read_only_to_the_api() {
    let rig = Rig::new(0);
    let spec = |every: &str| -> Vec<ScheduleDef> {
        let text = format!("name = \"cfg\"\nqueue = \"default\"\nevery = \"{every}\"\n");
        validate_specs(&[toml::from_str(&text).unwrap()]).unwrap()
    };
    let report = rig.scheduler.apply_config(spec("1m")).await.unwrap();
    assert_eq!(report.created, ["cfg"]);
    assert_eq!(rig.scheduler.apply_config(spec("1m")).await.unwrap().unchanged, ["cfg"]);
    // A runtime disable survives a restart that re-applies the same file.
    rig.broker.schedule_set_enabled("cfg", false).await.unwrap();
    let rig = rig.restart();
    assert_eq!(rig.scheduler.apply_config(spec("1m")).await.unwrap().unchanged, ["cfg"]);
    assert!(!rig.broker.schedule_get("cfg").unwrap().schedule.def.enabled);
    assert_eq!(rig.scheduler.apply_config(spec("2m")).await.unwrap().changed, ["cfg"]);
    assert!(!rig.broker.schedule_get("cfg").unwrap().schedule.def.enabled);
    let e = rig
        .broker
        .schedule_delete("cfg", ScheduleOrigin::Api)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::WrongState);
    assert_eq!(rig.scheduler.apply_config(Vec::new()).await.unwrap().removed, ["cfg"]);
    assert!(rig.broker.schedule_list().is_empty());
}

#[tokio::test]
async fn the_files_enabled_flag_wins_when_it_changes_and_a_runtime_toggle_stands_until_then() {
    let rig = Rig::new(0);
    let spec = |enabled: bool| -> Vec<ScheduleDef> {
        let text = format!("name = \"cfg\"\nqueue = \"q\"\nevery = \"1s\"\nenabled = {enabled}\n");
        validate_specs(&[toml::from_str(&text).unwrap()]).unwrap()
    };
    let enabled = |rig: &Rig| rig.broker.schedule_get("cfg").unwrap().schedule.def.enabled;
    assert_eq!(rig.scheduler.apply_config(spec(true)).await.unwrap().created, ["cfg"]);
    // The operator sets `enabled = false` in the file and restarts.
    let rig = rig.restart();
    assert_eq!(rig.scheduler.apply_config(spec(false)).await.unwrap().changed, ["cfg"]);
    assert!(!enabled(&rig));
    assert!(rig.drive(3_000, 1_000).await.is_empty());
    // Enabled at runtime, it stays enabled while the file still says false.
    rig.broker.schedule_set_enabled("cfg", true).await.unwrap();
    let rig = rig.restart();
    assert_eq!(
        rig.scheduler.apply_config(spec(false)).await.unwrap().unchanged,
        ["cfg"]
    );
    assert!(enabled(&rig));
    // The file says true again: already enabled, but the file's new flag is recorded, so a later runtime disable
    // stands against it.
    assert_eq!(rig.scheduler.apply_config(spec(true)).await.unwrap().changed, ["cfg"]);
    rig.broker.schedule_set_enabled("cfg", false).await.unwrap();
    let rig = rig.restart();
    assert_eq!(rig.scheduler.apply_config(spec(true)).await.unwrap().unchanged, ["cfg"]);
    assert!(!enabled(&rig));
    // And the file's flag flipping to true re-enables it, counting ticks from then.
    assert_eq!(rig.scheduler.apply_config(spec(false)).await.unwrap().changed, ["cfg"]);
    assert_eq!(rig.scheduler.apply_config(spec(true)).await.unwrap().changed, ["cfg"]);
    assert!(enabled(&rig));
    assert_eq!(rig.drive(5_000, 1_000).await, [4_000, 5_000]);

    // A record from before the file's flag was kept, disabled: the file's `true` does not turn it back on.
    let store = MemStore::new();
    let mut old = spec(true).remove(0);
    old.enabled = false;
    let record = Schedule {
        def: old,
        progress: ScheduleProgress::default(),
        file_enabled: None,
    };
    store
        .submit(vec![Mutation::PutSchedule(Box::new(record))])
        .await
        .unwrap();
    let rig = Rig::over(store, ManualClock::new(0), EngineConfig::default());
    assert_eq!(
        rig.scheduler.apply_config(spec(true)).await.unwrap().changed,
        ["cfg"],
        "written once, to keep the file's flag"
    );
    assert!(!enabled(&rig));
    assert_eq!(rig.scheduler.apply_config(spec(true)).await.unwrap().unchanged, ["cfg"]);
    // From then on the file's flag works as for any other schedule.
    assert_eq!(rig.scheduler.apply_config(spec(false)).await.unwrap().changed, ["cfg"]);
    assert_eq!(rig.scheduler.apply_config(spec(true)).await.unwrap().changed, ["cfg"]);
    assert!(enabled(&rig));
}

#[tokio::test(start_paused = true)]
async fn the_loop_fires_on_its_own_and_stops_when_told() {
    let rig = Rig::new(0);
    rig.broker
        .schedule_put(def("loop", Trigger::Every { every_ms: 1_000 }), PutMode::Create)
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rig.scheduler.clone().run(async {
        let _ = stop_rx.await;
    }));
    // The manual clock and tokio's paused clock move together, a second at a time.
    for _ in 0..3 {
        rig.clock.advance(1_000);
        tokio::time::sleep(Duration::from_millis(1_001)).await;
    }
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(rig.job_ticks("q"), [1_000, 2_000, 3_000]);
}
