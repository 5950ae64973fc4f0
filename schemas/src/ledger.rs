//! Ledger entries and their one canonical binary encoding.
//!
//! An entry moves amounts between accounts of one co-op. It names its parent
//! entries (the ledger is a Merkle-DAG per co-op) and the co-op document
//! heads it was written against, which fix the author's authority and the
//! credit limits it is judged by. Its id is the blake3 hash of its encoding,
//! signature included.
//!
//! Every field has exactly one encoding, and decoding refuses anything
//! else: lists out of order or with duplicates, out-of-range lengths, unknown
//! tags, non-UTF-8 text, and trailing bytes. So `encode(decode(b)) == b` for
//! every `b` that decodes. The layout is in `docs/ledger.md`.

use std::fmt;
use std::str::FromStr;

use crate::delegation::SignedDelegation;
use crate::did::Did;
use crate::document::{DocId, check_ident};

/// First bytes of every encoded entry.
pub const ENTRY_MAGIC: &[u8; 4] = b"ICNE";
/// Encoding version.
pub const ENTRY_VERSION: u8 = 1;
/// Domain separator of entry signatures.
pub const ENTRY_SIGNATURE_CONTEXT: &[u8] = b"icn/entry/v1";
/// Most parents an entry names.
pub const MAX_PARENTS: usize = 64;
/// Most co-op heads an entry cites.
pub const MAX_COOP_HEADS: usize = 64;
/// Most postings in an entry.
pub const MAX_POSTINGS: usize = 64;
/// Longest memo, in bytes.
pub const MAX_MEMO: usize = 1024;
/// Longest encoded entry accepted.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;

/// An entry's id: blake3 of its encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub [u8; 32]);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({self})")
    }
}

impl FromStr for EntryId {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DecodeError::Invalid(
                "an entry id is 64 lowercase hex digits",
            ));
        }
        let mut id = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| DecodeError::Invalid("hex"))?;
            id[i] = u8::from_str_radix(hex, 16).map_err(|_| DecodeError::Invalid("hex"))?;
        }
        Ok(EntryId(id))
    }
}

impl serde::Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An account of a co-op's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// A member's account.
    Member(Did),
    /// The co-op's treasury, debited only under an accepted budget decision.
    Treasury,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Member(did) => write!(f, "{did}"),
            Account::Treasury => f.write_str("treasury"),
        }
    }
}

impl serde::Serialize for Account {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One leg of an entry: `amount` (in the unit's smallest step) added to
/// `account`'s balance of `unit`. Negative amounts are debits.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Posting {
    /// Whose balance.
    pub account: Account,
    /// Unit id from the co-op's policy.
    pub unit: String,
    /// Non-zero amount.
    pub amount: i64,
}

/// What an entry does.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// Move amounts: postings sorted by (account, unit), each pair once,
    /// summing to zero per unit.
    Transfer {
        /// The legs.
        postings: Vec<Posting>,
        /// Whether the author's debits come out of the signer's allowance
        /// (a device spending offline credit the member set aside for it)
        /// rather than the member's general credit.
        from_allowance: bool,
    },
    /// Freeze (or unfreeze) a member's account: from its place in the fold
    /// on, entries that touch the account are conflicted. Written by an
    /// admin.
    Freeze {
        /// Whose account.
        account: Did,
        /// `true` to freeze, `false` to unfreeze.
        frozen: bool,
    },
    /// Set aside `amount` of the author's credit in `unit` for `device` to
    /// spend on its own, offline or not. Signed by the member's DID key.
    Grant {
        /// The device (or delegate node) key the allowance is for.
        device: Did,
        /// Unit id from the co-op's policy.
        unit: String,
        /// How much, positive.
        amount: i64,
    },
    /// Give back `amount` of the signer's unspent allowance in `unit` to the
    /// member's general credit. Signed by the device whose allowance it is.
    Release {
        /// Unit id from the co-op's policy.
        unit: String,
        /// How much, positive.
        amount: i64,
    },
    /// A seal: nothing of `member`'s that `of` covers and that is not in
    /// this entry's past counts, whatever co-op heads, parents or time it
    /// cites (`docs/ledger.md`, "Seals").
    Seal {
        /// The member sealed.
        member: Did,
        /// What of the member's is sealed.
        of: Sealed,
    },
}

