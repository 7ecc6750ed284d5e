//! Schedules through the gRPC door over real sockets: the full lifecycle (create, list, get, update, disable,
//! enable, trigger, history, delete), bad definitions refused with INVALID_ARGUMENT / NOT_FOUND naming the field and
//! carrying `spool-error-code`, and the rule that schedules of the config file are read-only through the API except
//! for enable, disable and trigger.

mod common;

use common::T0;
use spool_client::{proto, ClientError};
use spool_core::{ErrorCode, QueueName, ScheduleDef, ScheduleOrigin, ScheduledJob, Trigger};
use spool_engine::{EngineConfig, PutMode};
use spool_grpc::GrpcConfig;
use tonic::Code;

use proto::schedule_def::Trigger as Wire;

fn def(name: &str, queue: &str, trigger: Wire) -> proto::ScheduleDef {
    proto::ScheduleDef {
        name: name.into(),
        job: Some(proto::ScheduledJob {
            queue: queue.into(),
            payload: b"report".to_vec(),
            ..Default::default()
        }),
        trigger: Some(trigger),
        ..Default::default()
    }
}

fn cron(expr: &str, timezone: &str) -> Wire {
    Wire::Cron(proto::CronTrigger {
        expr: expr.into(),
        timezone: timezone.into(),
    })
}

#[track_caller]
fn assert_refused(e: ClientError, status: Code, code: ErrorCode, words: &str) {
    assert_eq!(e.status(), Some(status), "{e}");
    assert_eq!(e.code(), Some(code), "{e}");
    assert!(e.to_string().contains(words), "{e:?} should mention {words:?}");
}

