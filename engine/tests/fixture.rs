//! A data directory written by layout version 2, as the code of 2026-12-01
//! wrote it, must open and answer every query exactly as that code did.
//!
//! `tests/fixtures/v2-datadir.tar` holds the directory (sled's files, as a
//! tar archive so that git keeps them byte for byte) and
//! `tests/fixtures/v2-answers.json` what the code that wrote it answered. The
//! directory holds a co-op with three members and a phone, a treasury domain
//! with an executed budget, a rate and a conversion, settlements, an
//! allowance and a spend from it, a freeze, entries conflicted for three
//! reasons, a WASM module and a peer's sync state.
//!
//! The fixture is made once, by the ignored test `make_fixture`
//! (`cargo test -p icn-engine --test fixture -- --ignored make_fixture`); it
//! is never made again by later code, which is the point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use icn_engine::ledger::{Settle, Status};
use icn_engine::test_utils::{keypair, new_coop, new_domain, sign_entry};
use icn_engine::{Engine, Keypair, Signer, Store};
use icn_schemas::coop::{self, Role};
use icn_schemas::domain::{self, Choice, DomainRole, Payload};
use icn_schemas::ledger::{Account, Body, Entry, Posting, Sealed};
use icn_schemas::{DocId, DocKind};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn dev(k: &Keypair) -> Signer {
    Signer::Device(k.clone())
}

/// The members whose positions and histories are asked for.
fn people() -> Vec<Keypair> {
    vec![keypair(1), keypair(2), keypair(3), keypair(20)]
}

/// Everything the engine answers about what it holds, as JSON.
fn answers(engine: &Engine) -> Value {
    let mut docs = BTreeMap::new();
    let mut ids = engine.doc_ids();
    ids.sort();
    for id in &ids {
        let heads: Vec<String> = engine
            .heads(id)
            .expect("held")
            .iter()
            .map(|h| h.to_string())
            .collect();
        let mut doc = json!({
            "kind": format!("{:?}", engine.kind(id)),
            "heads": heads,
            "json": engine.to_json(id),
            "changes": engine.changes_since(id, &[]).expect("history").len(),
        });
        if engine.kind(id) == Some(DocKind::Coop) {
            doc["ledger"] = ledger_answers(engine, id);
        }
        docs.insert(id.to_string(), doc);
    }
    let store = engine.store();
    let blobs: Vec<String> = store
        .blob_hashes()
        .expect("blobs")
        .iter()
        .map(hex::encode)
        .collect();
    let peer = keypair(99).did();
    let peer_sync: Vec<Option<String>> = ids
        .iter()
        .map(|id| {
            store
                .peer_sync_state(peer.as_bytes(), id)
                .expect("peer sync")
                .map(hex::encode)
        })
        .collect();
    json!({
        "schema_version": store.schema_version().expect("version"),
        "docs": docs,
        "blobs": blobs,
        "peer_sync": peer_sync,
    })
}

