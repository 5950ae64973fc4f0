//! Writes seed inputs for the fuzz targets into `fuzz/corpus/<target>/`:
//! valid batches and entries by the fixture's members, which the fuzzer mutates.

use icn_engine::test_utils::{forge, keypair};
use icn_engine::{SignedChange, encode_batch};
use icn_fuzz::{fixture, member};
use icn_schemas::coop;

fn main() -> std::io::Result<()> {
    let f = fixture();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/apply_batch");
    std::fs::create_dir_all(&dir)?;
    let m = member();
    let name = forge(&f.node.engine, &f.coop, &m, &m, None, |tx| {
        coop::set_display_name(tx, &m.did(), "seed")
    });
    let phone = keypair(30);
    let proof = phone.device_proof(&m.did());
    let device = forge(&f.node.engine, &f.coop, &m, &m, None, |tx| {
        coop::add_device(tx, &m.did(), &phone.did(), Some(&proof), Some("phone"), 1)
    });
    let admin = keypair(1);
    let promote = forge(&f.node.engine, &f.coop, &admin, &admin, None, |tx| {
        coop::set_role(tx, &m.did(), coop::Role::Admin)
    });
    let seeds: [(&str, Vec<SignedChange>); 4] = [
        ("member_name", vec![name.clone()]),
        ("member_device", vec![device]),
        ("admin_promotes", vec![promote]),
        ("two", vec![name.clone(), name]),
    ];
    for (label, batch) in seeds {
        for mode in [0u8, 1] {
            let mut bytes = vec![mode];
            bytes.extend(encode_batch(&batch));
            std::fs::write(dir.join(format!("{label}_{mode}")), bytes)?;
        }
    }
    println!("wrote seeds to {}", dir.display());

    // entry_decode: real entries, as a peer would send them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/entry_decode");
    std::fs::create_dir_all(&dir)?;
    let settle = icn_engine::ledger::Settle {
        to: keypair(1).did(),
        amount: 5,
        unit: "hours".into(),
        memo: "seed".into(),
    };
    f.node
        .engine
        .settle(&f.coop, &icn_engine::Signer::Device(m.clone()), &settle)
        .map_err(std::io::Error::other)?;
    f.node
        .engine
        .grant_allowance(
            &f.coop,
            &icn_engine::Signer::Device(m.clone()),
            &keypair(30).did(),
            "hours",
            10,
        )
        .map_err(std::io::Error::other)?;
    let entries = f
        .node
        .engine
        .entries(&f.coop)
        .map_err(std::io::Error::other)?;
    for (i, bytes) in entries.iter().enumerate() {
        std::fs::write(dir.join(format!("entry_{i}")), bytes)?;
    }
    println!("wrote seeds to {}", dir.display());

    // gateway_auth: a real challenge with its signature, and a token.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/gateway_auth");
    std::fs::create_dir_all(&dir)?;
    let authority =
        icn_gateway::auth::Authority::new(b"fuzz secret".to_vec(), keypair(9).did(), 3600);
    let challenge = authority
        .challenge(
            keypair(1).did(),
            None,
            icn_schemas::Scope::ALL.to_vec(),
            1_000,
        )
        .map_err(|e| std::io::Error::other(e.message().to_owned()))?;
    // The member is keypair(1), as in the target.
    let member = keypair(1);
    let mut seed = challenge.clone().into_bytes();
    seed.push(0xff);
    seed.extend(hex::encode(member.sign(challenge.as_bytes())).into_bytes());
    std::fs::write(dir.join("challenge_hex"), seed)?;
    // A device's challenge for the member (a `device:` line), signed by
    // the device.
    let device = keypair(2);
    let for_device = authority
        .challenge(
            member.did(),
            Some(device.did()),
            vec![
                icn_schemas::Scope::CoopRead,
                icn_schemas::Scope::LedgerWrite,
            ],
            1_000,
        )
        .map_err(|e| std::io::Error::other(e.message().to_owned()))?;
    let mut seed = for_device.clone().into_bytes();
    seed.push(0xff);
    seed.extend(hex::encode(device.sign(for_device.as_bytes())).into_bytes());
    std::fs::write(dir.join("challenge_device_hex"), seed)?;
    let (delegation, signed) = authority
        .verify_challenge(
            &member.did(),
            &challenge,
            &hex::encode(member.sign(challenge.as_bytes())),
            1_001,
        )
        .map_err(|e| std::io::Error::other(e.message().to_owned()))?;
    let token = authority.token(
        &delegation,
        &icn_gateway::auth::delegation_hash(&signed),
        1_001,
    );
    std::fs::write(dir.join("token"), token)?;
    println!("wrote seeds to {}", dir.display());

    // sync_frame: one frame of each kind, as a session writes them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sync_frame");
    std::fs::create_dir_all(&dir)?;
    let mut session = icn_sync::Session::new(f.node.engine.clone(), keypair(1).did(), m.did());
    session
        .receive(icn_sync::Frame::Hello { docs: Vec::new() })
        .map_err(std::io::Error::other)?;
    let mut frames = Vec::new();
    while let Some(frame) = session.next_frame().map_err(std::io::Error::other)? {
        frames.push(frame);
    }
    let coop = f.coop.0;
    frames.extend([
        icn_sync::Frame::LedgerHave {
            coop,
            bloom: vec![0; 16],
        },
        icn_sync::Frame::LedgerWant {
            coop,
            ids: vec![[1; 32]],
        },
        icn_sync::Frame::Entries {
            coop,
            entries: entries.clone(),
        },
        icn_sync::Frame::LedgerDone { coop },
        icn_sync::Frame::BlobWant { hash: [2; 32] },
        icn_sync::Frame::Blob {
            hash: [2; 32],
            bytes: b"(module)".to_vec(),
        },
    ]);
    for (i, frame) in frames.iter().enumerate() {
        std::fs::write(dir.join(format!("frame_{i}")), frame.encode())?;
    }
    println!("wrote seeds to {}", dir.display());
    Ok(())
}
