//! The on-disk layout: every sled tree and key format in one place.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `schema_version` | u32, big-endian |
//! | `doc_meta` | doc id (32) | [`DocMeta`], postcard |
//! | `doc_change_rows` | doc id (32) ‖ seq of its first change (u64 BE) | up to about 6 KiB of changes stored together, each with its hash: postcard `Vec<(hash, `[`crate::SignedChange`]`)>` |
//! | `doc_snapshots` | doc id (32) ‖ chunk (u32 BE) | ≤ 64 KiB of `Automerge::save()` |
//! | `ledger` | co-op id (32) ‖ tag (1) ‖ … | a co-op's entries and its fold, below |
//! | `blobs` | blake3 hash (32) | content-addressed bytes: WASM tally modules |
//! | `peer_sync` | peer key (32) ‖ doc id (32) | Automerge `sync::State::encode()`: what this node knows the peer holds |
//! | `gateway` | `d` ‖ delegation hash (32) | a [`icn_schemas::SignedDelegation`] a member signed at `POST /v1/auth/verify`, postcard |
//! | `gateway` | `l` ‖ delegation hash (32) | (empty): the delegation was logged out (`POST /v1/auth/logout`); its tokens are refused |
//! | `gateway` | `v` ‖ blake3(invite code) (32) | an invite to a co-op, as the gateway encodes it (the code itself is never stored) |
//! | `gateway` | `a` ‖ co-op id (32) ‖ applicant DID (32) | an application to join the co-op, as the gateway encodes it |
//! | `gateway` | `i` ‖ blake3(DID ‖ Idempotency-Key) (32) | stored-at (u64 BE, unix seconds) ‖ the request's fingerprint and its answer, as the gateway encodes them |
//!
//! The gateway reads and writes its records only through typed methods of
//! [`crate::Store`] (`storage/gateway.rs`: `put_delegation_once`,
//! `delegation`, `append_events`, `events_after`, `last_event_seq`,
//! `event_heads`); no crate outside the engine builds a key of any tree.
//!
//! `seq` numbers a document's changes in the order this node stored them,
//! which is always a causal order: a change is stored only once all its
//! dependencies are. The changes stored together (a sync message's batch)
//! share rows, so a catch-up of 10,000 changes writes about 350 rows,
//! not 20,000; a change's signature is found by reading the rows from the
//! newest back (what a peer lacks is almost always recent), so no row per
//! change indexes them by hash.
//!
//! The `ledger` tree holds each co-op's entries and everything the fold
//! knows about them, so that opening a node reads none of it. Each group of
//! entries is written with one atomic sled batch: the entries and the fold
//! rows they change. Rows by tag (`‖` joins; depths are u64 BE; a unit is its
//! bytes, length-prefixed when more follows; an account is 33 bytes, `0 ‖
//! DID` or `1 ‖ 0…0` for the treasury):
//!
//! | tag | key after the tag | value |
//! |---|---|---|
//! | `d` | entry id | its depth |
//! | `o` | depth ‖ entry id | length (u16 BE) ‖ [`OrderRow`] (status, the limits it is judged by) ‖ the entry's canonical encoding |
//! | `c` | depth ‖ entry id | (empty): the conflicted entries, in order |
//! | `A` | account ‖ depth ‖ entry id | (empty): entries touching an account, in order |
//! | `D` | decision hash ‖ depth ‖ entry id | (empty): entries citing a decision |
//! | `h` | entry id | (empty): the heads |
//! | `b` | account ‖ unit | balance, i64 BE (rows at zero are deleted) |
//! | `a` | member ‖ device ‖ unit | unspent allowance, i64 BE |
//! | `r` | member ‖ unit | reserved (sum of allowances), i64 BE |
//! | `f` | member | (empty): frozen accounts |
//! | `g` | grant id | [`GrantRow`] |
//! | `G` | member ‖ unit ‖ grant id | (empty) |
//! | `x` | member ‖ unit ‖ depth ‖ entry id | (empty): general debits by keys other than the member's DID key |
//! | `n` | (none) | number of entries, u64 BE |
//! | `X` | domain id ‖ proposal id | the entry that executed that decision |
//! | `u` | member ‖ depth ‖ entry id | (empty): entries by author that touch no account of their author's, in order; the others are found through the author's `A` rows (stores written before 2026-12-04 hold a `u` row for every entry, and readers take both) |
//! | `s` | seal id | [`SealRow`]: a seal's subject, place, and the covered entries in its past |
//! | `S` | 0 ‖ member ‖ seal id, or 1 ‖ account ‖ freeze id | (empty): seals by whom or what they cover |
//! | `R` | seal id | the allowances a counted seal of a device gave back, postcard `Vec<(unit, amount)>` |
//! | `E` | seq (u64 BE) | one WebSocket event of the co-op's log, JSON (the gateway's; in this tree so that it joins the ledger groups' batches) |
//!
//! and, under a document's id (a co-op's or a domain's), `doc id ‖ H` →
//! the document heads (32 bytes each) whose changes the event log has
//! covered.
//!
//! Version 4 kept the event logs in the `gateway` tree (`e ‖ co-op id ‖
//! seq` and `h ‖ doc id`); opening a version 1–4 store moves them here.
//! Backups still name them by those keys ([`gateway::event_row_v4`]).
//!
//! Version 3 kept one row per change in `doc_changes` (doc id ‖ seq →
//! postcard [`crate::SignedChange`]) and indexed them by hash in
//! `doc_change_index` (doc id ‖ hash → seq); opening a version 1–3 store
//! copies each change into a `doc_change_rows` row of its own, then drops
//! those trees.
//!
//! Version 2 had no `u`, `s`, `S` or `R` rows; opening a version 2 store
//! writes the `u` rows of its entries once (it held no seals).
//!
//! Version 1 kept entries in `ledger_entries` (co-op ‖ seq), `ledger_index`
//! and `ledger_meta`, and folded them at every start; opening a version 1
//! store folds them once into `ledger` and drops those trees.

