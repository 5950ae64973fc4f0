//! Decentralised identifiers: `did:icn:<base58btc(ed25519 public key)>`.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

/// The prefix every ICN DID starts with.
pub const DID_PREFIX: &str = "did:icn:";

/// An ICN DID: an Ed25519 public key, printed as `did:icn:<base58btc(key)>`.
///
/// Parsing checks the syntax (prefix, base58btc, 32 bytes) and is cheap, so
/// the thousands of DIDs that key a document's maps cost little to read.
/// Whether the 32 bytes are a usable Ed25519 key (a curve point that is not of
/// small order) is checked when the key is used, by [`Did::key`], or up
/// front by [`Did::parse_valid`] where a person typed the DID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did([u8; 32]);

/// Why a string or byte string is not a DID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DidError {
    /// The string does not start with `did:icn:`.
    #[error("a DID starts with \"did:icn:\", got {0:?}")]
    MissingPrefix(String),
    /// Nothing follows the prefix.
    #[error("the DID has no key after \"did:icn:\"")]
    EmptyKey,
    /// The key part is not base58btc.
    #[error("the DID key is not base58btc: {0}")]
    NotBase58(String),
    /// The key does not have 32 bytes.
    #[error("a DID key has 32 bytes, this one has {0}")]
    WrongLength(usize),
    /// The 32 bytes are not a usable Ed25519 public key.
    #[error("the DID key is not a valid Ed25519 public key")]
    InvalidKey,
}

impl Did {
    /// The DID of a verifying key. Weak (small-order) keys are refused: anyone
    /// could forge signatures for them.
    pub fn from_key(key: VerifyingKey) -> Result<Self, DidError> {
        if key.is_weak() {
            return Err(DidError::InvalidKey);
        }
        Ok(Self(key.to_bytes()))
    }

    /// The DID of a 32-byte public key (syntax only; see [`Did::key`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DidError> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| DidError::WrongLength(bytes.len()))?;
        Ok(Did(bytes))
    }

    /// Parses a DID and checks that it is a usable Ed25519 key: every
    /// malformed DID gets its own error.
    pub fn parse_valid(s: &str) -> Result<Self, DidError> {
        let did: Did = s.parse()?;
        did.key()?;
        Ok(did)
    }

    /// Parses the base58btc key part alone (no `did:icn:` prefix), as used for
    /// device keys inside documents.
    pub fn from_key_string(s: &str) -> Result<Self, DidError> {
        if s.is_empty() {
            return Err(DidError::EmptyKey);
        }
        // 32 bytes never need more than 44 base58 characters; refuse long input
        // before decoding it.
        if s.len() > 44 {
            return Err(DidError::WrongLength(s.len() * 3 / 4));
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|e| DidError::NotBase58(e.to_string()))?;
        Self::from_bytes(&bytes)
    }

    /// The public key, decompressed; refuses bytes that are not a curve point
    /// and weak (small-order) keys, for which anyone could forge signatures.
    pub fn key(&self) -> Result<VerifyingKey, DidError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| DidError::InvalidKey)?;
        if key.is_weak() {
            return Err(DidError::InvalidKey);
        }
        Ok(key)
    }

    /// The 32 bytes of the public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The base58btc key part alone, without `did:icn:`.
    ///
    /// Base58 costs about a microsecond a key, and judging an entry names
    /// its author's key in several document lookups, so each thread keeps
    /// the encodings of the last few thousand keys it encoded.
    pub fn key_string(&self) -> String {
        const KEPT: usize = 4096;
        thread_local! {
            static ENCODED: std::cell::RefCell<foldhash::HashMap<[u8; 32], String>> =
                std::cell::RefCell::default();
        }
        ENCODED.with(|kept| {
            let mut kept = kept.borrow_mut();
            if let Some(s) = kept.get(&self.0) {
                return s.clone();
            }
            if kept.len() >= KEPT {
                kept.clear();
            }
            let s = bs58::encode(&self.0).into_string();
            kept.insert(self.0, s.clone());
            s
        })
    }
}

impl FromStr for Did {
    type Err = DidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s
            .strip_prefix(DID_PREFIX)
            .ok_or_else(|| DidError::MissingPrefix(s.chars().take(64).collect()))?;
        Self::from_key_string(key)
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DID_PREFIX}{}", self.key_string())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({self})")
    }
}

impl serde::Serialize for Did {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Did {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The base point of Ed25519, a valid public key.
    const BASEPOINT: [u8; 32] = [
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66,
    ];

    #[test]
    fn roundtrip() {
        let did = Did::from_bytes(&BASEPOINT).expect("basepoint is a valid key");
        let printed = did.to_string();
        assert!(printed.starts_with("did:icn:"));
        assert_eq!(printed.parse::<Did>(), Ok(did));
    }

    #[test]
    fn every_malformed_did_has_its_own_error() {
        let good = Did::from_bytes(&BASEPOINT).expect("valid").key_string();
        assert!(matches!(
            "did:key:abc".parse::<Did>(),
            Err(DidError::MissingPrefix(_))
        ));
        assert_eq!("did:icn:".parse::<Did>(), Err(DidError::EmptyKey));
        assert!(matches!(
            "did:icn:0OIl".parse::<Did>(),
            Err(DidError::NotBase58(_))
        ));
        assert_eq!(
            format!("did:icn:{}", &good[..10]).parse::<Did>(),
            Err(DidError::WrongLength(7))
        );
        assert!(matches!(
            format!("did:icn:{good}{good}").parse::<Did>(),
            Err(DidError::WrongLength(_))
        ));
        // The identity point is a small-order (weak) key: syntactically a
        // DID, refused as a key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = Did::from_bytes(&identity).expect("32 bytes");
        assert_eq!(weak.key(), Err(DidError::InvalidKey));
        assert_eq!(
            Did::parse_valid(&weak.to_string()),
            Err(DidError::InvalidKey)
        );
        assert!(Did::parse_valid(&format!("did:icn:{good}")).is_ok());
    }
}
