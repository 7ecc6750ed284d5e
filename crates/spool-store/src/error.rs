//! Storage errors. Each names the path or record involved, because an operator reading a log line at 3 a.m. needs to
//! know which file to look at.

use std::path::PathBuf;

/// A failure of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be opened or created.
    #[error("cannot open data directory {path}: {reason}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// What the OS or sled said.
        reason: String,
    },
    /// The data directory was written by a newer (or unknown) version of Spool.
    #[error("data directory {path} has schema version {found}; this build reads version {supported}")]
    Schema {
        /// The directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record {key} in {path}: {reason}")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// The record's key, printable.
        key: String,
        /// Why it failed to decode.
        reason: String,
    },
    /// A write or flush failed. The store refuses every later write, so no caller is told OK for data that may not be
    /// on disk; the daemon must be restarted once the disk is fixed.
    #[error("write to {path} failed: {reason}")]
    Write {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A record could not be read back.
    #[error("read from {path} failed: {reason}")]
    Read {
        /// The directory.
        path: PathBuf,
        /// What sled said.
        reason: String,
    },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
}
