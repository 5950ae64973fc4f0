//! Members' phones: second keys registered as devices of a member.
//!
//! - Member 1's phone has an **allowance** (its DID key grants it
//!   [`ALLOWANCE`] hours, signed on member 1's machine and submitted
//!   through its node) and pays from it, signing its entries itself as a
//!   phone offline does, through any node that holds the grant: honest
//!   payments within an allowance, none of which may end conflicted
//!   anywhere.
//! - Member 2's phone pays from member 2's general credit until member 2
//!   **revokes** it ("lost") through its own node, once a run; whatever it
//!   gets acknowledged after that (by a node that had not heard) must count
//!   nowhere. It pays through the node's settle route (the node signs
//!   under the phone's delegation).

use anyhow::{Context, Result, anyhow};
use icn_engine::Keypair;
use icn_node::client::Client;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry};
use serde_json::{Value, json};

/// Hours member 1 sets aside for its phone.
pub(crate) const ALLOWANCE: i64 = 30;

/// The phone of member `member`, fixed by the seed.
pub(crate) fn key(seed: u64, member: u8) -> Keypair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[9] = 0x1a;
    secret[10] = member;
    Keypair::from_secret(&secret)
}

/// Registers `phone` as a device of the member `client` is logged in as
/// (`member`, whose key signs nothing here: the gateway writes it).
pub(crate) async fn register(client: &Client, member: &Keypair, phone: &Keypair) -> Result<()> {
    let did = member.did();
    let body = json!({
        "device": phone.did().to_string(),
        "label": "phone",
        "proof": hex::encode(phone.device_proof(&did)),
    });
    client
        .call("POST", &format!("/v1/devices/{did}"), Some(body))
        .await
        .context("registering a phone")?;
    Ok(())
}

/// Signs an entry of `author`'s with `signer` on the heads `client`'s node
/// names, and submits it there. Returns its id once the node has applied
/// it (acknowledged), and an error otherwise.
async fn submit(
    client: &Client,
    coop: &str,
    author: &icn_schemas::Did,
    signer: &Keypair,
    body: Body,
    memo: &str,
) -> Result<EntryId> {
    let heads = client.ledger_heads(coop).await?;
    let entry = Entry {
        coop: heads.coop,
        parents: heads.ledger_heads,
        author: *author,
        signer: signer.did(),
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        coop_heads: heads.coop_heads,
        body,
        memo: memo.into(),
        decision: None,
        delegation: None,
    };
    let signature = signer.sign(&entry.signing_message()?);
    let signed = SignedEntry { entry, signature };
    let id = signed.id()?;
    let answer = client
        .call(
            "POST",
            &format!("/v1/ledger/{coop}/entries"),
            Some(json!({ "bytes": hex::encode(signed.encode()?) })),
        )
        .await?;
    // A 202 (waiting for what it cites) is not acknowledged.
    match answer["status"]["status"].as_str() {
        Some("applied") => Ok(id),
        other => Err(anyhow!("entry {id} is {other:?}, not applied")),
    }
}

/// Member `member` (its DID key, on its own machine) grants `phone`
/// [`ALLOWANCE`] hours through its node. Returns the grant's id.
pub(crate) async fn grant(
    client: &Client,
    coop: &str,
    member: &Keypair,
    phone: &Keypair,
) -> Result<EntryId> {
    let body = Body::Grant {
        device: phone.did(),
        unit: "hours".into(),
        amount: ALLOWANCE,
    };
    submit(
        client,
        coop,
        &member.did(),
        member,
        body,
        "the phone's allowance",
    )
    .await
    .context("the grant")
}

/// The phone of `member` pays `to` `amount` hours from its allowance,
/// signing the entry itself (as a phone offline would) on the heads of the
/// node `client` is logged in at, and submitting it there.
pub(crate) async fn pay_from_allowance(
    client: &Client,
    coop: &str,
    member: &icn_schemas::Did,
    phone: &Keypair,
    to: &icn_schemas::Did,
    amount: i64,
) -> Result<EntryId> {
    let mut postings = vec![
        Posting {
            account: Account::Member(*member),
            unit: "hours".into(),
            amount: -amount,
        },
        Posting {
            account: Account::Member(*to),
            unit: "hours".into(),
            amount,
        },
    ];
    icn_schemas::ledger::sort_postings(&mut postings);
    let body = Body::Transfer {
        postings,
        from_allowance: true,
    };
    submit(
        client,
        coop,
        member,
        phone,
        body,
        "from the phone's allowance",
    )
    .await
}

/// What node `client` says of entry `id`: its status ("applied",
/// "conflicted") and whether it spends from an allowance; `None` when it
/// does not hold it.
pub(crate) async fn entry(client: &Client, coop: &str, id: &str) -> Option<(String, bool)> {
    let entry: Value = client
        .call("GET", &format!("/v1/ledger/{coop}/entries/{id}"), None)
        .await
        .ok()?;
    let status = entry["status"]["status"].as_str()?.to_owned();
    let from_allowance = entry["entry"]["body"]["from_allowance"]
        .as_bool()
        .unwrap_or(false);
    Some((status, from_allowance))
}
