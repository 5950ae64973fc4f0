//! Helpers for tests in this and other crates: temporary nodes, fixed keys,
//! delegations, and forged changes.

use automerge::transaction::{CommitOptions, Transaction};
use automerge::{ActorId, ReadDoc};
use icn_schemas::{Delegation, Did, DocId, SchemaError, Scope, SignedDelegation, coop, domain};

use crate::change::{SignedChange, signing_message};
use crate::{Engine, Keypair, Store};

/// A co-op on `node` named `slug`, created by key 1, with members 2..=5
/// whose credit limits are high enough for any bench.
pub fn bench_coop(node: &TestNode, slug: &str) -> DocId {
    let admin = crate::Signer::Device(keypair(1));
    let mut new = new_coop(&keypair(1));
    new.id = slug.to_owned();
    let id = node.engine.create_coop(&admin, &new).expect("co-op");
    node.engine
        .write(&id, &admin, |tx| {
            for seed in 2..=5u64 {
                coop::add_member(tx, &keypair(seed).did(), coop::Role::Member, 1)?;
                coop::set_credit_limit(tx, &keypair(seed).did(), 1 << 40)?;
            }
            Ok(())
        })
        .expect("members");
    id
}

/// A node on a temporary data directory, removed on drop.
pub struct TestNode {
    /// The engine.
    pub engine: Engine,
    /// The data directory.
    pub dir: tempfile::TempDir,
}

impl TestNode {
    /// A fresh, empty node.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = Store::open(dir.path()).expect("open the store");
        let engine = Engine::open(store).expect("open the engine");
        TestNode { engine, dir }
    }

    /// Drops the engine and opens the same data directory again.
    pub fn reopen(self) -> Self {
        let TestNode { engine, dir } = self;
        drop(engine);
        let store = Store::open(dir.path()).expect("reopen the store");
        TestNode {
            engine: Engine::open(store).expect("reopen the engine"),
            dir,
        }
    }
}

impl Default for TestNode {
    fn default() -> Self {
        Self::new()
    }
}

/// A key pair fixed by `seed`, so failures replay.
pub fn keypair(seed: u64) -> Keypair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8] = 0x1c;
    Keypair::from_secret(&secret)
}

/// A co-op created by `creator` with units `hours` and `eur`.
pub fn new_coop(creator: &Keypair) -> coop::NewCoop {
    coop::NewCoop {
        id: "test-coop".into(),
        name: "Test Co-op".into(),
        description: "A co-op for tests".into(),
        creator: creator.did(),
        device: creator.did(),
        created_at: 1_700_000_000,
        default_credit_limit: 100,
        units: vec![("hours".into(), 0), ("eur".into(), 2)],
    }
}

/// A standalone domain created by `creator`, vetoes allowed.
pub fn new_domain(creator: &Keypair) -> domain::NewDomain {
    domain::NewDomain {
        id: "test-domain".into(),
        name: "Test Domain".into(),
        profile: "cooperative_default".into(),
        coop_id: None,
        creator: creator.did(),
        created_at: 1_700_000_000,
        rules: domain::Rules {
            allow_veto: true,
            ..domain::Rules::default()
        },
    }
}

/// A delegation from `member` to `node`, signed by the member.
pub fn delegation(
    member: &Keypair,
    node: &Keypair,
    scopes: &[Scope],
    not_before: u64,
    expires: u64,
) -> SignedDelegation {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let statement = Delegation {
        device: None,
        member: member.did(),
        node: node.did(),
        scopes,
        not_before,
        expires,
        nonce: "0123456789abcdef0123456789abcdef".into(),
    }
    .statement();
    SignedDelegation {
        signature: member.sign(statement.as_bytes()),
        statement,
    }
}

/// A delegation from `member` to `node`, signed by `device`, one of the
/// member's devices.
pub fn device_delegation(
    member: &Did,
    device: &Keypair,
    node: &Keypair,
    scopes: &[Scope],
) -> SignedDelegation {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let statement = Delegation {
        device: Some(device.did()),
        member: *member,
        node: node.did(),
        scopes,
        not_before: 0,
        expires: 4_000_000_000,
        nonce: "0123456789abcdef0123456789abcdef".into(),
    }
    .statement();
    SignedDelegation {
        signature: device.sign(statement.as_bytes()),
        statement,
    }
}