use icn_schemas::DocId;

/// Version of this layout. Bump it, and write a migration, when any row above
/// changes meaning.
pub const SCHEMA_VERSION: u32 = 5;

pub(crate) const META: &str = "meta";
pub(crate) const DOC_META: &str = "doc_meta";
pub(crate) const DOC_CHANGES: &str = "doc_change_rows";
pub(crate) const DOC_SNAPSHOTS: &str = "doc_snapshots";
pub(crate) const LEDGER: &str = "ledger";
pub(crate) const BLOBS: &str = "blobs";
pub(crate) const PEER_SYNC: &str = "peer_sync";
pub(crate) const GATEWAY: &str = "gateway";
/// Version 1 trees, read once by the migration.
pub(crate) const V1_LEDGER_TREES: [&str; 3] = ["ledger_meta", "ledger_entries", "ledger_index"];
pub(crate) const V1_LEDGER_ENTRIES: &str = "ledger_entries";

/// Version 1–3 trees of document changes, read once by the migration.
pub(crate) const V3_DOC_CHANGES: &str = "doc_changes";
pub(crate) const V3_DOC_CHANGE_INDEX: &str = "doc_change_index";

/// The changes stored together are cut into rows of at most about this many
/// bytes. sled 0.34 splits a leaf past 16 entries and writes a page over
/// 128 KiB to a blob file of its own (which every sync then fsyncs): with
/// 16 KiB rows a rewritten leaf went there (`storage` test
/// `a_large_batch_is_stored_in_a_few_rows`); 17 rows of 6 KiB stay below.
pub(crate) const CHANGE_ROW_BYTES: usize = 6 * 1024;

pub(crate) const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

/// sled 0.34 writes values larger than a quarter segment (128 KiB) to
/// separate blob files; snapshots are cut in chunks well below that, so the
/// common write path touches only sled's main file.
pub(crate) const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// Per-document bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DocMeta {
    /// Seq the next stored change gets.
    pub(crate) next_seq: u64,
    /// Changes with seq below this are in the snapshot.
    pub(crate) snapshot_seq: u64,
    /// Number of snapshot chunks.
    pub(crate) snapshot_chunks: u32,
}

