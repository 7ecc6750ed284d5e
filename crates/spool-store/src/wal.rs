//! Spool's write-ahead log: the commit path of the sled store.
//!
//! Why a log of our own in front of sled: a commit through sled costs a page-cache batch (~8 µs of CPU per
//! mutation), sled's flush (two `pwrite` + sync rounds) and our `fdatasync` — three device waits per
//! group commit — and sled rewrites pages for every put and delete, so a queue that churns past a large backlog grows
//! sled's file and cache without bound. Here a group commit is one `pwrite` of one checksummed record and one
//! `fdatasync`. sled becomes the checkpoint: a background thread folds each full segment into it, where a job that was
//! pushed and acked inside one segment costs sled nothing at all.
//!
//! Layout: `<data>/wal/<sequence>.wal`, sequence numbers zero-padded so names sort in log order. A segment is a run of
//! records; a record is `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`, and its payload is a run of
//! operations, `P` + key length (u32 LE) + key + value length (u32 LE) + value, `M` (the same for a job record to be
//! given the payload already stored: see `codec::merge_job`), or `D` + key length + key. One record
//! holds one group commit, so it is atomic: it is either read back whole or not at all. A segment starts as the spare
//! (`next.spare`, zeros) and is written in place, so the active segment's records are followed by zeros; a sealed
//! segment is cut to its records.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::codec;
use crate::Mutation;

const HEADER: usize = 8;
const PUT: u8 = b'P';
const DELETE: u8 = b'D';
const MERGE: u8 = b'M';

/// What a run of records leaves of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Net {
    Put(Vec<u8>),
    Delete,
    /// A job record's new fields, to be given the payload of the record in sled (see `codec::merge_job`).
    Merge(Vec<u8>),
}

/// The net effect of a run of records, per key.
pub(crate) type NetWrites = BTreeMap<Vec<u8>, Net>;

/// One record being built: header space first, then operations, so it is written with one `write` call.
#[derive(Debug)]
pub(crate) struct RecordBuf {
    buf: Vec<u8>,
}

impl RecordBuf {
    pub(crate) fn new() -> Self {
        Self { buf: vec![0; HEADER] }
    }

    /// Bytes of payload added so far.
    pub(crate) fn payload_len(&self) -> usize {
        self.buf.len() - HEADER
    }

    pub(crate) fn push(&mut self, mutation: Mutation) {
        match mutation {
            Mutation::PutJob(job) => {
                // A job loaded without its payload has it stored already, unchanged since: its new fields are
                // merged with the payload on disk.
                let tag = if job.payload_loaded { PUT } else { MERGE };
                self.value(tag, &codec::job_key(&job.id), |out| codec::encode_job_into(&job, out));
            }
            Mutation::DeleteJob(id) => self.delete(&codec::job_key(&id)),
            Mutation::PutQueue(record) => self.put(&codec::queue_key(record.name.as_str()), &record),
            Mutation::PutSchedule(schedule) => self.value(PUT, &codec::schedule_key(&schedule.def.name), |out| {
                codec::encode_schedule_into(&schedule, out)
            }),
            Mutation::DeleteSchedule(name) => self.delete(&codec::schedule_key(&name)),
        }
    }

    fn put<T: serde::Serialize>(&mut self, key: &[u8], value: &T) {
        self.value(PUT, key, |out| codec::encode_into(value, out));
    }

