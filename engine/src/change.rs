//! Signed changes: an Automerge change and its author's signature, as stored
//! and as sent to peers.

use automerge::ChangeHash;
use icn_schemas::{DocId, SignedDelegation};

/// Domain separator of change signatures.
pub const CHANGE_SIGNATURE_CONTEXT: &[u8] = b"icn/change/v1";

/// Largest encoded change accepted (1 MiB).
pub const MAX_CHANGE_BYTES: usize = 1 << 20;

/// Most changes in one batch.
pub const MAX_BATCH_CHANGES: usize = 10_000;

/// Largest encoded batch accepted (16 MiB).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// An Automerge change with the signature of its actor key, and, when a node
/// wrote it for a member, the member's signed delegation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedChange {
    /// The change, as `Change::raw_bytes()`.
    pub change: Vec<u8>,
    /// Ed25519 signature by the actor key over [`signing_message`].
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
    /// Present when the actor is a node writing for a member.
    pub delegation: Option<SignedDelegation>,
}

/// What travels beside a change in a sync message: its hash, its author's
/// signature and, for a node writing for a member, the delegation. With the
/// change's bytes from the message it makes a [`SignedChange`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeSignature {
    /// The change's hash.
    pub hash: [u8; 32],
    /// As [`SignedChange::signature`].
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
    /// As [`SignedChange::delegation`].
    pub delegation: Option<SignedDelegation>,
}

/// The 32 bytes a change's author signs:
/// `blake3("icn/change/v1" ‖ doc id ‖ change hash)`.
pub fn signing_message(doc: &DocId, hash: &ChangeHash) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(CHANGE_SIGNATURE_CONTEXT);
    h.update(&doc.0);
    h.update(&hash.0);
    *h.finalize().as_bytes()
}

/// Why bytes are not a batch of signed changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Over [`MAX_BATCH_BYTES`].
    #[error("batch of {0} bytes is over the {MAX_BATCH_BYTES}-byte limit")]
    TooLarge(usize),
    /// Over [`MAX_BATCH_CHANGES`].
    #[error("batch of {0} changes is over the {MAX_BATCH_CHANGES}-change limit")]
    TooManyChanges(usize),
    /// Not the encoding.
    #[error("malformed batch: {0}")]
    Malformed(String),
    /// Bytes after the batch.
    #[error("{0} bytes after the end of the batch")]
    TrailingBytes(usize),
}

/// Encodes a batch of signed changes (postcard).
pub fn encode_batch(batch: &[SignedChange]) -> Vec<u8> {
    postcard::to_stdvec(batch).expect("encoding to a Vec cannot fail")
}

/// Decodes a batch of signed changes, refusing oversized input and trailing
/// bytes.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<SignedChange>, DecodeError> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    // postcard bounds every length by the input left, so a hostile length
    // prefix cannot make it allocate more than the input's size.
    let (batch, rest): (Vec<SignedChange>, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if batch.len() > MAX_BATCH_CHANGES {
        return Err(DecodeError::TooManyChanges(batch.len()));
    }
    Ok(batch)
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes = <&'de [u8]>::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_roundtrip_and_trailing_bytes() {
        let batch = vec![SignedChange {
            change: vec![1, 2, 3],
            signature: [7; 64],
            delegation: None,
        }];
        let mut bytes = encode_batch(&batch);
        assert_eq!(decode_batch(&bytes), Ok(batch));
        bytes.push(0);
        assert_eq!(decode_batch(&bytes), Err(DecodeError::TrailingBytes(1)));
        assert!(matches!(
            decode_batch(&[0xff; 3]),
            Err(DecodeError::Malformed(_))
        ));
    }
}