fn ledger_answers(engine: &Engine, coop: &DocId) -> Value {
    let tb = engine.trial_balance(coop).expect("trial balance");
    let ids = engine.entry_ids(coop).expect("ids");
    let entries: Vec<Value> = ids
        .iter()
        .map(|id| {
            let (entry, status) = engine.entry(coop, id).expect("entry").expect("held");
            json!({
                "id": id.to_string(),
                "entry": entry.entry,
                "status": status,
                "bytes": hex::encode(engine.entry_bytes(coop, id).expect("bytes").expect("held")),
            })
        })
        .collect();
    let mut positions = BTreeMap::new();
    let mut histories = BTreeMap::new();
    for who in people() {
        positions.insert(
            who.did().to_string(),
            serde_json::to_value(engine.position(coop, &who.did()).expect("position"))
                .expect("json"),
        );
        // Two pages of two, then the rest.
        let account = Account::Member(who.did());
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = engine
                .history(coop, account, after, 2)
                .expect("history page");
            after = page.next_cursor;
            pages.push(serde_json::to_value(&page).expect("json"));
            if after.is_none() {
                break;
            }
        }
        histories.insert(who.did().to_string(), pages);
    }
    let treasury = engine
        .history(coop, Account::Treasury, None, 500)
        .expect("treasury history");
    let registry = engine.registry(coop).expect("registry");
    let traces: Vec<Value> = registry
        .iter()
        .map(|d| {
            let hash: [u8; 32] = hex::decode(&d.hash)
                .expect("hex")
                .try_into()
                .expect("32 bytes");
            let by_decision = engine
                .entries_by_decision(coop, &hash)
                .expect("by decision");
            json!({
                "trace": engine.trace(coop, &hash).expect("trace"),
                "by_decision": by_decision,
            })
        })
        .collect();
    let heads: Vec<String> = engine
        .ledger_heads(coop)
        .expect("heads")
        .iter()
        .map(|h| h.to_string())
        .collect();
    let first_heads: Vec<_> = ids.iter().take(3).copied().collect();
    let earlier = engine
        .trial_balance_at(coop, &first_heads)
        .expect("earlier trial balance");
    json!({
        "heads": heads,
        "entries": entries,
        "accounts": tb.accounts.iter().map(|((a, u), b)| json!([a, u, b])).collect::<Vec<_>>(),
        "totals": tb.totals.iter().map(|(u, t)| json!([u, t.to_string()])).collect::<Vec<_>>(),
        "entry_count": tb.entries,
        "conflicted": tb.conflicted.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        "positions": positions,
        "histories": histories,
        "treasury_history": treasury,
        "registry": registry,
        "traces": traces,
        "earlier_accounts": earlier.accounts.iter().map(|((a, u), b)| json!([a, u, b])).collect::<Vec<_>>(),
        "missing_parents": engine.missing_parents(coop).expect("missing").len(),
    })
}

/// Unpacks the fixture into a fresh temporary directory.
fn unpack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(fixtures().join("v2-datadir.tar"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xf failed");
    dir
}

#[test]
fn a_version_2_data_dir_opens_and_answers_as_recorded() {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("v2-answers.json")).expect("recorded answers"),
    )
    .expect("answers JSON");
    let dir = unpack();
    let engine = Engine::open(Store::open(dir.path()).expect("store")).expect("engine");
    let got = answers(&engine);
    // Opening migrated it to the current layout (layout 3 adds the author
    // index); everything else answers as recorded.
    assert_eq!(
        got["schema_version"],
        json!(icn_engine::storage::layout_version())
    );
    let mut expected = expected;
    expected["schema_version"] = got["schema_version"].clone();
    assert_eq!(
        got,
        expected,
        "the fixture answered differently:\n{}",
        first_difference(&got, &expected, "")
    );
    // It keeps working: a new settlement counts, and a restart keeps it.
    let coop = engine
        .doc_ids()
        .into_iter()
        .find(|id| engine.kind(id) == Some(DocKind::Coop))
        .expect("a co-op");
    let (id, status) = engine
        .settle(&coop, &dev(&keypair(3)), &settle(&keypair(2), 1, "after"))
        .expect("settle after opening");
    assert_eq!(status, Status::Applied);
    // The migrated author index serves seals: alice seals her phone; a
    // backdated entry of the phone's (no parents, so the fold is redone
    // from the start) is sealed, and what the phone wrote before still
    // counts.
    let (alice, phone) = (keypair(2), keypair(20));
    let before: Vec<(String, Value)> = engine
        .entry_ids(&coop)
        .expect("ids")
        .iter()
        .map(|id| {
            let (_, status) = engine.entry(&coop, id).expect("entry").expect("held");
            (id.to_string(), json!(status))
        })
        .collect();
    let (_, sealed) = engine
        .seal(&coop, &dev(&alice), &alice.did(), Sealed::Key(phone.did()))
        .expect("seal");
    assert_eq!(sealed, Status::Applied);
    let mut entry = transfer_entry(&engine, &coop, &alice, &keypair(3), 1);
    entry.signer = phone.did();
    entry.parents.clear();
    if let Body::Transfer { from_allowance, .. } = &mut entry.body {
        *from_allowance = true;
    }
    let thief = engine
        .ingest_entries(&coop, vec![sign_entry(&phone, entry)])
        .expect("ingest")
        .remove(0)
        .expect("valid at its heads");
    let thief = match thief {
        icn_engine::ledger::Ingest::Stored(id) => id,
        other => panic!("stored, not {other:?}"),
    };
    let (_, status) = engine.entry(&coop, &thief).expect("entry").expect("held");
    assert!(
        matches!(
            status,
            Status::Conflicted {
                conflict: icn_engine::ledger::Conflict::Sealed { .. }
            }
        ),
        "{status:?}"
    );
    for (id, was) in before {
        let id = id.parse().expect("entry id");
        let (_, now) = engine.entry(&coop, &id).expect("entry").expect("held");
        assert_eq!(json!(now), was, "entry {id} changed status");
    }
    drop(engine);
    let engine = Engine::open(Store::open(dir.path()).expect("store")).expect("engine");
    assert!(engine.entry(&coop, &id).expect("entry").is_some());
    let tb = engine.trial_balance(&coop).expect("trial balance");
    assert!(tb.totals.values().all(|t| *t == 0));
}

