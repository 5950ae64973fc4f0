//! Shared test vectors of the canonical entry encoding (`docs/ledger.md`):
//! entries of every body a client signs, with their unsigned encoding,
//! signing message, signature, encoding and id, written by this crate to
//! `sdk/typescript/test/vectors/entries.json`, which the TypeScript SDK's
//! encoder must reproduce byte for byte. `ICN_UPDATE_VECTORS=1` rewrites
//! the file; otherwise it must be what this code writes.

use ed25519_dalek::{Signer, SigningKey};
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry, sort_postings};
use icn_schemas::{Did, DocId};
use serde_json::{Value, json};

fn key(seed: u8) -> (SigningKey, Did) {
    let k = SigningKey::from_bytes(&[seed; 32]);
    let did = Did::from_key(k.verifying_key()).expect("a DID");
    (k, did)
}

fn account(a: &Account) -> Value {
    match a {
        Account::Member(did) => json!(did.to_string()),
        Account::Treasury => json!("treasury"),
    }
}

fn body_json(body: &Body) -> Value {
    match body {
        Body::Transfer {
            postings,
            from_allowance,
        } => json!({
            "type": "transfer",
            "from_allowance": from_allowance,
            "postings": postings.iter().map(|p| json!({
                "account": account(&p.account), "unit": p.unit, "amount": p.amount,
            })).collect::<Vec<_>>(),
        }),
        Body::Grant {
            device,
            unit,
            amount,
        } => json!({"type": "grant", "device": device.to_string(), "unit": unit, "amount": amount}),
        Body::Release { unit, amount } => {
            json!({"type": "release", "unit": unit, "amount": amount})
        }
        other => panic!("no vector for {other:?}"),
    }
}

fn vector(name: &str, entry: Entry, signer: &SigningKey) -> Value {
    let unsigned = entry.encode_unsigned().expect("encodes");
    let message = entry.signing_message().expect("message");
    let signature = signer.sign(&message).to_bytes();
    let signed = SignedEntry {
        entry: entry.clone(),
        signature,
    };
    let encoded = signed.encode().expect("encodes");
    let (decoded, id) = SignedEntry::decode(&encoded).expect("decodes");
    assert_eq!(decoded.encode().expect("again"), encoded, "canonical");
    assert_eq!(id, signed.id().expect("id"));
    json!({
        "name": name,
        "entry": {
            "coop": hex::encode(entry.coop.0),
            "parents": entry.parents.iter().map(|p| hex::encode(p.0)).collect::<Vec<_>>(),
            "author": entry.author.to_string(),
            "signer": entry.signer.to_string(),
            "timestamp": entry.timestamp,
            "coop_heads": entry.coop_heads.iter().map(hex::encode).collect::<Vec<_>>(),
            "body": body_json(&entry.body),
            "memo": entry.memo,
            "decision": entry.decision.map(hex::encode),
        },
        "signer_seed": hex::encode(signer.to_bytes()),
        "unsigned": hex::encode(&unsigned),
        "signing_message": hex::encode(message),
        "signature": hex::encode(signature),
        "encoded": hex::encode(&encoded),
        "id": id.to_string(),
    })
}

fn transfer(from: Did, to: Did, unit: &str, amount: i64, from_allowance: bool) -> Body {
    let mut postings = vec![
        Posting {
            account: Account::Member(from),
            unit: unit.into(),
            amount: -amount,
        },
        Posting {
            account: Account::Member(to),
            unit: unit.into(),
            amount,
        },
    ];
    sort_postings(&mut postings);
    Body::Transfer {
        postings,
        from_allowance,
    }
}

#[test]
fn the_sdk_vectors_are_what_this_encoder_writes() {
    let (member_key, member) = key(1);
    let (phone_key, phone) = key(2);
    let (_, bob) = key(3);
    let coop = DocId(*blake3::hash(b"vector co-op").as_bytes());
    let mut heads = vec![
        *blake3::hash(b"head a").as_bytes(),
        *blake3::hash(b"head b").as_bytes(),
    ];
    heads.sort();
    let mut parents = vec![
        EntryId(*blake3::hash(b"parent 1").as_bytes()),
        EntryId(*blake3::hash(b"parent 2").as_bytes()),
    ];
    parents.sort();
    let base = |author: Did, signer: Did, body: Body, memo: &str| Entry {
        coop,
        parents: parents.clone(),
        author,
        signer,
        timestamp: 1_796_000_000_123,
        coop_heads: heads.clone(),
        body,
        memo: memo.into(),
        decision: None,
        delegation: None,
    };
    let vectors = vec![
        vector(
            "a payment by the member's DID key",
            base(
                member,
                member,
                transfer(member, bob, "hours", 5, false),
                "Garden help",
            ),
            &member_key,
        ),
        vector(
            "a payment from the phone's allowance, no parents, unicode memo",
            Entry {
                parents: Vec::new(),
                ..base(
                    member,
                    phone,
                    transfer(member, bob, "eur", 1250, true),
                    "Brot & Käse ☕",
                )
            },
            &phone_key,
        ),
        vector(
            "an allowance grant to the phone",
            base(
                member,
                member,
                Body::Grant {
                    device: phone,
                    unit: "hours".into(),
                    amount: 20,
                },
                "allowance",
            ),
            &member_key,
        ),
        vector(
            "a release by the phone",
            base(
                member,
                phone,
                Body::Release {
                    unit: "hours".into(),
                    amount: 3,
                },
                "",
            ),
            &phone_key,
        ),
    ];
    let text = serde_json::to_string_pretty(&json!({ "version": 1, "vectors": vectors }))
        .expect("json")
        + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk/typescript/test/vectors/entries.json");
    if std::env::var_os("ICN_UPDATE_VECTORS").is_some() {
        std::fs::write(&path, &text).expect("write the vectors");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "sdk/typescript/test/vectors/entries.json is not what the encoder writes; \
         regenerate it with ICN_UPDATE_VECTORS=1 cargo test -p icn-schemas --test entry_vectors"
    );
}
