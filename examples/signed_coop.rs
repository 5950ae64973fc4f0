//! Two replicas of one co-op, and a peer that lies.
//!
//! An admin creates a co-op on node A and adds Bob. Bob's write travels to
//! node B as a batch of signed changes, which B validates before merging.
//! Then Bob forges a change that promotes himself to admin: A would never
//! write it, and B refuses it, naming the change and the rule.
//!
//! Run it with `cargo run -p icn-examples --example signed_coop`.

use anyhow::{Context, Result};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, ReadDoc};
use icn_engine::change::signing_message;
use icn_engine::{Engine, Keypair, SignedChange, Signer, Store};
use icn_schemas::coop::{self, Role};

fn main() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let node_a = Engine::open(Store::open(dir_a.path())?)?;
    let node_b = Engine::open(Store::open(dir_b.path())?)?;

    let admin = Keypair::generate()?;
    let bob = Keypair::generate()?;
    let id = node_a.create_coop(
        &Signer::Device(admin.clone()),
        &coop::NewCoop {
            id: "food-coop".into(),
            name: "Downtown Food Cooperative".into(),
            description: "A community food buying club".into(),
            creator: admin.did(),
            device: admin.did(),
            created_at: 1_700_000_000,
            default_credit_limit: 100,
            units: vec![("hours".into(), 0)],
        },
    )?;
    node_a.write(&id, &Signer::Device(admin.clone()), |tx| {
        coop::add_member(tx, &bob.did(), Role::Member, 1_700_000_100)
    })?;
    node_a.write(&id, &Signer::Device(bob.clone()), |tx| {
        coop::set_display_name(tx, &bob.did(), "Bob")
    })?;
    println!("node A created co-op {id} and wrote 3 signed changes");

    // Sync: everything A has goes to B, which checks every change first.
    let batch = node_a.changes_since(&id, &[])?;
    let applied = node_b.apply_remote(&id, batch)?;
    println!("node B validated and merged {} changes", applied.new.len());
    let view = node_b.coop(&id).context("B holds the co-op")??;
    println!(
        "on node B, {} is {:?} and named {:?}",
        bob.did(),
        view.members[&bob.did()].role,
        view.members[&bob.did()]
            .display_name
            .as_deref()
            .unwrap_or("")
    );

    // Bob writes a change by hand, outside the engine, and signs it.
    let mut fork = node_a
        .read(&id, |r| r.doc().fork())
        .context("A holds the co-op")?
        .with_actor(ActorId::from(bob.did().as_bytes().as_slice()));
    let hash = fork
        .transact_with(
            |_| CommitOptions::default().with_time(1_700_000_200),
            |tx| {
                let members = tx.get(automerge::ROOT, "members")?.context("members")?.1;
                let me = tx.get(&members, bob.did().to_string())?.context("bob")?.1;
                tx.put(&me, "role", "admin")?;
                anyhow::Ok(())
            },
        )
        .map_err(|f| f.error)?
        .hash
        .context("a change was made")?;
    let change = fork.get_change_by_hash(&hash).context("just made")?;
    let forged = SignedChange {
        change: change.raw_bytes().to_vec(),
        signature: bob.sign(&signing_message(&id, &hash)),
        delegation: None,
    };
    match node_b.apply_remote(&id, vec![forged]) {
        Ok(_) => anyhow::bail!("node B accepted a forged promotion"),
        Err(e) => println!("node B refused Bob's self-promotion: {e}"),
    }
    Ok(())
}
