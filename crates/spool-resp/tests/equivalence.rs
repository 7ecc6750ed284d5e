//! One scenario — push, fetch, ack, nack → retry → dead, replay — run through the engine API and through RESP (the
//! scenario itself lives in `spool-testkit`, written once for every door); the door must not change any outcome.

mod common;

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::Value;
use spool_resp::RespConfig;
use spool_testkit::{push_fetch_ack_nack_dead_replay, Door, EngineDoor, Fetched};

/// The scenario's operations as RESP commands over a real socket.
struct RespDoor(MultiplexedConnection);

fn field(job: &HashMap<String, Value>, key: &str) -> String {
    redis::from_redis_value(&job[key]).expect(key)
}

impl Door for RespDoor {
    async fn push(&mut self, queue: &str, payload: &str, max_attempts: u32) -> String {
        redis::cmd("JOB.PUSH")
            .arg(queue)
            .arg(payload)
            .arg("MAXATTEMPTS")
            .arg(max_attempts)
            .query_async(&mut self.0)
            .await
            .expect("push")
    }

    async fn fetch(&mut self, queue: &str) -> Fetched {
        let mut jobs: Vec<HashMap<String, Value>> = redis::cmd("JOB.FETCH")
            .arg(queue)
            .query_async(&mut self.0)
            .await
            .expect("fetch");
        let job = jobs.remove(0);
        Fetched {
            id: field(&job, "id"),
            token: field(&job, "token"),
            payload: field(&job, "payload"),
            attempt: field(&job, "attempt").parse().expect("attempt"),
        }
    }

    async fn ack(&mut self, job: &Fetched) {
        let () = redis::cmd("JOB.ACK")
            .arg(&job.id)
            .arg(&job.token)
            .query_async(&mut self.0)
            .await
            .expect("ack");
    }

    async fn nack_now(&mut self, job: &Fetched, error: &str) {
        let () = redis::cmd("JOB.NACK")
            .arg(&job.id)
            .arg(&job.token)
            .arg("DELAY")
            .arg(0)
            .arg("ERROR")
            .arg(error)
            .query_async(&mut self.0)
            .await
            .expect("nack");
    }

    async fn dead_errors(&mut self, queue: &str) -> Vec<Option<String>> {
        let dead: Vec<HashMap<String, Value>> = redis::cmd("DEAD.LIST")
            .arg(queue)
            .query_async(&mut self.0)
            .await
            .expect("dead");
        dead.iter()
            .map(|job| redis::from_redis_value(&job["last_error"]).expect("last_error"))
            .collect()
    }

    async fn replay(&mut self, id: &str) -> u64 {
        redis::cmd("DEAD.REPLAY")
            .arg(id)
            .query_async(&mut self.0)
            .await
            .expect("replay")
    }
}

#[tokio::test]
async fn the_door_changes_no_outcome() {
    let direct = common::broker_with(std::sync::Arc::new(spool_core::SystemClock));
    let expected = push_fetch_ack_nack_dead_replay(&mut EngineDoor(&direct), &direct).await;
    assert_eq!(expected[0], "fetched first attempt 1");
    assert!(expected[5].contains("dead=1"), "{expected:?}");
    assert!(
        expected.contains(&"same job came back: true".to_string()),
        "{expected:?}"
    );

    let server = common::start(RespConfig::default()).await;
    let mut door = RespDoor(server.client().await);
    let via_resp = push_fetch_ack_nack_dead_replay(&mut door, &server.broker).await;
    assert_eq!(via_resp, expected);
    server.stop().await;
}