pub(crate) fn id_seq_key(doc: &DocId, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&doc.0);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn snapshot_key(doc: &DocId, chunk: u32) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(&doc.0);
    key[32..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// Row tags of the `gateway` tree, and its keys.
pub(crate) mod gateway {
    use icn_schemas::DocId;

    pub(crate) const DELEGATION: u8 = b'd';
    /// Version 1–4 event log rows ([`event_row_now`]).
    pub(crate) const V4_EVENT: u8 = b'e';
    pub(crate) const V4_HEADS: u8 = b'h';
    pub(crate) const LOGGED_OUT: u8 = b'l';
    pub(crate) const IDEMPOTENT: u8 = b'i';
    pub(crate) const INVITE: u8 = b'v';
    pub(crate) const APPLICATION: u8 = b'a';

    /// `v ‖ code hash`.
    pub(crate) fn invite_key(hash: &[u8; 32]) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[0] = INVITE;
        key[1..].copy_from_slice(hash);
        key
    }

    /// `a ‖ co-op id`: the prefix of a co-op's applications.
    pub(crate) fn applications_prefix(coop: &DocId) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[0] = APPLICATION;
        key[1..].copy_from_slice(&coop.0);
        key
    }

    /// `a ‖ co-op id ‖ applicant`.
    pub(crate) fn application_key(coop: &DocId, applicant: &[u8; 32]) -> [u8; 65] {
        let mut key = [0u8; 65];
        key[..33].copy_from_slice(&applications_prefix(coop));
        key[33..].copy_from_slice(applicant);
        key
    }

    /// `i ‖ slot`.
    pub(crate) fn idempotent_key(slot: &[u8; 32]) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[0] = IDEMPOTENT;
        key[1..].copy_from_slice(slot);
        key
    }

    /// `l ‖ delegation hash`.
    pub(crate) fn logged_out_key(hash: &[u8; 32]) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[0] = LOGGED_OUT;
        key[1..].copy_from_slice(hash);
        key
    }

    /// `d ‖ delegation hash`.
    pub(crate) fn delegation_key(hash: &[u8; 32]) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[0] = DELEGATION;
        key[1..].copy_from_slice(hash);
        key
    }

    /// `co-op id ‖ E`: the prefix of a co-op's event log, in the `ledger`
    /// tree (so a log's rows join the ledger groups' sled batches).
    pub(crate) fn events_prefix(coop: &DocId) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[..32].copy_from_slice(&coop.0);
        key[32] = super::ledger::EVENT;
        key
    }

    /// `co-op id ‖ E ‖ seq`, in the `ledger` tree.
    pub(crate) fn event_key(coop: &DocId, seq: u64) -> [u8; 41] {
        let mut key = [0u8; 41];
        key[..33].copy_from_slice(&events_prefix(coop));
        key[33..].copy_from_slice(&seq.to_be_bytes());
        key
    }

    /// The seq an event key ends in.
    pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
        key.get(33..41)?.try_into().ok().map(u64::from_be_bytes)
    }

    /// `doc id ‖ H`, in the `ledger` tree.
    pub(crate) fn heads_key(doc: &DocId) -> [u8; 33] {
        let mut key = [0u8; 33];
        key[..32].copy_from_slice(&doc.0);
        key[32] = super::ledger::COVERED;
        key
    }

    /// Where a version 1–4 event log row (`gateway` tree: `e ‖ co-op id ‖
    /// seq` or `h ‖ doc id`) lives now, in the `ledger` tree; `None` for
    /// any other gateway row. Backups name event rows by their version 4
    /// keys, so this maps them too.
    pub(crate) fn event_row_now(v4_key: &[u8]) -> Option<Vec<u8>> {
        let (&tag, rest) = v4_key.split_first()?;
        let (id, seq) = (rest.get(..32)?, &rest[32..]);
        let now_tag = match (tag, seq.len()) {
            (V4_EVENT, 8) => super::ledger::EVENT,
            (V4_HEADS, 0) => super::ledger::COVERED,
            _ => return None,
        };
        Some([id, &[now_tag], seq].concat())
    }

    /// The version 4 key of an event log row of the `ledger` tree (the
    /// inverse of [`event_row_now`]), as a backup names it.
    pub(crate) fn event_row_v4(key: &[u8]) -> Option<Vec<u8>> {
        let (id, rest) = (key.get(..32)?, &key[32..]);
        let (&tag, seq) = rest.split_first()?;
        let v4_tag = match (tag, seq.len()) {
            (super::ledger::EVENT, 8) => V4_EVENT,
            (super::ledger::COVERED, 0) => V4_HEADS,
            _ => return None,
        };
        Some([&[v4_tag], id, seq].concat())
    }
}

/// Row tags of the `ledger` tree.
pub(crate) mod ledger {
    pub(crate) const DEPTH: u8 = b'd';
    pub(crate) const ORDER: u8 = b'o';
    pub(crate) const CONFLICTED: u8 = b'c';
    pub(crate) const BY_ACCOUNT: u8 = b'A';
    pub(crate) const BY_DECISION: u8 = b'D';
    pub(crate) const HEAD: u8 = b'h';
    pub(crate) const BALANCE: u8 = b'b';
    pub(crate) const ALLOWANCE: u8 = b'a';
    pub(crate) const RESERVED: u8 = b'r';
    pub(crate) const FROZEN: u8 = b'f';
    pub(crate) const GRANT: u8 = b'g';
    pub(crate) const GRANTS_BY: u8 = b'G';
    pub(crate) const OTHERS_DEBIT: u8 = b'x';
    pub(crate) const COUNT: u8 = b'n';
    pub(crate) const EXECUTED: u8 = b'X';
    pub(crate) const BY_AUTHOR: u8 = b'u';
    pub(crate) const SEAL: u8 = b's';
    pub(crate) const SEALS_ON: u8 = b'S';
    pub(crate) const RELEASED: u8 = b'R';
    /// The gateway's event log of a co-op ([`super::gateway::event_key`]).
    pub(crate) const EVENT: u8 = b'E';
    /// The heads of a document its co-op's event log covers
    /// ([`super::gateway::heads_key`]).
    pub(crate) const COVERED: u8 = b'H';
}