#[tokio::test]
async fn a_schedule_lives_through_the_grpc_door() {
    let server = common::start().await;
    let c = server.client().await;

    let mut nightly = def("nightly", "default", cron("30 2 * * *", "America/New_York"));
    nightly.overlap = proto::Overlap::Skip.into();
    nightly.catch_up = proto::CatchUp::All.into();
    nightly.catch_up_limit = Some(5);
    c.create_schedule(nightly).await.expect("create");
    c.create_schedule(def("poll", "default", Wire::EveryMs(30_000)))
        .await
        .expect("create");

    let listed = c.list_schedules().await.expect("list");
    let names: Vec<_> = listed.iter().map(|s| s.def.as_ref().unwrap().name.as_str()).collect();
    assert_eq!(names, ["nightly", "poll"]);
    let poll = &listed[1];
    assert_eq!(poll.origin(), proto::ScheduleOrigin::Api);
    // The interval is aligned to the epoch, and counts from creation: the first tick is the next multiple.
    assert_eq!(poll.next_tick_at_ms, Some(T0 + 30_000 - T0 % 30_000));
    let poll_def = poll.def.as_ref().unwrap();
    assert_eq!(
        (poll_def.catch_up(), poll_def.overlap(), poll_def.enabled),
        (proto::CatchUp::Skip, proto::Overlap::Allow, Some(true))
    );

    let nightly = c.get_schedule("nightly").await.expect("get");
    let nightly_def = nightly.def.as_ref().unwrap();
    assert_eq!(nightly_def.trigger, Some(cron("30 2 * * *", "America/New_York")));
    assert_eq!(
        (
            nightly_def.catch_up(),
            nightly_def.catch_up_limit,
            nightly_def.overlap()
        ),
        (proto::CatchUp::All, Some(5), proto::Overlap::Skip)
    );
    assert_eq!(nightly.history, []);

    // Update replaces the whole definition: the UTC default zone comes back, the policies reset to defaults.
    c.update_schedule(def("nightly", "bulk", cron("0 3 * * *", "")))
        .await
        .expect("update");
    let nightly = c.get_schedule("nightly").await.expect("get");
    let nightly_def = nightly.def.as_ref().unwrap();
    assert_eq!(nightly_def.trigger, Some(cron("0 3 * * *", "UTC")));
    assert_eq!(nightly_def.job.as_ref().unwrap().queue, "bulk");
    assert_eq!(nightly_def.catch_up(), proto::CatchUp::Skip);

    assert!(c.disable_schedule("poll").await.expect("disable"));
    assert!(!c.disable_schedule("poll").await.expect("disable again"));
    let poll = c.get_schedule("poll").await.expect("get");
    assert_eq!((poll.def.unwrap().enabled, poll.next_tick_at_ms), (Some(false), None));

    // Trigger works on a disabled schedule and shows in the history with the job and its state.
    let job_id = c.trigger_schedule("poll").await.expect("trigger");
    let job = c.get_job(&job_id).await.expect("the triggered job exists");
    assert_eq!(
        (
            job.queue.as_str(),
            job.payload.as_slice(),
            job.headers.get("schedule").map(String::as_str)
        ),
        ("default", b"report".as_slice(), Some("poll"))
    );
    let history = c.get_schedule("poll").await.expect("get").history;
    assert_eq!(history.len(), 1);
    let firing = &history[0];
    assert_eq!(firing.kind(), proto::FiringKind::Manual);
    assert_eq!(firing.job_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(
        (firing.job_state(), firing.job_done, firing.tick_at_ms),
        (proto::JobState::Ready, false, T0)
    );
    // Once the job is gone the history says so.
    c.cancel(&job_id).await.expect("cancel");
    let firing = c.get_schedule("poll").await.expect("get").history.remove(0);
    assert_eq!(
        (firing.job_state(), firing.job_done),
        (proto::JobState::Unspecified, true)
    );

    assert!(c.enable_schedule("poll").await.expect("enable"));
    assert!(c.get_schedule("poll").await.expect("get").next_tick_at_ms.is_some());

    c.delete_schedule("poll").await.expect("delete");
    assert_refused(
        c.get_schedule("poll").await.unwrap_err(),
        Code::NotFound,
        ErrorCode::NotFound,
        "no schedule poll",
    );
    assert_refused(
        c.delete_schedule("poll").await.unwrap_err(),
        Code::NotFound,
        ErrorCode::NotFound,
        "poll",
    );
    assert_refused(
        c.trigger_schedule("poll").await.unwrap_err(),
        Code::NotFound,
        ErrorCode::NotFound,
        "poll",
    );
    assert_eq!(c.list_schedules().await.expect("list").len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_field_and_change_nothing() {
    let engine = EngineConfig {
        auto_create_queues: false,
        ..EngineConfig::default()
    };
    let server = common::start_with(engine, GrpcConfig::default()).await;
    let c = server.client().await;
    let invalid = |e, words| assert_refused(e, Code::InvalidArgument, ErrorCode::Invalid, words);

    let refused = |d| {
        let c = c.clone();
        async move { c.create_schedule(d).await.unwrap_err() }
    };
    invalid(
        refused(def("s", "default", cron("0 25 * * *", ""))).await,
        "cron: invalid expression",
    );
    invalid(
        refused(def("s", "default", cron("* * * * *", "Mars/Olympus"))).await,
        "timezone: unknown time zone",
    );
    invalid(
        refused(def("s", "default", Wire::EveryMs(0))).await,
        "every: the interval must be more than 0",
    );
    invalid(refused(def("bad name", "default", Wire::EveryMs(1_000))).await, "name:");
    invalid(refused(def("s", "", Wire::EveryMs(1_000))).await, "schedule.job.queue");
    let mut unknown_enum = def("s", "default", Wire::EveryMs(1_000));
    unknown_enum.catch_up = 42;
    invalid(refused(unknown_enum).await, "schedule.catch_up: unknown enum value 42");
    let mut unknown_enum = def("s", "default", Wire::EveryMs(1_000));
    unknown_enum.overlap = 7;
    invalid(refused(unknown_enum).await, "schedule.overlap: unknown enum value 7");
    let mut no_trigger = def("s", "default", Wire::EveryMs(1_000));
    no_trigger.trigger = None;
    invalid(refused(no_trigger).await, "schedule.trigger is required");
    assert_refused(
        refused(def("s", "nowhere", Wire::EveryMs(1_000))).await,
        Code::NotFound,
        ErrorCode::UnknownQueue,
        "queue: queue nowhere does not exist",
    );
    let e = proto::spool_client::SpoolClient::new(c.channel())
        .create_schedule(proto::CreateScheduleRequest { schedule: None })
        .await
        .unwrap_err();
    invalid(ClientError::from(e), "schedule is required");
    invalid(c.get_schedule("").await.unwrap_err(), "name is required");
    assert_eq!(c.list_schedules().await.expect("list"), [], "nothing was created");

    c.create_schedule(def("s", "default", Wire::EveryMs(1_000)))
        .await
        .expect("create");
    invalid(
        refused(def("s", "default", Wire::EveryMs(2_000))).await,
        "name: a schedule named s already exists",
    );
    assert_refused(
        c.update_schedule(def("other", "default", Wire::EveryMs(1_000)))
            .await
            .unwrap_err(),
        Code::NotFound,
        ErrorCode::NotFound,
        "no schedule other",
    );
    let stored = c.get_schedule("s").await.expect("get").def.unwrap();
    assert_eq!(
        stored.trigger,
        Some(Wire::EveryMs(1_000)),
        "the duplicate changed nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn config_file_schedules_are_read_only_except_enable_disable_and_trigger() {
    let server = common::start().await;
    let from_file = ScheduleDef {
        origin: ScheduleOrigin::Config,
        ..ScheduleDef::new(
            "nightly",
            ScheduledJob::new(QueueName::new("default").unwrap(), b"from the file".to_vec()),
            Trigger::Cron {
                expr: "0 2 * * *".into(),
                tz: "UTC".into(),
            },
        )
    };
    server
        .broker
        .schedule_put(from_file, PutMode::Upsert)
        .await
        .expect("the file's schedule");
    let c = server.client().await;

    let read_only = |e| assert_refused(e, Code::FailedPrecondition, ErrorCode::WrongState, "config file");
    read_only(c.delete_schedule("nightly").await.unwrap_err());
    read_only(
        c.update_schedule(def("nightly", "default", Wire::EveryMs(1_000)))
            .await
            .unwrap_err(),
    );
    let shown = c.get_schedule("nightly").await.expect("still there");
    assert_eq!(shown.origin(), proto::ScheduleOrigin::Config);
    assert_eq!(shown.def.as_ref().unwrap().trigger, Some(cron("0 2 * * *", "UTC")));

    assert!(c.disable_schedule("nightly").await.expect("disable"));
    assert!(c.enable_schedule("nightly").await.expect("enable"));
    let job_id = c.trigger_schedule("nightly").await.expect("trigger");
    assert_eq!(c.get_job(&job_id).await.expect("job").payload, b"from the file");
    server.stop().await;
}
