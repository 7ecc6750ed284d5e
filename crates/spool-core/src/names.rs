//! Validated names and small numbers: a value of these types is valid by construction.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SpoolError;

/// The longest queue name accepted, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// A queue name: 1–128 bytes of ASCII letters, digits and `_ - . :`.
///
/// The alphabet is what Redis users put in key names and what fits unquoted in metrics labels and URLs. Cloning is
/// cheap (a shared string) because every job carries its queue's name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, SpoolError> {
        if name.is_empty() || name.len() > MAX_QUEUE_NAME_LEN {
            return Err(SpoolError::invalid(format!(
                "queue name must be 1 to {MAX_QUEUE_NAME_LEN} bytes long, got {} bytes",
                name.len()
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        {
            return Err(SpoolError::invalid(format!(
                "queue name {name:?} contains {bad:?}; allowed are ASCII letters, digits and _ - . :"
            )));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for QueueName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for QueueName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QueueName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A job's priority inside its queue: 0 (lowest) to 9 (highest); higher is reserved first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// The highest priority.
    pub const MAX: Priority = Priority(9);
    /// The priority of a job that names none.
    pub const DEFAULT: Priority = Priority(0);

    /// Validates `value` (0–9).
    pub fn new(value: i64) -> Result<Self, SpoolError> {
        if (0..=9).contains(&value) {
            Ok(Priority(value as u8))
        } else {
            Err(SpoolError::invalid(format!("priority must be 0 to 9, got {value}")))
        }
    }

    /// The numeric value.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u8> for Priority {
    type Error = SpoolError;
    fn try_from(v: u8) -> Result<Self, SpoolError> {
        Priority::new(v.into())
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_validated() {
        assert!(QueueName::new("default").is_ok());
        assert!(QueueName::new("emails.high:v2-x_y").is_ok());
        assert!(QueueName::new("").is_err());
        assert!(QueueName::new("has space").is_err());
        assert!(QueueName::new("ünicode").is_err());
        assert!(QueueName::new(&"q".repeat(MAX_QUEUE_NAME_LEN)).is_ok());
        let long = QueueName::new(&"q".repeat(MAX_QUEUE_NAME_LEN + 1)).unwrap_err();
        assert_eq!(long.code, crate::ErrorCode::Invalid);
    }

    #[test]
    fn priorities_are_bounded() {
        assert_eq!(Priority::new(9).unwrap(), Priority::MAX);
        assert!(Priority::new(10).is_err());
        assert!(Priority::new(-1).is_err());
    }
}
