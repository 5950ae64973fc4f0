//! Delegations: a member lets a node write on its behalf.
//!
//! A web or mobile client that talks to someone else's node never hands over
//! its key. The challenge it signs at `POST /v1/auth/verify` is a delegation
//! statement, a short canonical text:
//!
//! ```text
//! icn-delegation/v1
//! member: did:icn:…
//! node: did:icn:…
//! scopes: coop:read coop:write gov:write
//! not_before: 1763750000
//! expires: 1763836400
//! nonce: 9f2c…
//! ```
//!
//! The member signs the exact UTF-8 bytes of this text with the key of its
//! DID. The node attaches the signed statement to every change it writes for
//! the member, so any peer can check the write without trusting the node.
//! Only the canonical form parses: one space after each colon, fields in this
//! order, scopes sorted and unique, no trailing newline.
//!
//! A member's other device (a phone whose key is not the DID key) signs
//! for the member too: the statement then has a `device: did:icn:…` line
//! right after `member:`, and the device's key signs it. Peers accept what
//! a node writes under it where the device is a live device of the member
//! (`docs/permissions.md`).

use std::fmt;
use std::str::FromStr;

use crate::did::{Did, DidError};

/// First line of every statement.
pub const DELEGATION_HEADER: &str = "icn-delegation/v1";

/// Longest statement accepted, in bytes.
pub const MAX_STATEMENT_LEN: usize = 1024;

/// What a token or delegation lets its holder do (the API directory's scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Read co-op documents.
    CoopRead,
    /// Write co-op documents as the member.
    CoopWrite,
    /// Perform admin writes in co-op documents (if the member is an admin).
    CoopAdmin,
    /// Read governance domains.
    GovRead,
    /// Write in governance domains as the member.
    GovWrite,
    /// Read the ledger.
    LedgerRead,
    /// Write ledger entries as the member.
    LedgerWrite,
}

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 7] = [
        Scope::CoopRead,
        Scope::CoopWrite,
        Scope::CoopAdmin,
        Scope::GovRead,
        Scope::GovWrite,
        Scope::LedgerRead,
        Scope::LedgerWrite,
    ];

    /// The scope's name, as in the API directory.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CoopRead => "coop:read",
            Scope::CoopWrite => "coop:write",
            Scope::CoopAdmin => "coop:admin",
            Scope::GovRead => "gov:read",
            Scope::GovWrite => "gov:write",
            Scope::LedgerRead => "ledger:read",
            Scope::LedgerWrite => "ledger:write",
        }
    }
}

impl FromStr for Scope {
    type Err = DelegationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| DelegationError::UnknownScope(s.chars().take(32).collect()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed delegation statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The member who delegates.
    pub member: Did,
    /// The member's device whose key signs the statement; `None` when the
    /// member's DID key signs it. Never the DID itself.
    pub device: Option<Did>,
    /// The node allowed to write for the member.
    pub node: Did,
    /// What the node may do, sorted and unique.
    pub scopes: Vec<Scope>,
    /// Start of validity, unix seconds.
    pub not_before: u64,
    /// End of validity (exclusive), unix seconds.
    pub expires: u64,
    /// Random hex chosen by the node, so that every statement is distinct.
    pub nonce: String,
}

/// Why a statement is not a valid delegation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// Longer than [`MAX_STATEMENT_LEN`].
    #[error("a delegation statement has at most {MAX_STATEMENT_LEN} bytes, this one has {0}")]
    TooLong(usize),
    /// The first line is not [`DELEGATION_HEADER`].
    #[error("a delegation statement starts with the line \"{DELEGATION_HEADER}\"")]
    BadHeader,
    /// A line is missing or is not `name: value` with the expected name.
    #[error("line {line} of the delegation statement should be \"{field}: …\"")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The field expected there.
        field: &'static str,
    },
    /// Text after the last field.
    #[error("the delegation statement has text after its last field")]
    TrailingText,
    /// A DID field is not a DID.
    #[error("the {field} of the delegation is not a DID: {source}")]
    BadDid {
        /// `member` or `node`.
        field: &'static str,
        /// Why.
        source: DidError,
    },
    /// A scope name that does not exist.
    #[error("unknown scope {0:?}")]
    UnknownScope(String),
    /// Scopes not sorted, repeated or empty.
    #[error("scopes must be non-empty, sorted and unique")]
    ScopesNotCanonical,
    /// A time is not a decimal number.
    #[error("the {0} of the delegation is not a unix time in seconds")]
    BadTime(&'static str),
    /// `expires` is not after `not_before`.
    #[error("the delegation expires before it starts")]
    EmptyValidity,
    /// The nonce is not 16 to 64 lowercase hex digits.
    #[error("the nonce must be 16 to 64 lowercase hex digits")]
    BadNonce,
    /// The signature does not verify with the member's key.
    #[error("the delegation's signature is not the member's (or its device's)")]
    BadSignature,
    /// A `device` line naming the member's DID: the DID key signs without
    /// one.
    #[error("a delegation signed with the member's DID key has no device line")]
    DeviceIsMember,
}

