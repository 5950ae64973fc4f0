//! A member rotates its DID key's powers to a new key: the new key spends
//! general credit, grants allowances and seals; the old one, whatever heads
//! and parents it cites, counts for nothing its rotation had not seen.

use icn_schemas::coop;

use super::*;

/// Alice rotates from her DID key to key 30; returns the new key.
fn rotate(node: &TestNode, coop: &DocId, alice: &Keypair) -> (Keypair, crate::Rotated) {
    let new = keypair(30);
    let rotated = node
        .engine
        .rotate_key(
            coop,
            &dev(alice),
            &new.did(),
            &new.device_proof(&alice.did()),
            5,
        )
        .expect("rotate");
    (new, rotated)
}

#[test]
fn a_rotated_key_holds_the_did_keys_powers_and_the_old_key_counts_for_nothing_unseen() {
    let (node, coop, _, alice, bob) = setup();
    let e = &node.engine;
    let (phone, _) = with_phones(&node, &coop, &alice);
    let (paid, _) = e
        .settle(&coop, &dev(&alice), &settle(&bob, 5))
        .expect("pay");
    // What the old key signs on a replica that has not heard of the
    // rotation: valid at the heads it cites.
    let before = replica(e, &coop);
    before
        .engine
        .ingest_entries(&coop, e.entries(&coop).expect("entries"))
        .expect("ingest");
    let (unseen, _) = before
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 7))
        .expect("the old key pays where no rotation is known");
    let orphan = {
        let mut entry = transfer(e, &coop, &alice, alice.did(), bob.did(), 9);
        entry.parents = Vec::new();
        entry.coop_heads = before
            .engine
            .heads(&coop)
            .expect("heads")
            .iter()
            .map(|h| h.0)
            .collect();
        sign_entry(&alice, entry)
    };

    let (new, rotated) = rotate(&node, &coop, &alice);
    assert_eq!(rotated.old, alice.did());
    assert_eq!(rotated.new, new.did());
    assert_eq!(
        status_of(e, &coop, &rotated.seal.expect("sealed")),
        Status::Applied,
        "the old key seals itself"
    );
    let (key, reason) = e
        .read(&coop, |r| {
            let m = coop::Member::read(r, &alice.did()).expect("member");
            (
                coop::key_of(r, &alice.did()),
                m.devices[&alice.did().key_string()].revoked_reason.clone(),
            )
        })
        .expect("held");
    assert_eq!(key, Some(new.did()));
    assert_eq!(reason.as_deref(), Some("retired"));

    // The new key pays from general credit, grants and seals.
    let as_new = Signer::member_key(alice.did(), new.clone());
    let (by_new, s) = e
        .settle(&coop, &as_new, &settle(&bob, 2))
        .expect("new key pays");
    assert_eq!(s, Status::Applied);
    e.grant_allowance(&coop, &as_new, &phone.did(), "hours", 10)
        .expect("the new key grants");
    e.settle(&coop, &as_new, &settle(&bob, 1))
        .expect("and spends general credit beside the allowance");
    e.seal(&coop, &as_new, &alice.did(), Sealed::Key(keypair(21).did()))
        .expect("and seals");
    // The old key writes nothing at the heads after the rotation.
    assert!(e.settle(&coop, &dev(&alice), &settle(&bob, 1)).is_err());
    assert!(
        e.grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 1)
            .is_err()
    );

    // Its backdated entries arrive: valid where they cite, sealed here.
    let mut late = before.engine.entries(&coop).expect("entries");
    late.push(orphan);
    let stored: Vec<EntryId> = e
        .ingest_entries(&coop, late)
        .expect("ingest")
        .into_iter()
        .filter_map(|taken| match taken {
            Ok(Ingest::Stored(id)) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 2, "the unseen payment and the orphan");
    assert!(stored.contains(&unseen));
    for id in &stored {
        assert!(
            matches!(
                status_of(e, &coop, id),
                Status::Conflicted {
                    conflict: Conflict::Sealed { .. }
                }
            ),
            "{id:?} counts"
        );
    }
    assert_eq!(status_of(e, &coop, &paid), Status::Applied);
    assert_eq!(status_of(e, &coop, &by_new), Status::Applied);
    // 5 seen before, 2 and 1 by the new key; nothing of the old key's 7 or 9.
    assert_eq!(balance(e, &coop, &bob), 8);
    agrees_in_reverse(e, &coop);
}

#[test]
fn only_the_key_holding_the_powers_rotates_them_and_only_to_a_live_device() {
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    let (phone, _) = with_phones(&node, &coop, &alice);
    // A phone of alice's is a device, not the holder.
    let other = keypair(31);
    let proof = other.device_proof(&alice.did());
    let err = e
        .rotate_key(&coop, &dev(&phone), &other.did(), &proof, 5)
        .expect_err("a phone does not rotate");
    assert!(err.to_string().contains("does not hold"), "{err}");
    // Nor the DID key to a key that did not consent.
    let err = e
        .rotate_key(&coop, &dev(&alice), &other.did(), &[7; 64], 5)
        .expect_err("no proof");
    assert!(err.to_string().contains("proof"), "{err}");
    assert_eq!(
        e.read(&coop, |r| coop::key_of(r, &alice.did())).flatten(),
        Some(alice.did()),
        "nothing was written"
    );
    // Written by hand: naming a key that is no live device of alice's, or
    // naming one for someone else, is refused by the permission rules.
    let stranger = keypair(32);
    assert!(
        e.write(&coop, &dev(&alice), |tx| {
            coop::set_member_key(tx, &alice.did(), &stranger.did())
        })
        .is_err()
    );
    assert!(
        e.write(&coop, &dev(&admin), |tx| {
            coop::set_member_key(tx, &alice.did(), &phone.did())
        })
        .is_err(),
        "an admin does not name a member's key"
    );
    assert!(
        e.write(&coop, &dev(&phone), |tx| {
            coop::set_member_key(tx, &alice.did(), &phone.did())
        })
        .is_err(),
        "a device does not name itself"
    );
    // The holder names one of its live devices.
    e.write(&coop, &dev(&alice), |tx| {
        coop::set_member_key(tx, &alice.did(), &phone.did())
    })
    .expect("the DID key names a live device");
    // From then on the DID key is not the owner: it may not grant.
    assert!(
        e.grant_allowance(&coop, &dev(&alice), &bob.did(), "hours", 1)
            .is_err()
    );
    let as_phone = Signer::member_key(alice.did(), phone.clone());
    e.grant_allowance(&coop, &as_phone, &alice.did(), "hours", 3)
        .expect("the phone, now holding the powers, grants to the DID key");
    // That was a rotation stopped half way: run again, it finishes (the
    // old key revokes itself), and then there is nothing left to finish.
    let proof = phone.device_proof(&alice.did());
    let finished = e
        .rotate_key(&coop, &dev(&alice), &phone.did(), &proof, 6)
        .expect("finishes");
    assert_eq!(finished.seal, None, "sealed no second time");
    let reason = e
        .read(&coop, |r| {
            coop::Member::read(r, &alice.did()).expect("member").devices[&alice.did().key_string()]
                .revoked_reason
                .clone()
        })
        .expect("held");
    assert_eq!(reason.as_deref(), Some("retired"));
    assert!(
        e.rotate_key(&coop, &dev(&alice), &phone.did(), &proof, 7)
            .is_err()
    );
}