/// What a seal covers of its member's entries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Sealed {
    /// Every entry the member authored.
    Member,
    /// The entries one key signed for the member (for a node writing under
    /// a delegation, the key that signed the delegation): a device's
    /// revocation.
    Key(Did),
    /// The entries a node wrote under one delegation, by the hash of its
    /// statement ([`SignedDelegation::hash`]): a logout.
    Delegation([u8; 32]),
}

/// A ledger entry, unsigned.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// The co-op whose ledger this is.
    pub coop: DocId,
    /// Parent entries, sorted, unique.
    pub parents: Vec<EntryId>,
    /// The member the entry is by.
    pub author: Did,
    /// The key that signs it: a device of the author, or a node holding the
    /// author's delegation.
    pub signer: Did,
    /// Unix milliseconds, as the author's clock said.
    pub timestamp: u64,
    /// Heads of the co-op document the entry was written against, sorted,
    /// unique, at least one.
    #[serde(serialize_with = "hashes_hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<EntryId>))]
    pub coop_heads: Vec<[u8; 32]>,
    /// What it does.
    pub body: Body,
    /// Free text.
    pub memo: String,
    /// The decision receipt it executes, if any.
    #[serde(serialize_with = "opt_hash_hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<EntryId>))]
    pub decision: Option<[u8; 32]>,
    /// The author's delegation, when a node signs for the author.
    #[serde(skip)]
    pub delegation: Option<SignedDelegation>,
}

fn hashes_hex<S: serde::Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for h in v {
        seq.serialize_element(&EntryId(*h).to_string())?;
    }
    seq.end()
}

fn opt_hash_hex<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(h) => s.collect_str(&EntryId(*h)),
        None => s.serialize_none(),
    }
}

/// An entry and the signer's signature over [`Entry::signing_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    /// The entry.
    pub entry: Entry,
    /// Ed25519 signature by `entry.signer`.
    pub signature: [u8; 64],
}

/// Why bytes are not a canonical entry, or an entry cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Over [`MAX_ENTRY_BYTES`].
    #[error("an entry has at most {MAX_ENTRY_BYTES} bytes, this one has {0}")]
    TooLarge(usize),
    /// The input ended inside a field.
    #[error("the entry ends early")]
    Truncated,
    /// Bytes after the signature.
    #[error("{0} bytes after the end of the entry")]
    TrailingBytes(usize),
    /// A field is outside what the encoding allows.
    #[error("invalid entry: {0}")]
    Invalid(&'static str),
}

impl Entry {
    /// The postings of a transfer.
    pub fn postings(&self) -> &[Posting] {
        match &self.body {
            Body::Transfer { postings, .. } => postings,
            Body::Freeze { .. } | Body::Grant { .. } | Body::Release { .. } | Body::Seal { .. } => {
                &[]
            }
        }
    }

    /// The encoding without the signature.
    pub fn encode_unsigned(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::with_capacity(256);
        encode_entry(self, &mut out)?;
        Ok(out)
    }

    /// What the signer signs: `blake3("icn/entry/v1" ‖ unsigned encoding)`.
    pub fn signing_message(&self) -> Result<[u8; 32], DecodeError> {
        let mut h = blake3::Hasher::new();
        h.update(ENTRY_SIGNATURE_CONTEXT);
        h.update(&self.encode_unsigned()?);
        Ok(*h.finalize().as_bytes())
    }
}

impl SignedEntry {
    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = self.entry.encode_unsigned()?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// The entry id: blake3 of the canonical encoding.
    pub fn id(&self) -> Result<EntryId, DecodeError> {
        Ok(EntryId(*blake3::hash(&self.encode()?).as_bytes()))
    }

    /// The signing message of a canonical encoding, as
    /// [`Entry::signing_message`] computes it for the decoded entry, read
    /// from the bytes: the encoding is the unsigned encoding followed by
    /// the 64-byte signature, so nothing is encoded again.
    pub fn signing_message_of(encoded: &[u8]) -> Option<[u8; 32]> {
        let unsigned = encoded.get(..encoded.len().checked_sub(64)?)?;
        let mut h = blake3::Hasher::new();
        h.update(ENTRY_SIGNATURE_CONTEXT);
        h.update(unsigned);
        Some(*h.finalize().as_bytes())
    }