/// Makes a change by `actor` on the node's current copy of `doc`, signs it
/// with `signing_key` (normally the actor), and returns it *without*
/// validating it: how a peer that ignores the rules would write.
pub fn forge(
    engine: &Engine,
    doc: &DocId,
    actor: &Keypair,
    signing_key: &Keypair,
    delegation: Option<SignedDelegation>,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<(), SchemaError>,
) -> SignedChange {
    let mut change = forge_chain(engine, doc, actor, signing_key, vec![Box::new(f)]);
    let mut change = change.pop().expect("one step, one change");
    change.delegation = delegation;
    change
}

/// One change of a forged chain: the operations it writes.
pub type Step<'a> = Box<dyn FnOnce(&mut Transaction<'_>) -> Result<(), SchemaError> + 'a>;

/// Makes a chain of changes by `actor`, each on the one before, starting
/// from the node's current copy of `doc`; signs each with `signing_key`
/// and returns them *without* validating them.
pub fn forge_chain(
    engine: &Engine,
    doc: &DocId,
    actor: &Keypair,
    signing_key: &Keypair,
    steps: Vec<Step<'_>>,
) -> Vec<SignedChange> {
    let mut fork = engine
        .read(doc, |r| r.doc().fork())
        .expect("the document exists")
        .with_actor(ActorId::from(actor.did().as_bytes().as_slice()));
    steps
        .into_iter()
        .map(|step| {
            let hash = fork
                .transact_with(|_| CommitOptions::default().with_time(1_700_000_500), step)
                .map_err(|f| f.error)
                .expect("the forged operations apply")
                .hash
                .expect("the forged change writes something");
            let change = fork.get_change_by_hash(&hash).expect("just committed");
            SignedChange {
                change: change.raw_bytes().to_vec(),
                signature: signing_key.sign(&signing_message(doc, &hash)),
                delegation: None,
            }
        })
        .collect()
}

/// Signs `entry` with `key` and returns its canonical encoding: how a peer,
/// honest or not, would send an entry.
pub fn sign_entry(key: &Keypair, entry: icn_schemas::ledger::Entry) -> Vec<u8> {
    let signature = key.sign(&entry.signing_message().expect("encodable entry"));
    icn_schemas::ledger::SignedEntry { entry, signature }
        .encode()
        .expect("encodable entry")
}

/// The device key of member `seed` on replica `replica`. A device key lives
/// on one device: two replicas writing with one key would equivocate.
pub fn replica_device(seed: u64, replica: usize) -> Keypair {
    keypair(1000 * seed + replica as u64)
}

/// `replicas` nodes holding one co-op created by `keypair(1)`, with members
/// `keypair(2..=members)` and, for every member and replica, a proven device
/// ([`replica_device`]).
pub fn replicated_coop(replicas: usize, members: u64) -> (Vec<TestNode>, DocId) {
    let nodes: Vec<TestNode> = (0..replicas).map(|_| TestNode::new()).collect();
    let admin = keypair(1);
    let signer = crate::Signer::Device(admin.clone());
    let id = nodes[0]
        .engine
        .create_coop(&signer, &new_coop(&admin))
        .expect("create");
    nodes[0]
        .engine
        .write(&id, &signer, |tx| {
            for seed in 2..=members {
                coop::add_member(tx, &keypair(seed).did(), coop::Role::Member, 1)?;
            }
            for seed in 1..=members {
                for r in 0..replicas {
                    let device = replica_device(seed, r);
                    let proof = device.device_proof(&keypair(seed).did());
                    let member = keypair(seed).did();
                    coop::add_device(tx, &member, &device.did(), Some(&proof), None, 1)?;
                }
            }
            Ok(())
        })
        .expect("members and devices");
    let history = nodes[0].engine.changes_since(&id, &[]).expect("history");
    for n in &nodes[1..] {
        n.engine
            .apply_remote(&id, history.clone())
            .expect("initial history");
    }
    (nodes, id)
}

/// Sends every ledger entry `from` holds to `to`, shuffled by `seed`, in
/// batches of `batch`, the first entry twice when `duplicate`: how entries
/// travel between replicas in the property tests. Panics if an entry is
/// refused, since every entry a replica holds is honest.
pub fn exchange_entries(
    from: &Engine,
    to: &Engine,
    id: &DocId,
    batch: usize,
    seed: u64,
    duplicate: bool,
) {
    let mut entries = from.entries(id).expect("entries");
    if duplicate && let Some(first) = entries.first().cloned() {
        entries.push(first);
    }
    let mut state = seed | 1;
    for i in (1..entries.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        entries.swap(i, (state % (i as u64 + 1)) as usize);
    }
    for chunk in entries.chunks(batch.max(1)) {
        for result in to.ingest_entries(id, chunk.to_vec()).expect("ingest") {
            if let Err(e) = result {
                panic!("an honest entry was refused: {e}");
            }
        }
    }
}