/// Where two JSON values first differ, as a path.
fn first_difference(a: &Value, b: &Value, path: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (va, vb) = (x.get(k), y.get(k));
                if va != vb {
                    return match (va, vb) {
                        (Some(va), Some(vb)) => first_difference(va, vb, &format!("{path}/{k}")),
                        _ => format!("{path}/{k}: {va:?} against {vb:?}"),
                    };
                }
            }
            String::new()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                if va != vb {
                    return first_difference(va, vb, &format!("{path}/{i}"));
                }
            }
            String::new()
        }
        _ => format!("{path}: {a} against {b}"),
    }
}

fn settle(to: &Keypair, amount: i64, memo: &str) -> Settle {
    Settle {
        to: to.did(),
        amount,
        unit: "hours".into(),
        memo: memo.into(),
    }
}

/// A transfer entry of `amount` hours from `from` to `to`, signed by
/// `from`, citing the current co-op heads and ledger heads.
fn transfer(engine: &Engine, coop: &DocId, from: &Keypair, to: &Keypair, amount: i64) -> Vec<u8> {
    sign_entry(from, transfer_entry(engine, coop, from, to, amount))
}

/// [`transfer`], unsigned.
fn transfer_entry(
    engine: &Engine,
    coop: &DocId,
    from: &Keypair,
    to: &Keypair,
    amount: i64,
) -> Entry {
    let mut postings = vec![
        Posting {
            account: Account::Member(from.did()),
            unit: "hours".into(),
            amount: -amount,
        },
        Posting {
            account: Account::Member(to.did()),
            unit: "hours".into(),
            amount,
        },
    ];
    icn_schemas::ledger::sort_postings(&mut postings);
    Entry {
        coop: *coop,
        parents: engine.ledger_heads(coop).expect("heads"),
        author: from.did(),
        signer: from.did(),
        timestamp: 1_764_000_000_000,
        coop_heads: engine
            .heads(coop)
            .expect("held")
            .iter()
            .map(|h| h.0)
            .collect(),
        body: Body::Transfer {
            postings,
            from_allowance: false,
        },
        memo: "from a peer".into(),
        decision: None,
        delegation: None,
    }
}