/// The `o` row of an entry: its place in the fold is its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OrderRow {
    /// Credit limits of the members it debits, read at its cited heads.
    pub(crate) limits: Vec<([u8; 32], i64)>,
    /// For an applied freeze entry: whether the account was frozen before.
    pub(crate) frozen_before: Option<bool>,
    /// Why it does not count, `None` when applied: a stable tag byte and
    /// the reason's fields (`ledger::fold::conflict`); rows written before
    /// tags hold JSON text there, which reads too. (postcard encodes a
    /// string and a byte vector alike, so both decode as bytes.)
    pub(crate) conflict: Option<Vec<u8>>,
    /// For an entry citing a decision: the co-op's treasury domain at its
    /// cited heads.
    pub(crate) treasury: Option<[u8; 32]>,
    /// For an applied entry executing a decision: the `X` row it wrote.
    pub(crate) executed: Option<Vec<u8>>,
    /// Whether its signer held the author's DID key powers at its cited
    /// heads, when that is not what the entry alone says (the DID key
    /// signing directly): after a rotation. Rows written before rotations
    /// existed end before this field ([`OrderRow::decode`]).
    pub(crate) owner: Option<bool>,
}

/// An [`OrderRow`] as written before rotations: the same fields but the last.
#[derive(serde::Deserialize)]
struct OrderRowBefore {
    limits: Vec<([u8; 32], i64)>,
    frozen_before: Option<bool>,
    conflict: Option<Vec<u8>>,
    treasury: Option<[u8; 32]>,
    executed: Option<Vec<u8>>,
}

impl OrderRow {
    /// Decodes a row, as written now or before rotations.
    pub(crate) fn decode(bytes: &[u8]) -> Result<OrderRow, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|_| {
            let b: OrderRowBefore = postcard::from_bytes(bytes)?;
            Ok(OrderRow {
                limits: b.limits,
                frozen_before: b.frozen_before,
                conflict: b.conflict,
                treasury: b.treasury,
                executed: b.executed,
                owner: None,
            })
        })
    }

    /// Whether `entry`, whose row this is, was signed by the key holding its
    /// author's DID key powers, writing directly.
    pub(crate) fn owner(&self, entry: &icn_schemas::ledger::Entry) -> bool {
        self.owner.unwrap_or_else(|| Self::signed_by_did_key(entry))
    }

    /// What an entry alone says of its signer's powers: whether its
    /// author's DID key signed it directly, which held them all until
    /// rotations.
    pub(crate) fn signed_by_did_key(entry: &icn_schemas::ledger::Entry) -> bool {
        entry.signer == entry.author && entry.delegation.is_none()
    }
}

/// The `s` row of a seal, or of an admin's freeze, which seals too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SealRow {
    /// 0: one key of a member; 1: every entry of a member; 2: debits of an
    /// account placed before the freeze; 3: one delegation of a member.
    pub(crate) kind: u8,
    /// The member, or the account.
    pub(crate) who: [u8; 32],
    /// The key, for kind 0; the delegation's hash, for kind 3.
    pub(crate) key: Option<[u8; 32]>,
    /// The seal's depth (its place is depth ‖ id).
    pub(crate) depth: u64,
    /// The entries it covers that are in its past, sorted.
    pub(crate) seen: Vec<[u8; 32]>,
    /// Its author, and the key its authority comes from (the signer, or
    /// the DID key behind a delegation): what a seal of its own author
    /// would cover.
    pub(crate) by: ([u8; 32], [u8; 32]),
    /// The co-op heads the seal cites.
    pub(crate) heads: Vec<[u8; 32]>,
}

/// The `g` row of a grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GrantRow {
    pub(crate) member: [u8; 32],
    pub(crate) unit: String,
    /// General debits by other keys of the member and unit in its past.
    pub(crate) ancestors: Vec<[u8; 32]>,
}
