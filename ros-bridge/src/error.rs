//! The crate's error type.

/// Why the ROS 2 side could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured name is not a valid ROS 2 name.
    #[error("invalid ros 2 name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The DDS participant, node, topic or a service could not be created.
    #[error("could not create the ros 2 {what}: {reason}")]
    Create {
        /// Which entity.
        what: &'static str,
        /// The DDS layer's message.
        reason: String,
    },
}
