//! Seals: revocation, removal and freezes that no backdating escapes.
//!
//! An entry's co-op heads and parents are chosen by whoever signs it, so a
//! stolen key can cite heads from before its revocation, and an entry with
//! no parents sorts first in the fold. A **seal** closes that: a seal entry
//! (`Body::Seal`, written with a device's revocation or a member's removal)
//! and an admin's freeze each cover a subject, and an entry the subject
//! covers counts only if it is in the seal's past: the party who sealed had
//! seen it. That depends only on which entries a replica holds, never on
//! the order they came in, so replicas still agree.
//!
//! - A seal of a key covers the entries it signed for its member (for a node
//!   writing under a delegation, the DID key that signed the delegation),
//!   and grants of allowance to it. When it counts, the key's unspent
//!   allowances go back to the member.
//! - A seal of a member covers every entry the member authored.
//! - An admin's freeze (no decision) covers the entries debiting the account
//!   that sort before it; those after it are the frozen-account rule's. It
//!   seals only while no seal of its author's key covers it.
//!
//! Seal entries are covered by no seal: two seals always both stand. Only
//! DID keys write them (`rules::check_seal`), so a stolen device seals
//! nothing.
//!
//! Where a seal is placed, its past is complete (its parents are all
//! folded), so the covered entries it saw are fixed then and stored in its
//! `s` row; the fold is redone from the first covered entry it had not seen.
//! An entry folded later consults the seals of its author and of the
//! accounts it debits.

use std::collections::HashSet;

use icn_schemas::Did;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Sealed};

use super::keys::{account_key, corrupt, place_of};
use super::{Fold, Outside};
use crate::storage::StorageError;
use crate::storage::layout::{SealRow, ledger as tag};

/// The `S` index of seals by the member they cover.
const ON_MEMBER: u8 = 0;
/// The `S` index of freezes by the account they cover.
const ON_ACCOUNT: u8 = 1;

/// An entry at its place in the fold order.
type Placed = ((u64, EntryId), Entry);

/// What a seal covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    /// The entries `key` signed for `member`, and grants to `key`.
    Key {
        /// The member.
        member: Did,
        /// Its key.
        key: Did,
    },
    /// Every entry `member` authored.
    Member(Did),
    /// The entries a node wrote for `member` under one delegation.
    Delegation {
        /// The member.
        member: Did,
        /// The delegation's hash.
        hash: [u8; 32],
    },
    /// Entries debiting an account, placed before the freeze.
    Debits(Did),
}

/// The key an entry's authority comes from: its signer, or for a node
/// writing under a delegation, the key that signed the delegation (the
/// member's DID key, or one of its devices).
fn authority_key(entry: &Entry) -> Did {
    match &entry.delegation {
        Some(d) => d
            .statement
            .parse::<icn_schemas::Delegation>()
            .map_or(entry.author, |d| d.signing_key()),
        None => entry.signer,
    }
}

impl Subject {
    /// The subject of a seal entry, or of an admin's freeze.
    pub(super) fn of(entry: &Entry) -> Option<Subject> {
        match &entry.body {
            Body::Seal { member, of } => Some(match of {
                Sealed::Key(key) => Subject::Key {
                    member: *member,
                    key: *key,
                },
                Sealed::Member => Subject::Member(*member),
                Sealed::Delegation(hash) => Subject::Delegation {
                    member: *member,
                    hash: *hash,
                },
            }),
            Body::Freeze {
                account,
                frozen: true,
            } if entry.decision.is_none() => Some(Subject::Debits(*account)),
            _ => None,
        }
    }

    /// Whether the subject covers `entry`. A seal entry is covered by none.
    pub(super) fn covers(&self, entry: &Entry) -> bool {
        if matches!(entry.body, Body::Seal { .. }) {
            return false;
        }
        match self {
            Subject::Key { member, key } => {
                entry.author == *member
                    && (authority_key(entry) == *key
                        || matches!(&entry.body, Body::Grant { device, .. } if device == key))
            }
            Subject::Member(member) => entry.author == *member,
            Subject::Delegation { member, hash } => {
                entry.author == *member
                    && entry.delegation.as_ref().is_some_and(|d| d.hash() == *hash)
            }
            Subject::Debits(account) => entry
                .postings()
                .iter()
                .any(|p| p.account == Account::Member(*account) && p.amount < 0),
        }
    }

