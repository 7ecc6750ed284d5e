//! The gRPC door over real sockets, through the Rust client: the RESP door's scenarios (push, fetch, ack, nack →
//! retry → dead, replay, lease expiry, fencing) give the engine's outcomes; bad input and bad tokens get clear
//! statuses and change nothing; health flips to NOT_SERVING when shutdown begins; reflection lists the services.

mod common;

use std::time::Duration;

use spool_client::{new_job, proto, Client, ClientError, DeadTarget, Nack};
use spool_core::ErrorCode;
use spool_engine::EngineConfig;
use spool_grpc::GrpcConfig;
use spool_testkit::{push_fetch_ack_nack_dead_replay, Door, EngineDoor, Fetched};
use tonic::Code;

async fn fetch_one(c: &Client) -> proto::Job {
    let mut jobs = c.reserve(&["work"], 1, Duration::ZERO).await.expect("fetch");
    assert_eq!(jobs.len(), 1, "one job ready");
    jobs.remove(0)
}

fn token(job: &proto::Job) -> u64 {
    job.lease.expect("a leased job has a lease").token
}

/// The scenario's operations as gRPC calls through the Rust client over a real socket.
struct GrpcDoor(Client);

impl Door for GrpcDoor {
    async fn push(&mut self, queue: &str, payload: &str, max_attempts: u32) -> String {
        let mut job = new_job(queue, payload);
        job.options = Some(proto::JobOptions {
            max_attempts: Some(max_attempts),
            ..Default::default()
        });
        self.0.enqueue(job).await.expect("push").id
    }

    async fn fetch(&mut self, queue: &str) -> Fetched {
        let mut jobs = self.0.reserve(&[queue], 1, Duration::ZERO).await.expect("fetch");
        assert_eq!(jobs.len(), 1, "one job ready");
        let job = jobs.remove(0);
        Fetched {
            token: token(&job).to_string(),
            payload: String::from_utf8_lossy(&job.payload).into_owned(),
            attempt: job.attempts,
            id: job.id,
        }
    }

    async fn ack(&mut self, job: &Fetched) {
        self.0
            .ack(&job.id, job.token.parse().expect("token"))
            .await
            .expect("ack");
    }

    async fn nack_now(&mut self, job: &Fetched, error: &str) {
        let token = job.token.parse().expect("token");
        self.0
            .nack(&job.id, token, Nack::RetryAfter(Duration::ZERO), Some(error.into()))
            .await
            .expect("nack");
    }

    async fn dead_errors(&mut self, queue: &str) -> Vec<Option<String>> {
        let dead = self.0.list_dead(Some(queue), None, 100).await.expect("dead list");
        assert!(dead.iter().all(|j| j.state() == proto::JobState::Dead));
        dead.into_iter().map(|j| j.last_error).collect()
    }

    async fn replay(&mut self, id: &str) -> u64 {
        self.0.replay_dead(DeadTarget::Job(id.into())).await.expect("replay")
    }
}

#[tokio::test]
async fn the_grpc_door_changes_no_outcome() {
    let direct = common::broker_with(
        std::sync::Arc::new(spool_core::ManualClock::new(common::T0)),
        EngineConfig::default(),
    );
    let expected = push_fetch_ack_nack_dead_replay(&mut EngineDoor(&direct), &direct).await;
    assert_eq!(expected[0], "fetched first attempt 1");
    assert!(expected[5].contains("dead=1"), "{expected:?}");

    let server = common::start().await;
    let mut door = GrpcDoor(server.client().await);
    assert_eq!(
        push_fetch_ack_nack_dead_replay(&mut door, &server.broker).await,
        expected
    );
    server.stop().await;
}

fn assert_spool_error(e: &ClientError, status: Code, code: ErrorCode) {
    assert_eq!(e.status(), Some(status), "{e}");
    assert_eq!(e.code(), Some(code), "{e}");
}

