//! Snapshot format: a fixed header, then the whole [`Mission`] in postcard.
//!
//! ```text
//! offset 0  u32 LE  format version (FORMAT_VERSION)
//! offset 4  u32 LE  CRC-32 (IEEE) of the payload
//! offset 8  ...     postcard(Mission)
//! ```
//!
//! postcard is compact and, with only `BTreeMap`s and sorted `Vec`s in the
//! state, byte-identical across replicas. The version comes first so a
//! future format is refused with a clear error before anything else is
//! read. The checksum catches a snapshot damaged on disk or on the wire
//! before it is decoded; a snapshot that decodes but breaks an invariant is
//! refused too, so a node never starts from a state `apply` could not have
//! produced.

use crate::machine::SnapshotError;
use crate::mission::Mission;

/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_LEN: usize = 8;

/// Serialises `mission` with the header.
pub fn encode(mission: &Mission) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + 64 * 1024);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    // Serialising these types into a Vec cannot fail: no unsupported serde
    // feature is used and the Vec grows as needed. A failure is a bug in
    // this crate, not something input can cause.
    let mut bytes = match postcard::to_extend(mission, bytes) {
        Ok(bytes) => bytes,
        Err(e) => panic!("serialising the mission state failed: {e}"),
    };
    let crc = crc32(&bytes[HEADER_LEN..]);
    bytes[4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(crc32(&bytes[HEADER_LEN..]), crc);
    bytes
}

/// Reads bytes written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Mission, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { reason };
    let (Some(version), Some(crc)) = (read_u32(bytes, 0), read_u32(bytes, 4)) else {
        return Err(corrupt(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    };
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    let actual = crc32(payload);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum {actual:08x} does not match the header's {crc:08x}"
        )));
    }
    let (mut mission, rest) =
        postcard::take_from_bytes::<Mission>(payload).map_err(|e| corrupt(format!("decode: {e}")))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes after the state", rest.len())));
    }
    mission.rebuild_index();
    mission
        .check_invariants()
        .map_err(|e| corrupt(format!("invariant broken: {e}")))?;
    Ok(mission)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(field))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib), table-driven: about 1 ns a byte,
/// well inside the snapshot time budget, without another dependency.
/// Public so that formats wrapping a snapshot (cairn's backup files) use
/// the same checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The check value every CRC-32/IEEE implementation agrees on.
        let got = crc32(b"123456789");
        assert_eq!(got, 0xCBF4_3926, "crc32(\"123456789\") = {got:08x}");
    }
}