    fn value(&mut self, tag: u8, key: &[u8], encode: impl FnOnce(Vec<u8>) -> Vec<u8>) {
        self.key(tag, key);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        // Encoding straight into the record saves an allocation and a copy per mutation on the hot path.
        self.buf = encode(std::mem::take(&mut self.buf));
        let len = len_u32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn delete(&mut self, key: &[u8]) {
        self.key(DELETE, key);
    }

    fn key(&mut self, tag: u8, key: &[u8]) {
        self.buf.push(tag);
        self.buf.extend_from_slice(&len_u32(key.len()).to_le_bytes());
        self.buf.extend_from_slice(key);
    }

    /// Seals the record (length and checksum) and returns its bytes; the buffer is empty again afterwards.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let payload = &self.buf[HEADER..];
        let len = len_u32(payload.len());
        let crc = crc32fast::hash(payload);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    pub(crate) fn clear(&mut self) {
        self.buf.truncate(HEADER);
    }
}

fn len_u32(len: usize) -> u32 {
    // A record is bounded by the group size and the engine's payload limit, both far below 4 GiB.
    u32::try_from(len).expect("WAL record under 4 GiB")
}

/// The name of the spare segment: zero-filled to a segment's full size and synced, ahead of need, under a name that
/// recovery ignores. A segment started from it is written in place, so the `fdatasync` of each commit flushes data
/// only: appending instead grows the file, and every sync then also commits the new size and extents to the file
/// system's journal (on this kind of machine `fdatasync` after an 8 KB write took 157 µs appending, 100 µs in place).
const SPARE: &str = "next.spare";
/// Where the spare is written before it is complete: a crash part-way leaves this name, never a short spare.
const SPARE_PARTIAL: &str = "next.spare.partial";

/// Writes the spare segment for `dir`: `bytes` zeros, synced, then renamed into place. Stops between megabytes once
/// `cancel` is set (a clean stop need not wait for a large segment's zeros). On failure (a full disk, most likely) or
/// cancellation the part written is removed rather than left taking the space.
pub(crate) fn prepare_spare(dir: &Path, bytes: u64, cancel: &AtomicBool) -> io::Result<()> {
    let partial = dir.join(SPARE_PARTIAL);
    let written = (|| {
        let file = File::create(&partial)?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < bytes {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "the store is closing"));
            }
            let n = zeros.len().min((bytes - at) as usize);
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
        fs::rename(&partial, dir.join(SPARE))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written
}

/// Removes a spare that a crash left half written.
pub(crate) fn remove_partial_spare(dir: &Path) -> io::Result<()> {
    remove_if_present(&dir.join(SPARE_PARTIAL))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `dir` holds a complete spare of `bytes` bytes.
pub(crate) fn has_spare(dir: &Path, bytes: u64) -> bool {
    fs::metadata(dir.join(SPARE)).is_ok_and(|m| m.len() == bytes)
}

/// The segment being written.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) seq: u64,
    file: File,
    len: u64,
}

impl Segment {
    /// Starts segment `seq` and makes its name durable, so a record synced into it is found after a power cut. With
    /// `spare: Some(bytes)` it is the spare if `dir` has one of that size (a spare of another size, left by a run
    /// with another segment size, is removed); otherwise, or with `None` (the spare is still being written: leave
    /// it alone), an empty file that grows as it is written.
    pub(crate) fn start(dir: &Path, seq: u64, spare: Option<u64>) -> io::Result<Self> {
        let path = segment_path(dir, seq);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("log segment {} already exists", path.display()),
            ));
        }
        let file = match spare {
            Some(bytes) if has_spare(dir, bytes) => {
                fs::rename(dir.join(SPARE), &path)?;
                OpenOptions::new().write(true).open(&path)?
            }
            _ => {
                if spare.is_some() {
                    remove_if_present(&dir.join(SPARE))?;
                }
                OpenOptions::new().write(true).create_new(true).open(&path)?
            }
        };
        File::open(dir)?.sync_all()?;
        Ok(Self { seq, file, len: 0 })
    }

    pub(crate) fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.file.write_all_at(record, self.len)?;
        self.len += record.len() as u64;
        Ok(())
    }

    /// `fdatasync`: unlike published sled's `sync_file_range`, this also flushes the device's write cache and the file
    /// size.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Ends the segment: cut to the records written (the rest of the spare's zeros go) and synced whole, so that in
    /// any segment but the newest, whatever does not parse is corruption.
    pub(crate) fn seal(&self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_all()
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// The segments in `dir`, oldest first. Files that are not segments are left alone.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Why a segment could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// A damaged record before the end of a segment that was complete when written: real corruption, not a torn
    /// tail.
    Corrupt {
        offset: u64,
        reason: String,
    },
}