    /// Decodes a canonical encoding and returns the entry with its id.
    pub fn decode(bytes: &[u8]) -> Result<(SignedEntry, EntryId), DecodeError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut r = Cursor { bytes, at: 0 };
        let entry = decode_entry(&mut r)?;
        let signature: [u8; 64] = r.array()?;
        if r.at != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.at));
        }
        let id = EntryId(*blake3::hash(bytes).as_bytes());
        Ok((SignedEntry { entry, signature }, id))
    }
}

fn check_sorted_unique<T: Ord>(items: &[T], what: &'static str) -> Result<(), DecodeError> {
    if items.windows(2).all(|w| w[0] < w[1]) {
        Ok(())
    } else {
        Err(DecodeError::Invalid(what))
    }
}

fn check_unit(unit: &str) -> Result<(), DecodeError> {
    if unit.len() > 32 || check_ident("unit", unit).is_err() {
        return Err(DecodeError::Invalid(
            "a unit is 1 to 32 bytes of a-z 0-9 - _ . :",
        ));
    }
    Ok(())
}

fn put_len(
    out: &mut Vec<u8>,
    len: usize,
    max: usize,
    what: &'static str,
) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError::Invalid(what));
    }
    if max <= u8::MAX as usize {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    Ok(())
}

impl Posting {
    /// Where a posting goes in an entry: postings are sorted by this key,
    /// each key once.
    pub fn order_key(&self) -> (&Account, &str) {
        (&self.account, self.unit.as_str())
    }
}

/// Puts postings in their canonical order ([`Posting::order_key`]).
pub fn sort_postings(postings: &mut [Posting]) {
    postings.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
}

/// Postings are sorted by (account, unit), each pair once.
fn check_postings_order(postings: &[Posting]) -> Result<(), DecodeError> {
    let keys: Vec<(&Account, &str)> = postings.iter().map(Posting::order_key).collect();
    check_sorted_unique(
        &keys,
        "postings must be sorted by account and unit, each once",
    )
}