    fn index(&self) -> (u8, Did) {
        match self {
            Subject::Key { member, .. }
            | Subject::Member(member)
            | Subject::Delegation { member, .. } => (ON_MEMBER, *member),
            Subject::Debits(account) => (ON_ACCOUNT, *account),
        }
    }

    fn row(&self, depth: u64, seen: Vec<[u8; 32]>, by: &Entry) -> SealRow {
        let heads = by.coop_heads.clone();
        let (kind, who, key) = match self {
            Subject::Key { member, key } => (0, member, Some(*key.as_bytes())),
            Subject::Member(member) => (1, member, None),
            Subject::Debits(account) => (2, account, None),
            Subject::Delegation { member, hash } => (3, member, Some(*hash)),
        };
        SealRow {
            kind,
            who: *who.as_bytes(),
            key,
            depth,
            seen,
            by: (*by.author.as_bytes(), *authority_key(by).as_bytes()),
            heads,
        }
    }

    /// Whether an entry this subject covers is exempt from its seal for
    /// citing co-op heads that descend from the seal's: a member's entry
    /// written knowing of its removal or suspension (and its reinstatement)
    /// is judged by its cited heads like any other. Only a member's seal
    /// ends so: a revoked key, a logged-out delegation and a freeze's
    /// backward reach do not come back.
    fn exempts(&self, cited: &[[u8; 32]], seal_heads: &[[u8; 32]], outside: &dyn Outside) -> bool {
        matches!(self, Subject::Member(_)) && outside.descends(cited, seal_heads)
    }

    /// Whether the subject covers an entry by `author` whose authority is
    /// `key`, that is no seal and no grant.
    fn covers_author(&self, author: &[u8; 32], key: &[u8; 32]) -> bool {
        match self {
            Subject::Key {
                member,
                key: sealed,
            } => member.as_bytes() == author && sealed.as_bytes() == key,
            Subject::Member(member) => member.as_bytes() == author,
            // A freeze is signed by a key; whether under this delegation is
            // not in its row, and a logout is no revocation of a key.
            Subject::Delegation { .. } | Subject::Debits(_) => false,
        }
    }

    fn of_row(row: &SealRow) -> Result<Subject, StorageError> {
        let did = |bytes: &[u8; 32]| {
            Did::from_bytes(bytes).map_err(|_| corrupt("a seal names a key that is not a DID"))
        };
        let who = did(&row.who)?;
        Ok(match (row.kind, &row.key) {
            (0, Some(key)) => Subject::Key {
                member: who,
                key: did(key)?,
            },
            (1, None) => Subject::Member(who),
            (2, None) => Subject::Debits(who),
            (3, Some(hash)) => Subject::Delegation {
                member: who,
                hash: *hash,
            },
            _ => return Err(corrupt("a seal row of an unknown kind")),
        })
    }
}

impl Fold {
    /// Writes the rows of seal `id` at `depth`, with the covered entries in
    /// its past; returns the first place from which the fold must be
    /// redone: the first covered entry it had not seen, or the first debit
    /// of an account a freeze it covers no longer seals (the end, when
    /// there is none).
    pub(super) fn place_seal(
        &mut self,
        id: EntryId,
        depth: u64,
        seal: &Entry,
        subject: Subject,
        outside: &dyn Outside,
    ) -> Result<(u64, EntryId), StorageError> {
        let parents = &seal.parents;
        let candidates = self.covered(&subject, &id)?;
        let seen = self.seen_among(parents, &candidates)?;
        let mut start = (u64::MAX, id);
        for (place, entry) in &candidates {
            let before_it = *place < (depth, id);
            if matches!(subject, Subject::Debits(_)) && !before_it {
                break;
            }
            if seen.contains(&place.1)
                || subject.exempts(&entry.coop_heads, &seal.coop_heads, outside)
            {
                continue;
            }
            start = start.min(*place);
            // A freeze by the sealed key seals nothing more.
            if let Some(Subject::Debits(account)) = Subject::of(entry) {
                let prefix = self
                    .rows
                    .key(tag::BY_ACCOUNT, &[&account_key(&Account::Member(account))]);
                if let Some(first) = self.rows.scan(prefix.clone(), prefix).next() {
                    start = start.min(place_of(&first?.0)?);
                }
            }
        }
        let mut seen: Vec<[u8; 32]> = seen.into_iter().map(|e| e.0).collect();
        seen.sort_unstable();
        let row = postcard::to_stdvec(&subject.row(depth, seen, seal)).map_err(corrupt)?;
        let (on, who) = subject.index();
        let rows = &mut self.rows;
        rows.put(rows.key(tag::SEAL, &[&id.0]), row);
        rows.put(
            rows.key(tag::SEALS_ON, &[&[on], who.as_bytes(), &id.0]),
            Vec::new(),
        );
        self.any_seals.set(Some(true));
        Ok(start)
    }

