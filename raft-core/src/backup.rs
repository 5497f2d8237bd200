//! Backup files: a point-in-time copy of a cluster's state machine.
//!
//! A backup is taken with a linearizable read ([`crate::RaftNode::backup`]):
//! it reflects every write acknowledged before the backup started, and
//! nothing that was not committed. It holds the state machine's own
//! snapshot bytes (which carry their own format version and checksum) plus
//! where in the log they were taken, and is restored into the data dir of
//! a new one-node cluster ([`crate::restore_backup`]).
//!
//! ```text
//! offset 0   8 bytes  magic "CAIRNBAK"
//! offset 8   u32 LE   backup format version (FORMAT_VERSION)
//! offset 12  u32 LE   CRC-32 (IEEE) of everything from offset 16 on
//! offset 16  ...      postcard(Backup)
//! ```
//!
//! Client sessions (the at-most-once table of tagged writes) are not in a
//! backup: a restored cluster is a new cluster, and its clients start new
//! sessions.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::consensus::Member;
use crate::consensus::NodeId;
use crate::error::Error;

/// The backup format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"CAIRNBAK";
const HEADER_LEN: usize = 16;

/// A point-in-time copy of the state machine and where it was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Log index of the last command the state reflects.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// When it was taken (ms since the Unix epoch, the serving node's clock;
    /// informational).
    pub taken_at_ms: u64,
    /// The node that served it.
    pub taken_by: NodeId,
    /// The cluster's members then (informational: a restore starts a new
    /// one-node cluster).
    pub members: BTreeMap<NodeId, Member>,
    /// The state machine's snapshot bytes
    /// ([`cairn_state::StateMachine::snapshot`]).
    pub state: Vec<u8>,
}

impl Backup {
    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let body = postcard::to_stdvec(self)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&cairn_state::snapshot::crc32(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Read a file written by [`Backup::encode`], checking the magic, the
    /// version and the checksum before decoding anything.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |reason: String| Error::Backup { reason };
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(bad("not a cairn backup file (no CAIRNBAK header)".into()));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "backup format version {version} is not supported (this build reads {FORMAT_VERSION})"
            )));
        }
        let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let body = &bytes[HEADER_LEN..];
        let actual = cairn_state::snapshot::crc32(body);
        if actual != crc {
            return Err(bad(format!(
                "checksum {actual:08x} does not match the header's {crc:08x}: the file is damaged"
            )));
        }
        let (backup, rest) =
            postcard::take_from_bytes::<Backup>(body).map_err(|e| bad(format!("cannot decode: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes after the backup", rest.len())));
        }
        Ok(backup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            index: 42,
            term: 3,
            taken_at_ms: 1_700_000_000_000,
            taken_by: 2,
            members: [(
                2,
                Member {
                    raft_addr: "127.0.0.1:7002".into(),
                    api_addr: "127.0.0.1:8002".into(),
                },
            )]
            .into(),
            state: vec![1, 2, 3, 4, 5],
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let b = sample();
        let bytes = b.encode().unwrap();
        assert_eq!(Backup::decode(&bytes).unwrap(), b);

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let err = Backup::decode(&flipped).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");

        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        let err = Backup::decode(&newer).unwrap_err().to_string();
        assert!(err.contains("version 2 is not supported"), "{err}");

        let err = Backup::decode(b"{\"json\": true}").unwrap_err().to_string();
        assert!(err.contains("not a cairn backup"), "{err}");
        let err = Backup::decode(&bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}