/// Folds the records of segment `seq` into `net`. In the newest segment (`last`), the records end where the spare's
/// zeros begin, and a damaged or short record and everything after it is taken for a write torn by a crash and
/// dropped, with a warning naming the bytes: with `durability = always` no caller of it was answered (an answer waits
/// for the `fdatasync` that covers the record); with `interval` or `none` it is within what those settings may lose.
/// Any other segment was sealed (cut to its records and synced in full) before the next was started, so anything in
/// it that does not parse, zeros included, is corruption.
pub(crate) fn read_segment(dir: &Path, seq: u64, last: bool, net: &mut NetWrites) -> Result<(), ReadError> {
    let bytes = fs::read(segment_path(dir, seq)).map_err(ReadError::Io)?;
    let mut at = 0usize;
    while at < bytes.len() {
        let damage = match parse_record(&bytes[at..]).and_then(|(payload, used)| Ok((parse_ops(payload)?, used))) {
            Ok((ops, used)) => {
                // A record that parsed whole is not a torn write: if its operations do not fit what came before,
                // the log is wrong, wherever it is.
                apply_ops(&ops, net).map_err(|reason| ReadError::Corrupt {
                    offset: at as u64,
                    reason,
                })?;
                at += used;
                continue;
            }
            Err(reason) => reason,
        };
        if !last {
            return Err(ReadError::Corrupt {
                offset: at as u64,
                reason: damage,
            });
        }
        let end = bytes.iter().rposition(|&b| b != 0).map_or(at, |i| i + 1);
        if end > at {
            tracing::warn!(
                segment = seq,
                offset = at,
                dropped_bytes = end - at,
                %damage,
                "dropping a torn write-ahead log tail"
            );
        }
        return Ok(());
    }
    Ok(())
}

fn parse_record(bytes: &[u8]) -> Result<(&[u8], usize), String> {
    if bytes.len() < HEADER {
        return Err("short record header".into());
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..HEADER].try_into().expect("4 bytes"));
    // The writer never writes an empty record, and an empty payload's crc32 is 0: without this a run of zeros (a
    // hole the file system filled) would read as valid records.
    if len == 0 {
        return Err("empty record".into());
    }
    let payload = bytes
        .get(HEADER..HEADER + len)
        .ok_or_else(|| format!("record of {len} bytes runs past the end of the segment"))?;
    if crc32fast::hash(payload) != crc {
        return Err("record checksum mismatch".into());
    }
    Ok((payload, HEADER + len))
}

/// A record's operations: (tag, key, value; empty for a delete).
type Ops<'a> = Vec<(u8, &'a [u8], &'a [u8])>;

/// Parses a checksummed payload whole, so that a record is applied all or nothing even if its checksum collided
/// with garbage.
fn parse_ops(mut payload: &[u8]) -> Result<Ops<'_>, String> {
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = payload.split_first() {
        let (key, rest) = take_field(rest)?;
        payload = match tag {
            PUT | MERGE => {
                let (value, rest) = take_field(rest)?;
                ops.push((tag, key, value));
                rest
            }
            DELETE => {
                ops.push((tag, key, &[][..]));
                rest
            }
            other => return Err(format!("unknown operation tag {other:#04x}")),
        };
    }
    Ok(ops)
}

/// Applies one record's operations to `net`, all or none: they are resolved against `net` and each other first.
fn apply_ops(ops: &Ops<'_>, net: &mut NetWrites) -> Result<(), String> {
    let mut record: BTreeMap<&[u8], Net> = BTreeMap::new();
    for &(tag, key, value) in ops {
        let next = match (tag, record.get(key).or_else(|| net.get(key))) {
            (PUT, _) => Net::Put(value.to_vec()),
            (DELETE, _) => Net::Delete,
            (_, Some(Net::Put(stored))) => Net::Put(codec::merge_job(value, stored)?),
            (_, Some(Net::Delete)) => return Err("a merge into a deleted record".into()),
            (_, Some(Net::Merge(_)) | None) => Net::Merge(value.to_vec()),
        };
        record.insert(key, next);
    }
    for (key, next) in record {
        net.insert(key.to_vec(), next);
    }
    Ok(())
}