    /// The entries `subject` covers, in fold order, with their places; not
    /// `seal` itself, which is being placed.
    fn covered(&self, subject: &Subject, seal: &EntryId) -> Result<Vec<Placed>, StorageError> {
        let (member, by_author) = match subject {
            Subject::Key { member, .. }
            | Subject::Member(member)
            | Subject::Delegation { member, .. } => (member, true),
            Subject::Debits(account) => (account, false),
        };
        let by_account = self
            .rows
            .key(tag::BY_ACCOUNT, &[&account_key(&Account::Member(*member))]);
        let mut prefixes = vec![by_account];
        if by_author {
            // A member's entries are those touching its account that it
            // wrote (`covers` checks the author) and those with a `u` row.
            prefixes.push(self.rows.key(tag::BY_AUTHOR, &[member.as_bytes()]));
        }
        let mut places = std::collections::BTreeSet::new();
        for prefix in prefixes {
            for row in self.rows.scan(prefix.clone(), prefix) {
                places.insert(place_of(&row?.0)?);
            }
        }
        let mut out = Vec::new();
        for (d, e) in places {
            if e == *seal {
                continue;
            }
            let (_, _, signed) = self.placed(d, &e)?;
            if subject.covers(&signed.entry) {
                out.push(((d, e), signed.entry));
            }
        }
        Ok(out)
    }

    /// Which of `candidates` are ancestors of an entry with these
    /// `parents`. The walk stops below the shallowest candidate.
    fn seen_among(
        &self,
        parents: &[EntryId],
        candidates: &[Placed],
    ) -> Result<HashSet<EntryId>, StorageError> {
        let mut found = HashSet::new();
        let Some(shallowest) = candidates.iter().map(|((d, _), _)| *d).min() else {
            return Ok(found);
        };
        let wanted: HashSet<EntryId> = candidates.iter().map(|((_, e), _)| *e).collect();
        let mut visited = HashSet::new();
        let mut stack = parents.to_vec();
        while let Some(id) = stack.pop() {
            if !visited.insert(id) {
                continue;
            }
            let Some(depth) = self.depth(&id)? else {
                continue;
            };
            if depth < shallowest {
                continue;
            }
            if wanted.contains(&id) {
                found.insert(id);
            }
            if let Some(entry) = self.entry(&id)? {
                stack.extend(entry.entry.parents.iter().copied());
            }
        }
        Ok(found)
    }

    /// Whether the co-op may hold any seal: `false` only if none is stored
    /// or placed.
    fn any_seals(&self) -> Result<bool, StorageError> {
        if let Some(any) = self.any_seals.get() {
            return Ok(any);
        }
        let prefix = self.rows.key(tag::SEALS_ON, &[]);
        let any = self
            .rows
            .scan(prefix.clone(), prefix)
            .next()
            .transpose()?
            .is_some();
        self.any_seals.set(Some(any));
        Ok(any)
    }

    /// The seals indexed under `on` ‖ `who`, with their rows.
    fn seals_on(&self, on: u8, who: &Did) -> Result<Vec<(EntryId, SealRow)>, StorageError> {
        if !self.any_seals()? {
            return Ok(Vec::new());
        }
        let prefix = self.rows.key(tag::SEALS_ON, &[&[on], who.as_bytes()]);
        let mut out = Vec::new();
        for row in self.rows.scan(prefix.clone(), prefix.clone()) {
            let (k, _) = row?;
            let id = <[u8; 32]>::try_from(&k[prefix.len()..])
                .map(EntryId)
                .map_err(|_| corrupt("bad seal index key"))?;
            let value = self
                .rows
                .get(&self.rows.key(tag::SEAL, &[&id.0]))?
                .ok_or_else(|| corrupt("an indexed seal has no row"))?;
            out.push((id, postcard::from_bytes(&value).map_err(corrupt)?));
        }
        Ok(out)
    }

