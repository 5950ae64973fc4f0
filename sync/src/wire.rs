//! The wire protocol: frames, their encoding and their limits.
//!
//! A connection carries one bidirectional QUIC stream. Each side writes
//! frames: a 4-byte big-endian length, then that many bytes of one
//! postcard-encoded [`Frame`]. Both directions are the same protocol; there
//! is no client or server once the connection is up.

use icn_engine::ChangeSignature;
use serde::{Deserialize, Serialize};

/// The ALPN of this protocol. A change to the frames below that an older
/// peer cannot read needs a new version here.
pub const ALPN: &[u8] = b"icn/sync/1";

/// Largest frame body accepted (16 MiB): a whole-document sync message of a
/// large document fits; anything bigger is a fault.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Most documents one `Hello` may announce.
pub const MAX_ANNOUNCED_DOCS: usize = 100_000;

/// Most entries one `Entries` frame carries; a sender also stops adding
/// entries once the frame passes [`ENTRIES_FRAME_TARGET`] bytes.
pub const MAX_ENTRIES_PER_FRAME: usize = 1024;

/// Size at which a sender closes an `Entries` frame.
pub const ENTRIES_FRAME_TARGET: usize = 1 << 20;

/// Most ids one `LedgerWant` may ask for, and most heads one `LedgerHeads`
/// may name.
pub const MAX_IDS_PER_FRAME: usize = 4096;

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame each side sends: the documents it holds that the
    /// other side may receive.
    Hello {
        /// Document ids.
        docs: Vec<[u8; 32]>,
    },
    /// An Automerge sync message for one document, with the signature of
    /// every change it carries.
    Doc {
        /// The document.
        doc: [u8; 32],
        /// `automerge::sync::Message::encode()`.
        message: Vec<u8>,
        /// One per change the message carries.
        signatures: Vec<ChangeSignature>,
    },
    /// The sender's ledger heads for a co-op.
    LedgerHeads {
        /// The co-op.
        coop: [u8; 32],
        /// Entry ids.
        heads: Vec<[u8; 32]>,
    },
    /// Every entry id the sender holds for a co-op, as a bloom filter
    /// ([`crate::bloom`]): send what is not in it.
    LedgerHave {
        /// The co-op.
        coop: [u8; 32],
        /// The filter's bits.
        bloom: Vec<u8>,
    },
    /// Entries the sender lacks: named heads, or parents of entries it holds.
    LedgerWant {
        /// The co-op.
        coop: [u8; 32],
        /// Entry ids.
        ids: Vec<[u8; 32]>,
    },
    /// Ledger entries, parents first, each in its canonical encoding.
    Entries {
        /// The co-op.
        coop: [u8; 32],
        /// Encoded signed entries.
        entries: Vec<Vec<u8>>,
    },
    /// The sender has sent everything a `LedgerHave` or `LedgerWant` asked
    /// for.
    LedgerDone {
        /// The co-op.
        coop: [u8; 32],
    },
    /// A content-addressed blob the sender needs (a WASM tally module).
    BlobWant {
        /// blake3 hash.
        hash: [u8; 32],
    },
    /// A blob. The receiver stores it only if it asked for it and the bytes
    /// hash to `hash`.
    Blob {
        /// blake3 hash.
        hash: [u8; 32],
        /// The bytes, at most [`MAX_BLOB_BYTES`].
        bytes: Vec<u8>,
    },
}

/// Largest blob sent: a tally module's limit.
pub const MAX_BLOB_BYTES: usize = icn_engine::policy::MAX_MODULE_BYTES;

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Over [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Bytes after the frame.
    #[error("{0} bytes after the end of the frame")]
    TrailingBytes(usize),
    /// A list over its limit.
    #[error("{what}: {len} is over the limit of {max}")]
    OverLimit {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Frame {
    /// The frame's body (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding to a Vec cannot fail")
    }

    /// Decodes a frame's body, refusing anything oversized, trailing bytes,
    /// and lists over their limits.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        // postcard bounds every length prefix by the input left, so a
        // hostile prefix cannot make it allocate more than the input's size.
        let (frame, rest): (Frame, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FrameError::TrailingBytes(rest.len()));
        }
        frame.check_limits()?;
        Ok(frame)
    }

    fn check_limits(&self) -> Result<(), FrameError> {
        let (what, len, max) = match self {
            Frame::Hello { docs } => ("announced documents", docs.len(), MAX_ANNOUNCED_DOCS),
            Frame::LedgerHeads { heads, .. } => ("ledger heads", heads.len(), MAX_IDS_PER_FRAME),
            Frame::LedgerWant { ids, .. } => ("wanted entries", ids.len(), MAX_IDS_PER_FRAME),
            Frame::Entries { entries, .. } => {
                ("entries in a frame", entries.len(), MAX_ENTRIES_PER_FRAME)
            }
            Frame::Blob { bytes, .. } => ("blob bytes", bytes.len(), MAX_BLOB_BYTES),
            Frame::Doc { .. }
            | Frame::LedgerHave { .. }
            | Frame::LedgerDone { .. }
            | Frame::BlobWant { .. } => {
                return Ok(());
            }
        };
        if len > max {
            return Err(FrameError::OverLimit { what, len, max });
        }
        Ok(())
    }

    /// The frame with its 4-byte big-endian length prefix, ready to write.
    pub fn to_wire(&self) -> Vec<u8> {
        let body = self.encode();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let frame = Frame::LedgerWant {
            coop: [1; 32],
            ids: vec![[2; 32], [3; 32]],
        };
        let mut bytes = frame.encode();
        assert_eq!(Frame::decode(&bytes), Ok(frame));
        bytes.push(0);
        assert_eq!(Frame::decode(&bytes), Err(FrameError::TrailingBytes(1)));
        assert!(matches!(
            Frame::decode(&[0xff; 3]),
            Err(FrameError::Malformed(_))
        ));
        let too_many = Frame::LedgerWant {
            coop: [1; 32],
            ids: vec![[0; 32]; MAX_IDS_PER_FRAME + 1],
        };
        assert!(matches!(
            Frame::decode(&too_many.encode()),
            Err(FrameError::OverLimit { .. })
        ));
        assert_eq!(
            Frame::decode(&vec![0; MAX_FRAME_BYTES + 1]),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
    }
}