#[test]
#[ignore = "makes the fixture; run once, by hand, with the code whose layout it records"]
fn make_fixture() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = Engine::open(Store::open(dir.path()).expect("store")).expect("engine");
    let (admin, alice, bob, carol) = (keypair(1), keypair(2), keypair(3), keypair(4));
    let phone = keypair(20);
    let coop = engine
        .create_coop(&dev(&admin), &new_coop(&admin))
        .expect("co-op");
    engine
        .write(&coop, &dev(&admin), |tx| {
            for m in [&alice, &bob, &carol] {
                coop::add_member(tx, &m.did(), Role::Member, 1)?;
            }
            coop::set_rate(tx, "hours", "eur", 2500, 1)
        })
        .expect("members and a rate");
    let proof = phone.device_proof(&alice.did());
    engine
        .write(&coop, &dev(&alice), |tx| {
            coop::add_device(tx, &alice.did(), &phone.did(), Some(&proof), None, 1)
        })
        .expect("alice's phone");
    // The treasury domain, a budget accepted and executed by its close.
    let treasury = engine
        .create_domain(&dev(&admin), &new_domain(&admin))
        .expect("domain");
    engine
        .write(&treasury, &dev(&admin), |tx| {
            domain::add_member(tx, &alice.did(), DomainRole::Member, 1)?;
            domain::add_member(tx, &bob.did(), DomainRole::Member, 1)
        })
        .expect("domain members");
    engine
        .write(&coop, &dev(&admin), |tx| {
            coop::set_treasury_domain(tx, &treasury)
        })
        .expect("treasury domain");
    engine
        .write(&treasury, &dev(&alice), |tx| {
            domain::create_proposal(
                tx,
                &domain::NewProposal {
                    id: "roof".into(),
                    title: "Pay bob for the roof".into(),
                    description: String::new(),
                    author: alice.did(),
                    created_at: 1,
                    payload: Payload::Budget {
                        amount: 40,
                        recipient: bob.did(),
                        unit: "hours".into(),
                        purpose: "roof".into(),
                    },
                },
            )
        })
        .expect("proposal");
    engine
        .write(&treasury, &dev(&alice), |tx| {
            domain::open_proposal(tx, "roof", 1, 100)
        })
        .expect("open");
    for voter in [&alice, &bob] {
        engine
            .write(&treasury, &dev(voter), |tx| {
                domain::cast_vote(tx, "roof", &voter.did(), Choice::For, None, 2)
            })
            .expect("vote");
    }
    engine
        .close_proposal(&treasury, &dev(&alice), "roof", 5)
        .expect("close");
    // Settlements, a conversion, an allowance and a spend from it.
    for (from, to, amount) in [(&alice, &bob, 10), (&bob, &carol, 5), (&carol, &alice, 7)] {
        engine
            .settle(&coop, &dev(from), &settle(to, amount, "garden help"))
            .expect("settle");
    }
    engine
        .convert(
            &coop,
            &dev(&alice),
            &icn_engine::ledger::Convert {
                to: Some(bob.did()),
                amount: 2,
                from_unit: "hours".into(),
                to_unit: "eur".into(),
                memo: "accounting".into(),
            },
        )
        .expect("convert");
    engine
        .grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 20)
        .expect("grant");
    engine
        .settle(&coop, &dev(&phone), &settle(&carol, 3, "offline coffee"))
        .expect("spend from the allowance");
    // Conflicted: a peer's overspend, and a payment to a frozen account.
    let over = transfer(&engine, &coop, &carol, &bob, 500);
    engine.ingest_entries(&coop, vec![over]).expect("ingest");
    engine
        .freeze(&coop, &dev(&admin), &carol.did(), true)
        .expect("freeze");
    let frozen = transfer(&engine, &coop, &bob, &carol, 1);
    engine.ingest_entries(&coop, vec![frozen]).expect("ingest");
    engine
        .freeze(&coop, &dev(&admin), &carol.did(), false)
        .expect("unfreeze");
    // A phone spending general credit after its member granted it an
    // allowance is conflicted.
    let mut general = transfer(&engine, &coop, &alice, &bob, 1);
    {
        let (mut e, _) = icn_schemas::ledger::SignedEntry::decode(&general).expect("decode");
        e.entry.signer = phone.did();
        general = sign_entry(&phone, e.entry);
    }
    engine.ingest_entries(&coop, vec![general]).expect("ingest");
    // A WASM module and a peer's sync state.
    engine
        .put_module(include_str!("../../examples/wasm/two_thirds.wat").as_bytes())
        .expect("module");
    engine
        .store()
        .put_peer_sync_state(keypair(99).did().as_bytes(), &coop, b"fixture sync state")
        .expect("peer sync");
    engine.store().make_durable().expect("durable");
    let got = answers(&engine);
    let conflicted = got["docs"][coop.to_string()]["ledger"]["conflicted"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(conflicted, 3, "three conflicted entries");
    drop(engine);
    std::fs::create_dir_all(fixtures()).expect("fixtures dir");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(fixtures().join("v2-datadir.tar"))
        .arg("-C")
        .arg(dir.path())
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -cf failed");
    std::fs::write(
        fixtures().join("v2-answers.json"),
        serde_json::to_vec_pretty(&got).expect("json"),
    )
    .expect("write answers");
}