impl Delegation {
    /// The canonical statement text, which the member signs.
    pub fn statement(&self) -> String {
        self.to_string()
    }

    /// The key that signs the statement: the device's, or the member's DID
    /// key.
    pub fn signing_key(&self) -> Did {
        self.device.unwrap_or(self.member)
    }

    /// Whether the delegation grants `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether `unix_seconds` falls in `[not_before, expires)`.
    pub fn is_live_at(&self, unix_seconds: u64) -> bool {
        self.not_before <= unix_seconds && unix_seconds < self.expires
    }
}

impl fmt::Display for Delegation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scopes: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        let device = self
            .device
            .map(|d| format!("\ndevice: {d}"))
            .unwrap_or_default();
        write!(
            f,
            "{DELEGATION_HEADER}\nmember: {}{device}\nnode: {}\nscopes: {}\nnot_before: {}\nexpires: {}\nnonce: {}",
            self.member,
            self.node,
            scopes.join(" "),
            self.not_before,
            self.expires,
            self.nonce
        )
    }
}

impl FromStr for Delegation {
    type Err = DelegationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_STATEMENT_LEN {
            return Err(DelegationError::TooLong(s.len()));
        }
        let mut lines = s.split('\n').peekable();
        if lines.next() != Some(DELEGATION_HEADER) {
            return Err(DelegationError::BadHeader);
        }
        fn value<'a>(line: Option<&'a str>, name: &str) -> Option<&'a str> {
            line.and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(": "))
        }
        let member = value(lines.next(), "member").ok_or(DelegationError::BadLine {
            line: 2,
            field: "member",
        })?;
        let device = match value(lines.peek().copied(), "device") {
            Some(d) => {
                lines.next();
                Some(d)
            }
            None => None,
        };
        let first = 3 + usize::from(device.is_some());
        let mut field = |line: usize, name: &'static str| -> Result<&str, DelegationError> {
            value(lines.next(), name).ok_or(DelegationError::BadLine { line, field: name })
        };
        let node = field(first, "node")?;
        let scopes = field(first + 1, "scopes")?;
        let not_before = field(first + 2, "not_before")?;
        let expires = field(first + 3, "expires")?;
        let nonce = field(first + 4, "nonce")?;
        if lines.next().is_some() {
            return Err(DelegationError::TrailingText);
        }

        let did = |field: &'static str, text: &str| {
            text.parse::<Did>()
                .map_err(|source| DelegationError::BadDid { field, source })
        };
        let scopes = scopes
            .split(' ')
            .map(str::parse)
            .collect::<Result<Vec<Scope>, _>>()?;
        if scopes.is_empty() || scopes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DelegationError::ScopesNotCanonical);
        }
        let time = |name: &'static str, text: &str| {
            // Only canonical decimal: digits alone (no sign, which
            // `u64::from_str` would take), no leading zeros.
            if text.is_empty()
                || !text.bytes().all(|b| b.is_ascii_digit())
                || (text.len() > 1 && text.starts_with('0'))
            {
                return Err(DelegationError::BadTime(name));
            }
            text.parse::<u64>()
                .map_err(|_| DelegationError::BadTime(name))
        };
        let not_before = time("not_before", not_before)?;
        let expires = time("expires", expires)?;
        if expires <= not_before {
            return Err(DelegationError::EmptyValidity);
        }
        let nonce_ok = (16..=64).contains(&nonce.len())
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !nonce_ok {
            return Err(DelegationError::BadNonce);
        }
        let member = did("member", member)?;
        let device = device.map(|d| did("device", d)).transpose()?;
        if device == Some(member) {
            return Err(DelegationError::DeviceIsMember);
        }
        Ok(Delegation {
            member,
            device,
            node: did("node", node)?,
            scopes,
            not_before,
            expires,
            nonce: nonce.to_owned(),
        })
    }
}

/// A delegation statement with the member's signature over its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedDelegation {
    /// The canonical statement text.
    pub statement: String,
    /// Ed25519 signature over `statement` by the member's DID key, or by
    /// the device the statement names.
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