/// A unit and a positive amount, as grants and releases carry them.
fn put_unit_amount(out: &mut Vec<u8>, unit: &str, amount: i64) -> Result<(), DecodeError> {
    check_unit(unit)?;
    put_len(out, unit.len(), 32, "unit too long")?;
    out.extend_from_slice(unit.as_bytes());
    if amount <= 0 {
        return Err(DecodeError::Invalid("an allowance amount is positive"));
    }
    out.extend_from_slice(&amount.to_be_bytes());
    Ok(())
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.extend_from_slice(ENTRY_MAGIC);
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&e.coop.0);
    check_sorted_unique(&e.parents, "parents must be sorted and unique")?;
    put_len(out, e.parents.len(), MAX_PARENTS, "too many parents")?;
    for p in &e.parents {
        out.extend_from_slice(&p.0);
    }
    out.extend_from_slice(e.author.as_bytes());
    out.extend_from_slice(e.signer.as_bytes());
    out.extend_from_slice(&e.timestamp.to_be_bytes());
    check_sorted_unique(&e.coop_heads, "co-op heads must be sorted and unique")?;
    if e.coop_heads.is_empty() {
        return Err(DecodeError::Invalid(
            "an entry cites at least one co-op head",
        ));
    }
    put_len(
        out,
        e.coop_heads.len(),
        MAX_COOP_HEADS,
        "too many co-op heads",
    )?;
    for h in &e.coop_heads {
        out.extend_from_slice(h);
    }
    match &e.body {
        Body::Transfer {
            postings,
            from_allowance,
        } => {
            out.push(if *from_allowance { 2 } else { 0 });
            if postings.is_empty() {
                return Err(DecodeError::Invalid("a transfer has at least one posting"));
            }
            check_postings_order(postings)?;
            put_len(out, postings.len(), MAX_POSTINGS, "too many postings")?;
            for p in postings {
                match p.account {
                    Account::Member(did) => {
                        out.push(0);
                        out.extend_from_slice(did.as_bytes());
                    }
                    Account::Treasury => out.push(1),
                }
                check_unit(&p.unit)?;
                put_len(out, p.unit.len(), 32, "unit too long")?;
                out.extend_from_slice(p.unit.as_bytes());
                if p.amount == 0 {
                    return Err(DecodeError::Invalid("posting amounts are non-zero"));
                }
                out.extend_from_slice(&p.amount.to_be_bytes());
            }
        }
        Body::Freeze { account, frozen } => {
            out.push(1);
            out.extend_from_slice(account.as_bytes());
            out.push(u8::from(*frozen));
        }
        Body::Grant {
            device,
            unit,
            amount,
        } => {
            out.push(3);
            out.extend_from_slice(device.as_bytes());
            put_unit_amount(out, unit, *amount)?;
        }
        Body::Release { unit, amount } => {
            out.push(4);
            put_unit_amount(out, unit, *amount)?;
        }
        Body::Seal { member, of } => {
            out.push(5);
            out.extend_from_slice(member.as_bytes());
            match of {
                Sealed::Member => out.push(0),
                Sealed::Key(k) => {
                    out.push(1);
                    out.extend_from_slice(k.as_bytes());
                }
                Sealed::Delegation(h) => {
                    out.push(2);
                    out.extend_from_slice(h);
                }
            }
        }
    }
    put_len(out, e.memo.len(), MAX_MEMO, "memo too long")?;
    out.extend_from_slice(e.memo.as_bytes());
    match &e.decision {
        None => out.push(0),
        Some(h) => {
            out.push(1);
            out.extend_from_slice(h);
        }
    }
    match &e.delegation {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            put_len(
                out,
                d.statement.len(),
                crate::delegation::MAX_STATEMENT_LEN,
                "delegation too long",
            )?;
            out.extend_from_slice(d.statement.as_bytes());
            out.extend_from_slice(&d.signature);
        }
    }
    Ok(())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let len = if max <= u8::MAX as usize {
            self.u8()? as usize
        } else {
            u16::from_be_bytes(self.array()?) as usize
        };
        if len > max {
            return Err(DecodeError::Invalid(what));
        }
        Ok(len)
    }

    fn did(&mut self) -> Result<Did, DecodeError> {
        Did::from_bytes(self.take(32)?).map_err(|_| DecodeError::Invalid("DID"))
    }

    fn text(&mut self, len: usize) -> Result<String, DecodeError> {
        std::str::from_utf8(self.take(len)?)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid("text is not UTF-8"))
    }

    fn unit_amount(&mut self) -> Result<(String, i64), DecodeError> {
        let len = self.len(32, "unit too long")?;
        let unit = self.text(len)?;
        check_unit(&unit)?;
        let amount = i64::from_be_bytes(self.array()?);
        if amount <= 0 {
            return Err(DecodeError::Invalid("an allowance amount is positive"));
        }
        Ok((unit, amount))
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("a flag is 0 or 1")),
        }
    }
}

