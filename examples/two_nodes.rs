//! Two nodes on one machine, syncing over iroh (QUIC on loopback).
//!
//! Alice's node creates a co-op and adds Bob, whose own node holds nothing.
//! Each node binds an iroh endpoint whose key is its identity, so each
//! knows who the other is from the handshake. Alice's node dials Bob's;
//! Bob's node checks that the co-op names it as a member before it stores
//! anything, then catches up on the document and the ledger. Then Alice
//! settles 5 hours with Bob: the entry is pushed over the open connection,
//! and Bob's node verifies and folds it. Both print the same balances.
//!
//! Nothing here needs the internet: no relays, no discovery.
//!
//! Run it with `cargo run -p icn-examples --example two_nodes`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use icn_engine::ledger::Settle;
use icn_engine::{Engine, Keypair, Signer, Store};
use icn_schemas::coop::{self, Role};
use icn_sync::{NodeConfig, SyncNode};

#[tokio::main]
async fn main() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice_engine = Engine::open(Store::open(dir_a.path())?)?;
    let bob_engine = Engine::open(Store::open(dir_b.path())?)?;
    let (alice, bob) = (Keypair::generate()?, Keypair::generate()?);

    // Alice's co-op, with Bob as a member.
    let me = Signer::Device(alice.clone());
    let coop_id = alice_engine.create_coop(
        &me,
        &coop::NewCoop {
            id: "food-coop".into(),
            name: "Downtown Food Cooperative".into(),
            description: "A community food buying club".into(),
            creator: alice.did(),
            device: alice.did(),
            created_at: 1_700_000_000,
            default_credit_limit: 100,
            units: vec![("hours".into(), 0)],
        },
    )?;
    alice_engine.write(&coop_id, &me, |tx| {
        coop::add_member(tx, &bob.did(), Role::Member, 1_700_000_100)
    })?;

    // One sync node each, on loopback.
    let loopback = "127.0.0.1:0".parse()?;
    let node_a =
        SyncNode::spawn(alice_engine.clone(), &alice, NodeConfig::direct(loopback)).await?;
    let node_b = SyncNode::spawn(bob_engine.clone(), &bob, NodeConfig::direct(loopback)).await?;
    let b_addr = *node_b
        .local_addrs()
        .first()
        .context("bob's node has no address")?;
    println!(
        "alice's node {} dials bob's node {} at {b_addr}",
        alice.did(),
        bob.did()
    );
    node_a.dial(bob.did(), b_addr)?;

    wait("bob's node catches up on the co-op", || {
        bob_engine.heads(&coop_id) == alice_engine.heads(&coop_id)
    })
    .await?;
    println!(
        "bob's node holds the co-op: {}",
        bob_engine.coop(&coop_id).context("held")??.name
    );

    // A settlement on Alice's node appears on Bob's.
    let engine = alice_engine.clone();
    let settle = Settle {
        to: bob.did(),
        amount: 5,
        unit: "hours".into(),
        memo: "Fixed the bike racks".into(),
    };
    let started = Instant::now();
    let (entry, _) =
        tokio::task::spawn_blocking(move || engine.settle(&coop_id, &me, &settle)).await??;
    wait("the settlement reaches bob's node", || {
        bob_engine.entry(&coop_id, &entry).ok().flatten().is_some()
    })
    .await?;
    println!(
        "entry {entry} committed on alice's node, merged on bob's {:?} later",
        started.elapsed()
    );
    for (who, engine) in [("alice's node", &alice_engine), ("bob's node", &bob_engine)] {
        let balances = engine.trial_balance(&coop_id)?;
        for ((account, unit), balance) in &balances.accounts {
            println!("{who}: {account} {balance} {unit}");
        }
    }
    node_a.shutdown().await;
    node_b.shutdown().await;
    Ok(())
}

/// Polls `done` until it holds, for at most ten seconds.
async fn wait(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
