//! A governance domain that tallies with its own WASM module.
//!
//! Stores `examples/wasm/two_thirds.wat` (a two-thirds supermajority by
//! weight, in WebAssembly text) as a content-addressed blob, names it in a
//! domain's rules, and closes a proposal with it: two of three members vote
//! for, which is two thirds, so it is accepted. A peer recounts with the same
//! module before it accepts the close.
//!
//! Run it with `cargo run -p icn-examples --example tally_module`. To build
//! the binary form instead, `wat2wasm examples/wasm/two_thirds.wat` (wabt);
//! either form works, and each has its own hash.

use anyhow::{Context, Result};
use icn_engine::{Engine, Keypair, Signer, Store};
use icn_schemas::domain::{self, Choice, DomainRole, Method, Payload, Rules};

const MODULE: &str = include_str!("wasm/two_thirds.wat");

fn main() -> Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let node = Engine::open(Store::open(dir_a.path())?)?;
    let peer = Engine::open(Store::open(dir_b.path())?)?;
    let (admin, alice, bob) = (
        Keypair::generate()?,
        Keypair::generate()?,
        Keypair::generate()?,
    );
    let signer = |k: &Keypair| Signer::Device(k.clone());

    let hash = node.put_module(MODULE.as_bytes())?;
    println!("module two_thirds.wat: blake3 {}", hex::encode(hash));
    let id = node.create_domain(
        &signer(&admin),
        &domain::NewDomain {
            id: "budget-committee".into(),
            name: "Budget committee".into(),
            profile: "custom".into(),
            coop_id: None,
            creator: admin.did(),
            created_at: 1_700_000_000,
            rules: Rules {
                method: Method::Wasm {
                    module: hex::encode(hash),
                },
                ..Rules::default()
            },
        },
    )?;
    node.write(&id, &signer(&admin), |tx| {
        domain::add_member(tx, &alice.did(), DomainRole::Member, 1)?;
        domain::add_member(tx, &bob.did(), DomainRole::Member, 1)
    })?;
    node.write(&id, &signer(&alice), |tx| {
        domain::create_proposal(
            tx,
            &domain::NewProposal {
                id: "new-van".into(),
                title: "Buy a delivery van".into(),
                description: String::new(),
                author: alice.did(),
                created_at: 1_700_000_100,
                payload: Payload::Text {
                    body: "A used van for deliveries".into(),
                },
            },
        )
    })?;
    node.write(&id, &signer(&alice), |tx| {
        domain::open_proposal(tx, "new-van", 1_700_000_100, 1_700_600_000)
    })?;
    for (who, choice) in [
        (&alice, Choice::For),
        (&bob, Choice::For),
        (&admin, Choice::Against),
    ] {
        node.write(&id, &signer(who), |tx| {
            domain::cast_vote(tx, "new-van", &who.did(), choice, None, 1_700_000_200)
        })?;
    }
    let (close, receipt) = node.close_proposal(&id, &signer(&alice), "new-van", 1_700_000_300)?;
    println!(
        "closed: {} (for {}, against {}, of {} eligible); receipt {}",
        close.outcome.as_str(),
        close.tally.for_,
        close.tally.against,
        close.tally.eligible,
        hex::encode(receipt.hash())
    );

    // The peer needs the module to check the close; the sync fetches it by
    // hash before the document.
    peer.put_module(MODULE.as_bytes())?;
    peer.apply_remote(&id, node.changes_since(&id, &[]).context("the domain")?)?;
    let theirs = peer
        .receipt(&id, "new-van")
        .context("the peer holds the close")?;
    println!(
        "the peer recounted with the module and agrees: {}",
        theirs == receipt
    );
    Ok(())
}
