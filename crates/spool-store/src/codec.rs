//! The on-disk format: key prefixes and versioned value encoding.
//!
//! Keys: `j` + 16-byte job id (UUIDv7, so job keys sort by creation time), `q` + queue name, `s` + schedule name, `m` +
//! meta name. The write-ahead log carries the same keys and values, and all of them live in sled's default tree. A
//! batch is atomic because a group commit is one checksummed log record (a schedule's firing writes its job and its
//! progress together); sled needs no atomic batches, as a checkpoint can always be repeated from the log.
//! Values: one version byte, then postcard. The version byte lets a later build read today's records.

use serde::de::DeserializeOwned;
use serde::Serialize;
use spool_core::JobId;

pub(crate) const JOB_PREFIX: u8 = b'j';
pub(crate) const QUEUE_PREFIX: u8 = b'q';
pub(crate) const SCHEDULE_PREFIX: u8 = b's';
pub(crate) const SCHEMA_KEY: &[u8] = b"mschema";
/// The layout this build writes. Bump it, and teach `decode` the old one, when a stored type changes shape.
pub(crate) const SCHEMA_VERSION: u32 = 1;
const VALUE_VERSION: u8 = 1;

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

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}