#[tokio::test]
async fn an_expired_lease_is_fenced_and_the_job_comes_back() {
    let server = common::start().await;
    let c = server.client().await;
    let mut job = new_job("work", "slow");
    job.options = Some(proto::JobOptions {
        lease_ms: Some(1_000),
        ..Default::default()
    });
    let id = c.enqueue(job).await.expect("push").id;
    let first = fetch_one(&c).await;
    assert_eq!(first.lease.unwrap().expires_at_ms, common::T0 + 1_000);

    // A heartbeat inside the lease moves its end.
    server.advance(900);
    let until = c.extend(&id, token(&first), None).await.expect("extend");
    assert_eq!(until, common::T0 + 900 + 1_000);

    // Past the extended end: the job is retried (attempt 2), and the first worker's token is dead.
    server.advance(1_101);
    let e = c.ack(&id, token(&first)).await.unwrap_err();
    assert_spool_error(&e, Code::FailedPrecondition, ErrorCode::LeaseLost);
    let retried = c.get_job(&id).await.expect("get");
    assert_eq!(retried.state(), proto::JobState::Retry);
    assert_eq!(retried.last_error.as_deref(), Some("lease expired"));
    server.advance(retried.run_at_ms.unwrap() - (common::T0 + 2_001));
    let second = fetch_one(&c).await;
    assert_eq!((second.id.as_str(), second.attempts), (id.as_str(), 2));
    assert_ne!(token(&second), token(&first));
    // The late worker still cannot touch it; the current holder can.
    let e = c.nack(&id, token(&first), Nack::Dead, None).await.unwrap_err();
    assert_spool_error(&e, Code::FailedPrecondition, ErrorCode::LeaseLost);
    c.ack(&id, token(&second)).await.expect("the holder acks");
    let e = c.get_job(&id).await.unwrap_err();
    assert_spool_error(&e, Code::NotFound, ErrorCode::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn operator_calls_work() {
    let server = common::start().await;
    let c = server.client().await;
    let ids: Vec<String> = c
        .enqueue_batch(vec![new_job("ops", "a"), new_job("ops", "b"), new_job("ops", "c")])
        .await
        .expect("batch")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 3);
    let mut unique = new_job("ops", "d");
    unique.options = Some(proto::JobOptions {
        unique_key: Some("k".into()),
        ..Default::default()
    });
    let held = c.enqueue(unique.clone()).await.expect("unique");
    let again = c.enqueue(unique).await.expect("duplicate");
    assert!(again.duplicate && again.id == held.id);

    let peeked = c.peek_queue("ops", 0, 2).await.expect("peek");
    assert_eq!(peeked.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids[..2]);
    assert!(c.pause("ops").await.expect("pause"));
    assert!(!c.pause("ops").await.expect("pause again"));
    assert!(c.reserve(&["ops"], 1, Duration::ZERO).await.expect("paused").is_empty());
    let stats = c.queue_stats("ops").await.expect("stats");
    assert!(stats.paused && stats.ready == 4);
    assert!(c.resume("ops").await.expect("resume"));
    c.cancel(&ids[0]).await.expect("cancel");

    let jobs = c.reserve(&["ops"], 2, Duration::ZERO).await.expect("two");
    assert_eq!(jobs.len(), 2);
    let acks: Vec<(&str, u64)> = vec![(&jobs[0].id, token(&jobs[0])), (&jobs[1].id, 1)];
    let results = c.ack_batch(&acks).await.expect("ack batch");
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().code(), Some(ErrorCode::LeaseLost));
    c.nack(&jobs[1].id, token(&jobs[1]), Nack::Dead, Some("poison".into()))
        .await
        .expect("dead");
    assert_eq!(
        c.purge_dead(DeadTarget::Queue("ops".into())).await.expect("purge dead"),
        1
    );
    assert_eq!(c.purge("ops").await.expect("purge"), 1);
    let queues = c.list_queues().await.expect("queues");
    let ops = queues.iter().find(|q| q.name == "ops").expect("ops listed");
    assert_eq!((ops.ready, ops.acked_total, ops.dead_lettered_total), (0, 1, 1));
    assert_eq!(c.replay_dead(DeadTarget::All).await.expect("replay none"), 0);

    // A long poll is answered by the enqueue that follows it, not by its timeout.
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.reserve(&["later"], 5, Duration::from_secs(300)).await }
    });
    let id = c.enqueue(new_job("later", "x")).await.expect("push").id;
    let got = waiting.await.expect("task").expect("reserve");
    assert_eq!(got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    server.stop().await;
}