fn take_field(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("short field length")?;
    let field = bytes.get(4..4 + len).ok_or("field runs past the end of its record")?;
    Ok((field, &bytes[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueRecord;
    use spool_core::{JobId, QueueName};

    fn queue(name: &str, paused: bool) -> Mutation {
        Mutation::PutQueue(QueueRecord {
            name: QueueName::new(name).unwrap(),
            paused,
        })
    }

    fn written(dir: &Path, records: &[Vec<Mutation>]) -> Vec<u8> {
        let mut segment = Segment::start(dir, 1, None).unwrap();
        let mut record = RecordBuf::new();
        for ops in records {
            for op in ops.iter().cloned() {
                record.push(op);
            }
            segment.append(record.finish()).unwrap();
            record.clear();
        }
        fs::read(segment_path(dir, 1)).unwrap()
    }

    #[test]
    fn a_merge_that_does_not_fit_is_corruption_even_at_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let key = codec::job_key(&JobId::generate(1));
        let mut segment = Segment::start(dir.path(), 1, None).unwrap();
        let mut record = RecordBuf::new();
        record.delete(&key);
        segment.append(record.finish()).unwrap();
        let first = record.finish().len() as u64;
        record.clear();
        // A whole, checksummed record whose second operation merges into the job deleted before it, then a good one.
        record.push(queue("j", false));
        record.value(MERGE, &key, |mut out| {
            out.extend_from_slice(b"fields");
            out
        });
        segment.append(record.finish()).unwrap();
        record.clear();
        record.push(queue("l", false));
        segment.append(record.finish()).unwrap();

        let mut net = NetWrites::new();
        match read_segment(dir.path(), 1, true, &mut net) {
            Err(ReadError::Corrupt { offset, reason }) => {
                assert_eq!(offset, first, "{reason}");
                assert!(reason.contains("merge"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(
            !net.contains_key(codec::queue_key("j").as_slice()),
            "none of the bad record's operations is applied"
        );
    }

    #[test]
    fn records_read_back_as_last_write_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let gone = JobId::generate(1);
        written(
            dir.path(),
            &[
                vec![queue("a", false), queue("b", false)],
                vec![queue("a", true), Mutation::DeleteJob(gone)],
            ],
        );
        let mut net = NetWrites::new();
        read_segment(dir.path(), 1, false, &mut net).unwrap();
        assert_eq!(net.len(), 3);
        assert_eq!(net[&codec::job_key(&gone).to_vec()], Net::Delete);
        let Net::Put(a) = &net[&codec::queue_key("a")] else {
            panic!("queue a is put")
        };
        let a: QueueRecord = codec::decode(a).unwrap();
        assert!(a.paused, "the later write of `a` wins");
    }

    #[test]
    fn a_torn_tail_drops_whole_records_only_in_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = written(
            dir.path(),
            &[vec![queue("a", false)], vec![queue("b", false), queue("c", false)]],
        );
        let first_len = HEADER + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        // Every cut inside the second record keeps the first record and nothing of the second.
        for cut in first_len + 1..bytes.len() {
            fs::write(segment_path(dir.path(), 1), &bytes[..cut]).unwrap();
            let mut net = NetWrites::new();
            read_segment(dir.path(), 1, true, &mut net).unwrap();
            assert_eq!(net.keys().cloned().collect::<Vec<_>>(), vec![codec::queue_key("a")]);
            let err = read_segment(dir.path(), 1, false, &mut NetWrites::new()).unwrap_err();
            assert!(matches!(err, ReadError::Corrupt { offset, .. } if offset == first_len as u64));
        }
        // A flipped byte in the payload fails the checksum: the record is dropped whole.
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 0xff;
        fs::write(segment_path(dir.path(), 1), &damaged).unwrap();
        let mut net = NetWrites::new();
        read_segment(dir.path(), 1, true, &mut net).unwrap();
        assert_eq!(net.len(), 1);
    }

    #[test]
    fn zeros_are_not_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = written(dir.path(), &[vec![queue("a", false)]]);
        let good = bytes.len();
        // A hole of zeros, as a file system may leave after a crash that extended the file.
        bytes.extend_from_slice(&[0; 64]);
        fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let err = read_segment(dir.path(), 1, false, &mut NetWrites::new()).unwrap_err();
        assert!(matches!(err, ReadError::Corrupt { offset, .. } if offset == good as u64));
        let mut net = NetWrites::new();
        read_segment(dir.path(), 1, true, &mut net).unwrap();
        assert_eq!(net.len(), 1);
    }

    #[test]
    fn a_segment_started_from_the_spare_ends_where_its_zeros_begin() {
        let dir = tempfile::tempdir().unwrap();
        prepare_spare(dir.path(), 4096, &AtomicBool::new(false)).unwrap();
        assert!(has_spare(dir.path(), 4096));
        let mut segment = Segment::start(dir.path(), 1, Some(4096)).unwrap();
        assert!(!has_spare(dir.path(), 4096), "the spare became the segment");
        let mut record = RecordBuf::new();
        record.push(queue("a", false));
        segment.append(record.finish()).unwrap();
        let good = segment.len();
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 1)).unwrap().len(),
            4096,
            "written in place"
        );

        let mut net = NetWrites::new();
        read_segment(dir.path(), 1, true, &mut net).unwrap();
        assert_eq!(net.keys().cloned().collect::<Vec<_>>(), vec![codec::queue_key("a")]);
        // Read as an older segment before it is sealed, its zeros are corruption; sealing cuts them off.
        let err = read_segment(dir.path(), 1, false, &mut NetWrites::new()).unwrap_err();
        assert!(matches!(err, ReadError::Corrupt { offset, .. } if offset == good));

        segment.seal().unwrap();
        assert_eq!(fs::metadata(segment_path(dir.path(), 1)).unwrap().len(), good);
        let mut net = NetWrites::new();
        read_segment(dir.path(), 1, false, &mut net).unwrap();
        assert_eq!(net.len(), 1);
    }

    #[test]
    fn a_torn_write_over_the_spare_is_dropped_whole() {
        let dir = tempfile::tempdir().unwrap();
        prepare_spare(dir.path(), 4096, &AtomicBool::new(false)).unwrap();
        let mut segment = Segment::start(dir.path(), 1, Some(4096)).unwrap();
        let mut record = RecordBuf::new();
        record.push(queue("a", false));
        segment.append(record.finish()).unwrap();
        record.clear();
        record.push(queue("b", false));
        let whole = record.finish().to_vec();
        // A crash persisted the second record's header but not its body: the spare's zeros show through.
        let mut torn = whole.clone();
        torn[HEADER..].fill(0);
        segment.append(&torn).unwrap();

        let mut net = NetWrites::new();
        read_segment(dir.path(), 1, true, &mut net).unwrap();
        assert_eq!(net.keys().cloned().collect::<Vec<_>>(), vec![codec::queue_key("a")]);
    }

    #[test]
    fn a_spare_being_written_is_left_alone_and_a_cancelled_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        prepare_spare(dir.path(), 4096, &AtomicBool::new(false)).unwrap();
        Segment::start(dir.path(), 1, None).unwrap();
        assert!(
            has_spare(dir.path(), 4096),
            "a segment started without the spare leaves it for the next"
        );
        assert_eq!(fs::metadata(segment_path(dir.path(), 1)).unwrap().len(), 0);
        let err = Segment::start(dir.path(), 1, Some(4096)).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::AlreadyExists,
            "a segment is never started over another"
        );
        assert!(has_spare(dir.path(), 4096));

        let other = tempfile::tempdir().unwrap();
        let err = prepare_spare(other.path(), 4 << 20, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(
            fs::read_dir(other.path()).unwrap().count(),
            0,
            "nothing half written is left"
        );
    }

    #[test]
    fn a_spare_of_another_size_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        prepare_spare(dir.path(), 100, &AtomicBool::new(false)).unwrap();
        Segment::start(dir.path(), 1, Some(4096)).unwrap();
        assert_eq!(fs::metadata(segment_path(dir.path(), 1)).unwrap().len(), 0);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the old spare is removed, not left taking space"
        );
    }

    #[test]
    fn segments_list_in_log_order_and_ignore_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [10, 2, 1] {
            Segment::start(dir.path(), seq, None).unwrap();
        }
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        prepare_spare(dir.path(), 64, &AtomicBool::new(false)).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2, 10]);
    }
}
