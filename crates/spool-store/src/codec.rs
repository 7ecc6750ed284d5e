//! The on-disk format: key prefixes and versioned value encoding.
//!
//! Keys: `j` + 16-byte job id (UUIDv7, so job keys sort by creation time), `q` + queue name, `s` + schedule name, `m` +
//! meta name. The write-ahead log carries the same keys and values, and all of them live in sled's default tree. A
//! batch is atomic because a group commit is one checksummed log record (a schedule's firing writes its job and its
//! progress together); sled needs no atomic batches, as a checkpoint can always be repeated from the log.
//! Values: one version byte, then postcard. The version byte lets a later build read today's records. A job record
//! (version 2) puts the payload last, after the length of the job's other fields, so that start-up decodes every job
//! without copying a single payload, and the payload is read back only when the job is handed out.

use serde::de::DeserializeOwned;
use serde::Serialize;
use spool_core::{Job, JobId, QueueName, Schedule};

pub(crate) const JOB_PREFIX: u8 = b'j';
pub(crate) const QUEUE_PREFIX: u8 = b'q';
pub(crate) const SCHEDULE_PREFIX: u8 = b's';
pub(crate) const SCHEMA_KEY: &[u8] = b"mschema";
/// The layout this build writes. Bump it, and teach `decode` the old one, when a stored type changes shape.
pub(crate) const SCHEMA_VERSION: u32 = 3;
/// Older layouts this build still reads, records unchanged: schema 1 wrote version 1 job records (see
/// `JobParts::V1`), schemas 1 and 2 version 1 schedule records (see `decode_schedule`). Opening such a directory marks
/// it with `SCHEMA_VERSION`, so that an older build refuses it once it may hold records of the new versions.
pub(crate) const SCHEMAS_READ: [u32; 2] = [1, 2];
const VALUE_VERSION: u8 = 1;
/// Job records since schema 2: `[2][length of the fields: u32 LE][the job's fields, postcard][payload]`.
const JOB_VERSION: u8 = 2;
/// Schedule records since schema 3: `[2][the schedule, postcard]`, ending in `Schedule::file_enabled`, which version
/// 1 records lack.
const SCHEDULE_VERSION: u8 = 2;

pub(crate) fn job_key(id: &JobId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = JOB_PREFIX;
    key[1..].copy_from_slice(id.as_bytes());
    key
}

pub(crate) fn queue_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(QUEUE_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn schedule_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(SCHEDULE_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_into(value, Vec::new())
}

/// [`encode`], appended to `out` (the write-ahead log builds whole records this way, without a copy per value).
pub(crate) fn encode_into<T: Serialize>(value: &T, mut out: Vec<u8>) -> Vec<u8> {
    out.push(VALUE_VERSION);
    // Serialising our own plain structs into a Vec cannot fail: postcard errors only on unsupported serde features
    // (which our types do not use) or a full fixed buffer (which a Vec is not).
    postcard::to_extend(value, out).expect("postcard encoding of a store record")
}

/// A job's record, appended to `out`: the job without its payload (`Job::payload` is not serialised), then the
/// payload if the job holds it. A job loaded without its payload encodes as a record with none, which the log writes
/// as a merge (see [`merge_job`]).
pub(crate) fn encode_job_into(job: &Job, mut out: Vec<u8>) -> Vec<u8> {
    out.push(JOB_VERSION);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut out = postcard::to_extend(job, out).expect("postcard encoding of a store record");
    let meta_len = u32::try_from(out.len() - at - 4).expect("a job's fields are far below 4 GiB");
    out[at..at + 4].copy_from_slice(&meta_len.to_le_bytes());
    if job.payload_loaded {
        out.extend_from_slice(&job.payload);
    }
    out
}

/// A job record's two parts: the postcard bytes of the job without its payload, and the payload.
enum JobParts<'a> {
    /// Version 2: the fields and the payload are contiguous slices.
    V2 { meta: &'a [u8], payload: &'a [u8] },
    /// Version 1 (schema 1): the payload was a field, the third (after the id and the queue). Postcard writes fields
    /// in order with no framing, so the job's other fields are `head` then `tail`.
    V1 {
        head: &'a [u8],
        payload: &'a [u8],
        tail: &'a [u8],
    },
}

fn job_parts(bytes: &[u8]) -> Result<JobParts<'_>, String> {
    match bytes.split_first() {
        Some((&JOB_VERSION, rest)) => {
            let len = rest
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or("short job record")?;
            let meta = rest.get(4..4 + len).ok_or("job record shorter than its fields")?;
            Ok(JobParts::V2 {
                meta,
                payload: &rest[4 + len..],
            })
        }
        Some((&VALUE_VERSION, body)) => {
            let err = |e: postcard::Error| e.to_string();
            let (_, after_head): ((JobId, QueueName), _) = postcard::take_from_bytes(body).map_err(err)?;
            let (payload, tail): (&serde_bytes::Bytes, _) = postcard::take_from_bytes(after_head).map_err(err)?;
            Ok(JobParts::V1 {
                head: &body[..body.len() - after_head.len()],
                payload,
                tail,
            })
        }
        Some((v, _)) => Err(format!("unknown job record version {v}")),
        None => Err("empty value".into()),
    }
}

/// A job from its record, without its payload (`payload_loaded` is false): start-up reads every job and holds none
/// of their payloads.
pub(crate) fn decode_job(bytes: &[u8]) -> Result<Job, String> {
    match job_parts(bytes)? {
        JobParts::V2 { meta, .. } => postcard::from_bytes(meta).map_err(|e| e.to_string()),
        JobParts::V1 { head, tail, .. } => postcard::from_bytes(&[head, tail].concat()).map_err(|e| e.to_string()),
    }
}