fn decode_entry(r: &mut Cursor<'_>) -> Result<Entry, DecodeError> {
    if r.take(4)? != ENTRY_MAGIC {
        return Err(DecodeError::Invalid("not an ICN entry"));
    }
    if r.u8()? != ENTRY_VERSION {
        return Err(DecodeError::Invalid("unknown entry version"));
    }
    let coop = DocId(r.array()?);
    let n = r.len(MAX_PARENTS, "too many parents")?;
    let parents = (0..n)
        .map(|_| r.array().map(EntryId))
        .collect::<Result<Vec<_>, _>>()?;
    check_sorted_unique(&parents, "parents must be sorted and unique")?;
    let author = r.did()?;
    let signer = r.did()?;
    let timestamp = u64::from_be_bytes(r.array()?);
    let n = r.len(MAX_COOP_HEADS, "too many co-op heads")?;
    if n == 0 {
        return Err(DecodeError::Invalid(
            "an entry cites at least one co-op head",
        ));
    }
    let coop_heads = (0..n).map(|_| r.array()).collect::<Result<Vec<_>, _>>()?;
    check_sorted_unique(&coop_heads, "co-op heads must be sorted and unique")?;
    let body = match r.u8()? {
        tag @ (0 | 2) => {
            let n = r.len(MAX_POSTINGS, "too many postings")?;
            if n == 0 {
                return Err(DecodeError::Invalid("a transfer has at least one posting"));
            }
            let mut postings = Vec::with_capacity(n);
            for _ in 0..n {
                let account = match r.u8()? {
                    0 => Account::Member(r.did()?),
                    1 => Account::Treasury,
                    _ => return Err(DecodeError::Invalid("unknown account tag")),
                };
                let len = r.len(32, "unit too long")?;
                let unit = r.text(len)?;
                check_unit(&unit)?;
                let amount = i64::from_be_bytes(r.array()?);
                if amount == 0 {
                    return Err(DecodeError::Invalid("posting amounts are non-zero"));
                }
                postings.push(Posting {
                    account,
                    unit,
                    amount,
                });
            }
            check_postings_order(&postings)?;
            Body::Transfer {
                postings,
                from_allowance: tag == 2,
            }
        }
        1 => Body::Freeze {
            account: r.did()?,
            frozen: r.flag()?,
        },
        3 => {
            let device = r.did()?;
            let (unit, amount) = r.unit_amount()?;
            Body::Grant {
                device,
                unit,
                amount,
            }
        }
        4 => {
            let (unit, amount) = r.unit_amount()?;
            Body::Release { unit, amount }
        }
        5 => Body::Seal {
            member: r.did()?,
            of: match r.u8()? {
                0 => Sealed::Member,
                1 => Sealed::Key(r.did()?),
                2 => Sealed::Delegation(r.array()?),
                _ => return Err(DecodeError::Invalid("unknown seal kind")),
            },
        },
        _ => return Err(DecodeError::Invalid("unknown entry body")),
    };
    let len = r.len(MAX_MEMO, "memo too long")?;
    let memo = r.text(len)?;
    let decision = if r.flag()? { Some(r.array()?) } else { None };
    let delegation = if r.flag()? {
        let len = r.len(crate::delegation::MAX_STATEMENT_LEN, "delegation too long")?;
        let statement = r.text(len)?;
        let signature = r.array()?;
        Some(SignedDelegation {
            statement,
            signature,
        })
    } else {
        None
    };
    Ok(Entry {
        coop,
        parents,
        author,
        signer,
        timestamp,
        coop_heads,
        body,
        memo,
        decision,
        delegation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn did(seed: u8) -> Did {
        Did::from_bytes(&[seed; 32]).expect("32 bytes")
    }

    fn account() -> impl Strategy<Value = Account> {
        prop_oneof![
            any::<u8>().prop_map(|s| Account::Member(did(s))),
            Just(Account::Treasury)
        ]
    }

    prop_compose! {
        fn entry()(
            parents in prop::collection::btree_set(any::<[u8; 32]>(), 0..4),
            heads in prop::collection::btree_set(any::<[u8; 32]>(), 1..4),
            legs in prop::collection::btree_map((account(), "[a-z]{1,8}"), any::<i64>().prop_filter("non-zero", |a| *a != 0), 1..6),
            memo in ".{0,40}",
            decision in prop::option::of(any::<[u8; 32]>()),
            timestamp in any::<u64>(),
            signature in prop::collection::vec(any::<u8>(), 64),
            kind in 0u8..8,
            who in any::<u8>(),
            frozen in any::<bool>(),
            allowance in (1i64..=i64::MAX),
        ) -> SignedEntry {
            SignedEntry {
                entry: Entry {
                    coop: DocId([3; 32]),
                    parents: parents.into_iter().map(EntryId).collect(),
                    author: did(1),
                    signer: did(2),
                    timestamp,
                    coop_heads: heads.into_iter().collect(),
                    body: match kind {
                        0 | 1 => Body::Transfer {
                            postings: legs
                                .into_iter()
                                .map(|((account, unit), amount)| Posting { account, unit, amount })
                                .collect(),
                            from_allowance: kind == 1,
                        },
                        2 => Body::Freeze { account: did(who), frozen },
                        3 => Body::Grant { device: did(who), unit: "hours".into(), amount: allowance },
                        4 => Body::Release { unit: "hours".into(), amount: allowance },
                        5 => Body::Seal { member: did(who), of: Sealed::Member },
                        6 => Body::Seal { member: did(who), of: Sealed::Key(did(who.wrapping_add(1))) },
                        _ => Body::Seal { member: did(who), of: Sealed::Delegation([who; 32]) },
                    },
                    memo,
                    decision,
                    delegation: None,
                },
                signature: signature.try_into().expect("64 bytes"),
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip_and_id(e in entry()) {
            let bytes = e.encode().expect("encodes");
            let (back, id) = SignedEntry::decode(&bytes).expect("decodes");
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(id, e.id().expect("id"));
            prop_assert_eq!(back.encode().expect("encodes"), bytes.clone());
            prop_assert_eq!(
                SignedEntry::signing_message_of(&bytes),
                Some(e.entry.signing_message().expect("encodes"))
            );
        }

        #[test]
        fn any_bytes_that_decode_reencode_identically(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok((e, _)) = SignedEntry::decode(&bytes) {
                prop_assert_eq!(e.encode().expect("encodes"), bytes);
            }
        }
    }

    #[test]
    fn non_canonical_inputs_are_refused() {
        let e = SignedEntry {
            entry: Entry {
                coop: DocId([3; 32]),
                parents: vec![EntryId([1; 32]), EntryId([2; 32])],
                author: did(1),
                signer: did(1),
                timestamp: 5,
                coop_heads: vec![[9; 32]],
                body: Body::Transfer {
                    postings: vec![
                        Posting {
                            account: Account::Member(did(1)),
                            unit: "hours".into(),
                            amount: -2,
                        },
                        Posting {
                            account: Account::Member(did(4)),
                            unit: "hours".into(),
                            amount: 2,
                        },
                    ],
                    from_allowance: false,
                },
                memo: "weeding".into(),
                decision: None,
                delegation: None,
            },
            signature: [0; 64],
        };
        let bytes = e.encode().expect("encodes");
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            SignedEntry::decode(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            SignedEntry::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            SignedEntry::decode(&vec![0; MAX_ENTRY_BYTES + 1]),
            Err(DecodeError::TooLarge(MAX_ENTRY_BYTES + 1))
        );
        // Parents out of order.
        let mut swapped = e.clone();
        swapped.entry.parents.reverse();
        assert!(swapped.encode().is_err());
        let mut raw = bytes.clone();
        let at = 4 + 1 + 32 + 1;
        raw[at..at + 32].copy_from_slice(&[2; 32]);
        raw[at + 32..at + 64].copy_from_slice(&[1; 32]);
        assert!(matches!(
            SignedEntry::decode(&raw),
            Err(DecodeError::Invalid(_))
        ));
        // A zero amount, a duplicate posting, an empty transfer.
        let mut zero = e.clone();
        let Body::Transfer { postings, .. } = &mut zero.entry.body else {
            unreachable!("a transfer")
        };
        postings[0].amount = 0;
        assert!(zero.encode().is_err());
        let mut dup = e.clone();
        let Body::Transfer { postings, .. } = &mut dup.entry.body else {
            unreachable!("a transfer")
        };
        postings[1].account = postings[0].account;
        assert!(dup.encode().is_err());
        let mut empty = e.clone();
        empty.entry.body = Body::Transfer {
            postings: vec![],
            from_allowance: false,
        };
        assert!(empty.encode().is_err());
        // Allowance amounts are positive.
        let mut grant = e;
        grant.entry.body = Body::Grant {
            device: did(4),
            unit: "hours".into(),
            amount: 0,
        };
        assert!(grant.encode().is_err());
        grant.entry.body = Body::Release {
            unit: "hours".into(),
            amount: 7,
        };
        let mut raw = grant.encode().expect("encodes");
        let at = raw.len() - 64 - 2 - 1 - 1 - "weeding".len() - 8;
        raw[at..at + 8].copy_from_slice(&(-7i64).to_be_bytes());
        assert!(matches!(
            SignedEntry::decode(&raw),
            Err(DecodeError::Invalid(_))
        ));
    }
}
