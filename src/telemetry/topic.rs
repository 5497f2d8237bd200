//! Topic names, and the filters a subscriber gives.

use std::collections::BTreeSet;

use super::TelemetryError;
use super::MAX_FILTER_ENTRIES;
use super::MAX_TOPIC_BYTES;

/// Check a topic name: 1 to [`MAX_TOPIC_BYTES`] bytes of dot-separated,
/// non-empty segments of `a-z`, `0-9`, `_` and `-`.
pub fn validate_topic(topic: &str) -> Result<(), TelemetryError> {
    let err = |reason| TelemetryError::InvalidTopic {
        topic: topic.chars().take(MAX_TOPIC_BYTES + 8).collect(),
        reason,
    };
    if topic.is_empty() {
        return Err(err("is empty"));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(err("is longer than 128 bytes"));
    }
    if topic == "topics" {
        // `GET /v1/telemetry/topics` is the listing.
        return Err(err("is reserved"));
    }
    for segment in topic.split('.') {
        if segment.is_empty() {
            return Err(err("has an empty segment (leading, trailing or double dot)"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(err("may contain only a-z, 0-9, '_', '-' and '.'"));
        }
    }
    Ok(())
}

/// Which topics a subscriber wants: exact names and name prefixes. Empty
/// means every topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicFilter {
    topics: BTreeSet<String>,
    prefixes: BTreeSet<String>,
}

impl TopicFilter {
    /// Every topic.
    pub fn all() -> Self {
        Self::default()
    }

    /// Exact topics and prefixes (e.g. `rover.` matches `rover.pose`),
    /// validated; at most [`MAX_FILTER_ENTRIES`] in all.
    pub fn new<T, P>(topics: T, prefixes: P) -> Result<Self, TelemetryError>
    where
        T: IntoIterator,
        T::Item: Into<String>,
        P: IntoIterator,
        P::Item: Into<String>,
    {
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        let prefixes: BTreeSet<String> = prefixes.into_iter().map(Into::into).collect();
        if topics.len() + prefixes.len() > MAX_FILTER_ENTRIES {
            return Err(TelemetryError::InvalidFilter {
                reason: format!("more than {MAX_FILTER_ENTRIES} topics and prefixes"),
            });
        }
        for t in &topics {
            validate_topic(t)?;
        }
        for p in &prefixes {
            let bad = p.is_empty()
                || p.len() > MAX_TOPIC_BYTES
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
            if bad {
                return Err(TelemetryError::InvalidFilter {
                    reason: format!("prefix {p:?} must be 1 to 128 bytes of a-z, 0-9, '_', '-' and '.'"),
                });
            }
        }
        Ok(Self { topics, prefixes })
    }

    /// Whether `topic` passes.
    pub fn matches(&self, topic: &str) -> bool {
        (self.topics.is_empty() && self.prefixes.is_empty())
            || self.topics.contains(topic)
            || self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }
}