impl SignedDelegation {
    /// The hash that names it: blake3 of the statement (a gateway's tokens
    /// carry it, and a logout's seal names it).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(self.statement.as_bytes()).as_bytes()
    }

    /// Parses the statement and checks its signature, by the member's DID
    /// key or by the device it names. (Whether that device acts for the
    /// member is the co-op document's to say.)
    pub fn verify(&self) -> Result<Delegation, DelegationError> {
        let delegation: Delegation = self.statement.parse()?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        delegation
            .signing_key()
            .key()
            .map_err(|_| DelegationError::BadSignature)?
            .verify_strict(self.statement.as_bytes(), &signature)
            .map_err(|_| DelegationError::BadSignature)?;
        Ok(delegation)
    }
}

/// serde for 64-byte signatures (serde derives arrays only up to 32).
pub(crate) mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes = <std::borrow::Cow<'de, [u8]>>::deserialize(d)?;
        bytes
            .as_ref()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn did(seed: u8) -> (SigningKey, Did) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let did = Did::from_key(key.verifying_key()).expect("valid key");
        (key, did)
    }

    fn sample() -> (SigningKey, Delegation) {
        let (member_key, member) = did(1);
        let (_, node) = did(2);
        let delegation = Delegation {
            member,
            device: None,
            node,
            scopes: vec![Scope::CoopRead, Scope::CoopWrite, Scope::GovWrite],
            not_before: 1_700_000_000,
            expires: 1_700_003_600,
            nonce: "00112233445566778899aabbccddeeff".into(),
        };
        (member_key, delegation)
    }

    #[test]
    fn statement_roundtrips_and_verifies() {
        let (key, delegation) = sample();
        let statement = delegation.statement();
        assert_eq!(statement.parse::<Delegation>().as_ref(), Ok(&delegation));
        let signed = SignedDelegation {
            signature: key.sign(statement.as_bytes()).to_bytes(),
            statement,
        };
        assert_eq!(signed.verify(), Ok(delegation));
    }

    #[test]
    fn non_canonical_statements_are_refused() {
        let (_, delegation) = sample();
        let good = delegation.statement();
        assert_eq!(
            format!("{good}\n").parse::<Delegation>(),
            Err(DelegationError::TrailingText)
        );
        assert!(
            good.replace("member: ", "member:")
                .parse::<Delegation>()
                .is_err()
        );
        assert_eq!(
            good.replace("coop:read coop:write", "coop:write coop:read")
                .parse::<Delegation>(),
            Err(DelegationError::ScopesNotCanonical)
        );
        assert!(matches!(
            good.replace("gov:write", "gov:everything")
                .parse::<Delegation>(),
            Err(DelegationError::UnknownScope(_))
        ));
        assert_eq!(
            good.replace("1700003600", "01700003600")
                .parse::<Delegation>(),
            Err(DelegationError::BadTime("expires"))
        );
        // Found by the gateway_auth fuzz target: a sign parsed.
        assert_eq!(
            good.replace("not_before: 1700000000", "not_before: +1700000000")
                .parse::<Delegation>(),
            Err(DelegationError::BadTime("not_before"))
        );
        assert_eq!(
            good.replace("1700003600", "1700000000")
                .parse::<Delegation>(),
            Err(DelegationError::EmptyValidity)
        );
        assert_eq!(
            good.replace("aabbcc", "AABBCC").parse::<Delegation>(),
            Err(DelegationError::BadNonce)
        );
        assert_eq!(
            "hello".parse::<Delegation>(),
            Err(DelegationError::BadHeader)
        );
    }

    #[test]
    fn a_device_signs_for_its_member() {
        let (_, mut delegation) = sample();
        let (device_key, device) = did(3);
        delegation.device = Some(device);
        let statement = delegation.statement();
        assert!(statement.contains(&format!("\ndevice: {device}\nnode: ")));
        assert_eq!(statement.parse::<Delegation>().as_ref(), Ok(&delegation));
        let signed = SignedDelegation {
            signature: device_key.sign(statement.as_bytes()).to_bytes(),
            statement: statement.clone(),
        };
        assert_eq!(signed.verify().map(|d| d.signing_key()), Ok(device));
        // The member's key does not sign a statement naming a device.
        let (member_key, _) = did(1);
        let by_member = SignedDelegation {
            signature: member_key.sign(statement.as_bytes()).to_bytes(),
            statement,
        };
        assert_eq!(by_member.verify(), Err(DelegationError::BadSignature));
        // A device line naming the member is not canonical.
        let member = delegation.member;
        delegation.device = Some(member);
        assert_eq!(
            delegation.statement().parse::<Delegation>(),
            Err(DelegationError::DeviceIsMember)
        );
    }

    #[test]
    fn a_signature_by_anyone_but_the_member_is_refused() {
        let (_, delegation) = sample();
        let (node_key, _) = did(2);
        let statement = delegation.statement();
        let signed = SignedDelegation {
            signature: node_key.sign(statement.as_bytes()).to_bytes(),
            statement,
        };
        assert_eq!(signed.verify(), Err(DelegationError::BadSignature));
    }
}