/// Every refused request leaves the broker exactly as it was.
#[tokio::test]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let engine = EngineConfig {
        max_payload_bytes: 1_024,
        ..EngineConfig::default()
    };
    let server = common::start_with(engine, GrpcConfig::default()).await;
    let c = server.client().await;
    let raw = || proto::spool_client::SpoolClient::new(c.channel());
    let before = server.broker.totals();

    let invalid = |e: ClientError, needle: &str| {
        assert_spool_error(&e, Code::InvalidArgument, ErrorCode::Invalid);
        assert!(e.to_string().contains(needle), "{e} should mention {needle}");
    };
    // Missing required fields.
    invalid(
        ClientError::from(raw().enqueue(proto::EnqueueRequest { job: None }).await.unwrap_err()),
        "job is required",
    );
    invalid(c.enqueue(new_job("", "x")).await.unwrap_err(), "job.queue is required");
    invalid(c.ack("", 5).await.unwrap_err(), "id is required");
    let id = c.enqueue(new_job("q", "x")).await.expect("a real job").id;
    invalid(c.ack(&id, 0).await.unwrap_err(), "token is required");
    invalid(c.ack("not-a-uuid", 5).await.unwrap_err(), "not a job id");
    invalid(
        ClientError::from(
            raw()
                .replay_dead(proto::ReplayDeadRequest { selector: None })
                .await
                .unwrap_err(),
        ),
        "selector is required",
    );
    invalid(
        c.reserve(&[], 1, Duration::ZERO).await.unwrap_err(),
        "at least one queue",
    );
    // Unknown enum values (a newer client's, or garbage).
    let mut job = new_job("q", "x");
    job.position = 7;
    invalid(c.enqueue(job).await.unwrap_err(), "job.position: unknown enum value 7");
    let mut job = new_job("q", "x");
    job.options = Some(proto::JobOptions {
        retry: Some(proto::RetryPolicy {
            initial_ms: 10,
            multiplier: 2.0,
            max_ms: 100,
            jitter: 99,
        }),
        ..Default::default()
    });
    invalid(c.enqueue(job).await.unwrap_err(), "retry.jitter");
    let mut nack = proto::NackRequest {
        id: id.clone(),
        token: 5,
        action: 12,
        ..Default::default()
    };
    invalid(ClientError::from(raw().nack(nack.clone()).await.unwrap_err()), "action");
    nack.action = proto::NackAction::Dead.into();
    nack.delay_ms = Some(5);
    invalid(ClientError::from(raw().nack(nack).await.unwrap_err()), "delay_ms");
    // Invalid durations and numbers.
    let mut job = new_job("q", "x");
    job.options = Some(proto::JobOptions {
        lease_ms: Some(0),
        ..Default::default()
    });
    invalid(c.enqueue(job).await.unwrap_err(), "lease");
    let mut job = new_job("q", "x");
    job.options = Some(proto::JobOptions {
        priority: Some(10),
        ..Default::default()
    });
    invalid(c.enqueue(job).await.unwrap_err(), "priority");
    invalid(
        c.reserve(&["q"], 1, Duration::from_secs(3_600)).await.unwrap_err(),
        "timeout_ms",
    );
    invalid(c.list_dead(None, None, 1_000_000).await.unwrap_err(), "limit");
    // An oversized payload, alone or inside an otherwise good batch.
    let e = c.enqueue(new_job("q", vec![0u8; 2_048])).await.unwrap_err();
    assert_spool_error(&e, Code::ResourceExhausted, ErrorCode::TooBig);
    let e = c
        .enqueue_batch(vec![new_job("q", "fine"), new_job("q", vec![0u8; 2_048])])
        .await
        .unwrap_err();
    assert_spool_error(&e, Code::ResourceExhausted, ErrorCode::TooBig);
    // Unknown things.
    let e = c.get_job("0190b5a0-0000-7000-8000-000000000000").await.unwrap_err();
    assert_spool_error(&e, Code::NotFound, ErrorCode::NotFound);

    assert_eq!(
        server.broker.totals().0,
        before.0 + 1,
        "only the one good enqueue landed"
    );
    let q = c.queue_stats("q").await.expect("stats");
    assert_eq!((q.ready, q.enqueued_total), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_token_guards_every_call_but_health_and_reflection() {
    let config = GrpcConfig {
        token: Some("s3cret".into()),
        ..GrpcConfig::default()
    };
    let server = common::start_with(EngineConfig::default(), config).await;
    let anonymous = server.client().await;
    let wrong = server.client().await.with_token("guess").expect("ascii");
    let right = server.client().await.with_token("s3cret").expect("ascii");

    for c in [&anonymous, &wrong] {
        let e = c.enqueue(new_job("q", "x")).await.unwrap_err();
        assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
        assert_eq!(e.code(), None);
        let e = c.list_queues().await.unwrap_err();
        assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
        let e = c.consume(&["q"], 1).await.unwrap_err();
        assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
    }
    assert_eq!(server.broker.totals().0, 0, "refused calls changed nothing");
    right.enqueue(new_job("q", "x")).await.expect("the right token works");
    assert!(anonymous.is_serving("").await.expect("health needs no token"));
    server.stop().await;
}

#[tokio::test]
async fn health_flips_to_not_serving_when_shutdown_begins_and_reflection_lists_services() {
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = common::start().await;
    let c = server.client().await;
    assert!(c.is_serving("").await.expect("check"));
    assert!(c.is_serving(spool_proto::SERVICE_NAME).await.expect("check"));

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(c.channel())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.expect("a reply").expect("ok").message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "spool.v1.Spool",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?} lacks {expected}");
    }
    drop(replies);

    // A consume stream and a watch are open when shutdown begins: the watch sees NOT_SERVING, the worker hears
    // UNAVAILABLE.
    let mut watch = HealthClient::new(c.channel())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch ok").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let mut worker = c.consume(&["idle"], 1).await.expect("consume");
    let stopping = server.begin_stop();
    let next = watch.message().await.expect("watch ok").expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    let e = worker.next().await.expect("an end").unwrap_err();
    assert_eq!(e.status(), Some(Code::Unavailable), "{e}");
    assert_eq!(e.code(), Some(ErrorCode::ShuttingDown));
    drop(worker);
    drop(c);
    stopping.await.expect("serve task").expect("serve result");
}