/// The payload in a job's record.
pub(crate) fn job_payload(bytes: &[u8]) -> Result<&[u8], String> {
    Ok(match job_parts(bytes)? {
        JobParts::V2 { payload, .. } | JobParts::V1 { payload, .. } => payload,
    })
}

/// How much of a job's record `decode_job` reads: a version 2 record without its payload, any other whole. Start-up
/// copies only this much out of sled.
pub(crate) fn job_fields_len(bytes: &[u8]) -> usize {
    match job_parts(bytes) {
        Ok(JobParts::V2 { meta, .. }) => 1 + 4 + meta.len(),
        _ => bytes.len(),
    }
}

/// `update`'s fields with `stored`'s payload: what a put of a job loaded without its payload leaves on disk.
pub(crate) fn merge_job(update: &[u8], stored: &[u8]) -> Result<Vec<u8>, String> {
    let JobParts::V2 { meta, payload } = job_parts(update)? else {
        return Err("a merge carries a version 2 record".into());
    };
    if !payload.is_empty() {
        return Err("a merge carries no payload".into());
    }
    let stored = job_payload(stored)?;
    let mut out = Vec::with_capacity(1 + 4 + meta.len() + stored.len());
    out.push(JOB_VERSION);
    out.extend_from_slice(&update[1..1 + 4 + meta.len()]);
    out.extend_from_slice(stored);
    Ok(out)
}

pub(crate) fn encode_schedule_into(schedule: &Schedule, mut out: Vec<u8>) -> Vec<u8> {
    out.push(SCHEDULE_VERSION);
    postcard::to_extend(schedule, out).expect("postcard encoding of a store record")
}

pub(crate) fn decode_schedule(bytes: &[u8]) -> Result<Schedule, String> {
    match bytes.split_first() {
        Some((&SCHEDULE_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((&VALUE_VERSION, rest)) => {
            let (def, progress) = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            Ok(Schedule {
                def,
                progress,
                file_enabled: None,
            })
        }
        Some((v, _)) => Err(format!("unknown schedule record version {v}")),
        None => Err("empty value".into()),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spool_core::{Jitter, JobExtra, JobState, Lease, Priority, RetryPolicy};

    use super::*;

    fn job(extras: bool) -> Job {
        Job {
            id: JobId::from_bytes(*b"0123456789abcdef"),
            queue: QueueName::new("mail").unwrap(),
            payload: b"hi".to_vec(),
            payload_loaded: true,
            priority: Priority::new(7).unwrap(),
            created_at: 1_700_000_000_000,
            enqueued_at: 1_700_000_000_001,
            seq: 300,
            run_at: Some(1_700_000_000_500),
            expires_at: None,
            attempts: 2,
            max_attempts: 5,
            lease_ms: 30_000,
            retry: RetryPolicy {
                initial_ms: 1_000,
                multiplier: 2.0,
                max_ms: 60_000,
                jitter: Jitter::Equal,
            },
            state: JobState::Dead,
            lease: Some(Lease {
                token: 9,
                expires_at: 1_700_000_030_000,
            }),
            extra: JobExtra {
                unique_key: extras.then(|| "u".into()),
                unique_until: extras.then_some(1_700_000_100_000),
                headers: if extras {
                    BTreeMap::from([("a".into(), "b".into())])
                } else {
                    BTreeMap::new()
                },
                last_error: extras.then(|| "boom".into()),
                dead_at: extras.then_some(1_700_000_200_000),
            }
            .boxed(),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes a job record had when schema 2 was written (commit `60bcc93`): `Job`'s in-memory shape may change,
    /// its record may not, or directories written before would no longer load.
    #[test]
    fn job_records_keep_their_bytes() {
        const FIELDS: &str = "1030313233343536373839616263646566046d61696c0780d095ffbc3181d095ffbc31ac0201f4d395ffbc31\
                              000205b0ea01e8070000000000000040e0d403";
        let cases = [
            (false, format!("024e000000{FIELDS}0200000000040109b0ba97ffbc31006869")),
            (
                true,
                format!(
                    "0265000000{FIELDS}\
                     0201017501a0dd9bffbc3101016101620104626f6f6d040109b0ba97ffbc3101c0eaa1ffbc316869"
                ),
            ),
        ];
        for (extras, expected) in cases {
            let job = job(extras);
            let record = encode_job_into(&job, Vec::new());
            assert_eq!(hex(&record), expected, "extras: {extras}");
            let decoded = decode_job(&record).unwrap();
            assert_eq!(job_payload(&record).unwrap(), b"hi");
            assert_eq!(
                decoded,
                Job {
                    payload: Vec::new(),
                    payload_loaded: false,
                    ..job
                }
            );
        }
    }

    #[test]
    fn schedule_records_of_schema_2_are_read_and_the_files_flag_is_kept() {
        let mut def = spool_core::ScheduleDef::new(
            "nightly",
            spool_core::ScheduledJob::new(QueueName::new("q").unwrap(), b"p".to_vec()),
            spool_core::Trigger::Every { every_ms: 60_000 },
        );
        def.origin = spool_core::ScheduleOrigin::Config;
        let progress = spool_core::ScheduleProgress {
            since: 7,
            last_tick: Some(60_000),
            ..Default::default()
        };
        let old = [vec![1], postcard::to_allocvec(&(&def, &progress)).unwrap()].concat();
        let read = decode_schedule(&old).unwrap();
        assert_eq!((&read.def, &read.progress, read.file_enabled), (&def, &progress, None));

        let schedule = Schedule {
            file_enabled: Some(false),
            ..read
        };
        let record = encode_schedule_into(&schedule, Vec::new());
        assert_eq!(record[0], 2);
        assert_eq!(decode_schedule(&record).unwrap(), schedule);
        let e = decode_schedule(&[9, 0]).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
    }
}