    /// The seal of a key, member or delegation that covers `entry` (`id`)
    /// without having seen it, if any.
    fn sealed_by_members(
        &self,
        id: &EntryId,
        entry: &Entry,
        outside: &dyn Outside,
    ) -> Result<Option<EntryId>, StorageError> {
        for (seal, row) in self.seals_on(ON_MEMBER, &entry.author)? {
            let subject = Subject::of_row(&row)?;
            if subject.covers(entry)
                && row.seen.binary_search(&id.0).is_err()
                && !subject.exempts(&entry.coop_heads, &row.heads, outside)
            {
                return Ok(Some(seal));
            }
        }
        Ok(None)
    }

    /// The seal, or freeze, that entry `id` at `depth` does not count
    /// under, if any.
    pub(super) fn sealed_by(
        &self,
        id: &EntryId,
        depth: u64,
        entry: &Entry,
        outside: &dyn Outside,
    ) -> Result<Option<EntryId>, StorageError> {
        if let Some(seal) = self.sealed_by_members(id, entry, outside)? {
            return Ok(Some(seal));
        }
        let mut debited: Vec<Did> = entry
            .postings()
            .iter()
            .filter(|p| p.amount < 0)
            .filter_map(|p| match p.account {
                Account::Member(did) => Some(did),
                Account::Treasury => None,
            })
            .collect();
        debited.dedup();
        for account in debited {
            for (freeze, row) in self.seals_on(ON_ACCOUNT, &account)? {
                let before_it = (depth, *id) < (row.depth, freeze);
                if before_it
                    && row.seen.binary_search(&id.0).is_err()
                    && self.stands(&freeze, &row, outside)?
                {
                    return Ok(Some(freeze));
                }
            }
        }
        Ok(None)
    }

    /// Whether a freeze seals: no seal of its author's key, or of its
    /// author, covers it unseen. (Read from its `s` row: the freeze may not
    /// be placed yet while the fold is redone up to it.)
    fn stands(
        &self,
        freeze: &EntryId,
        row: &SealRow,
        outside: &dyn Outside,
    ) -> Result<bool, StorageError> {
        let (author, key) = &row.by;
        let author_did =
            Did::from_bytes(author).map_err(|_| corrupt("a seal's author is not a DID"))?;
        for (_, seal) in self.seals_on(ON_MEMBER, &author_did)? {
            let subject = Subject::of_row(&seal)?;
            if subject.covers_author(author, key)
                && seal.seen.binary_search(&freeze.0).is_err()
                && !subject.exempts(&row.heads, &seal.heads, outside)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// At a counted seal of `key`, the key's unspent allowances go back to
    /// `member`; what went back is kept in an `R` row for [`Self::restore`].
    pub(super) fn release_sealed(
        &mut self,
        seal: &EntryId,
        member: &Did,
        key: &Did,
    ) -> Result<(), StorageError> {
        let prefix = self
            .rows
            .key(tag::ALLOWANCE, &[member.as_bytes(), key.as_bytes()]);
        let mut released = Vec::new();
        for row in self.rows.scan(prefix.clone(), prefix.clone()) {
            let (k, v) = row?;
            let unit = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|_| corrupt("an allowance key's unit is not UTF-8"))?;
            released.push((unit, super::keys::i64_of(&v)?));
        }
        if released.is_empty() {
            return Ok(());
        }
        let deltas: Vec<_> = released
            .iter()
            .map(|(unit, amount)| ((*member, *key, unit.clone()), -amount))
            .collect();
        self.move_allowances(&deltas, true)?;
        let row = postcard::to_stdvec(&released).map_err(corrupt)?;
        let key = self.rows.key(tag::RELEASED, &[&seal.0]);
        self.rows.put(key, row);
        Ok(())
    }

    /// Undoes [`Self::release_sealed`] when the seal is unwound.
    pub(super) fn restore(
        &mut self,
        seal: &EntryId,
        member: &Did,
        key: &Did,
    ) -> Result<(), StorageError> {
        let row_key = self.rows.key(tag::RELEASED, &[&seal.0]);
        let Some(row) = self.rows.get(&row_key)? else {
            return Ok(());
        };
        let released: Vec<(String, i64)> = postcard::from_bytes(&row).map_err(corrupt)?;
        let deltas: Vec<_> = released
            .into_iter()
            .map(|(unit, amount)| ((*member, *key, unit), -amount))
            .collect();
        self.move_allowances(&deltas, false)?;
        self.rows.delete(row_key)
    }
}