/// A message over the transport limit is refused by tonic before it is decoded (OUT_OF_RANGE); the engine never
/// sees it.
#[tokio::test]
async fn a_message_over_the_transport_limit_is_refused() {
    let config = GrpcConfig {
        max_message_bytes: 16 * 1024,
        ..GrpcConfig::default()
    };
    let server = common::start_with(EngineConfig::default(), config).await;
    let c = server.client().await;
    let e = c.enqueue(new_job("q", vec![7u8; 64 * 1024])).await.unwrap_err();
    assert_eq!(e.status(), Some(Code::OutOfRange), "{e}");
    assert!(e.to_string().contains("too large"), "{e}");
    assert_eq!(server.broker.totals().0, 0);
    c.enqueue(new_job("q", vec![7u8; 1024]))
        .await
        .expect("a small one still lands");
    server.stop().await;
}

/// A long poll does not hold shutdown up: it ends with UNAVAILABLE / SHUTDOWN as soon as shutdown begins. (Called on
/// the service directly: over a socket, a call racing the listener's close could fail in the transport instead.)
#[tokio::test]
async fn a_long_poll_ends_when_shutdown_begins() {
    use spool_proto::v1::spool_server::Spool;

    let broker = common::broker_with(
        std::sync::Arc::new(spool_core::ManualClock::new(common::T0)),
        EngineConfig::default(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let service = spool_grpc::SpoolService::new(broker, stop_rx, 1_000);
    let long_poll = tokio::spawn(async move {
        let request = proto::ReserveRequest {
            queues: vec!["idle".into()],
            count: 1,
            timeout_ms: 300_000,
            ..Default::default()
        };
        service.reserve(tonic::Request::new(request)).await
    });
    stop.send(true).expect("the service listens");
    let status = long_poll.await.expect("task").unwrap_err();
    assert_spool_error(&ClientError::from(status), Code::Unavailable, ErrorCode::ShuttingDown);
}
