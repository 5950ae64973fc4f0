//! Decodes a batch of signed changes from arbitrary bytes and applies it to a
//! co-op. Whatever the bytes, nothing panics, and a refused batch leaves the
//! document and the store exactly as they were.
//!
//! The first byte picks a mode. Odd: the batch is applied as sent, which
//! exercises the decoders and signature checks. Even: every change whose
//! actor is the fixture's member is first re-signed with that member's key,
//! so mutated operations get past the signature and meet the dependency,
//! authority and schema rules.
//!
//! ```sh
//! cargo run -p icn-fuzz --bin seed_corpus    # writes fuzz/corpus/apply_batch/
//! cargo fuzz run --sanitizer none apply_batch -- -max_total_time=60
//! ```

#![no_main]

use icn_engine::change::signing_message;
use icn_engine::decode_batch;
use icn_fuzz::{Fixture, fixture, member};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let Ok(mut batch) = decode_batch(data) else {
        return;
    };
    let Fixture { node, coop } = fixture();
    if mode % 2 == 0 {
        let key = member();
        for sc in &mut batch {
            if let Ok(change) = automerge::Change::from_bytes(sc.change.clone())
                && change.actor_id().to_bytes() == key.did().as_bytes()
            {
                sc.signature = key.sign(&signing_message(coop, &change.hash()));
            }
        }
    }
    let engine = &node.engine;
    let before = engine.heads(coop).expect("fixture exists");
    if engine.apply_remote(coop, batch).is_err() {
        assert_eq!(
            engine.heads(coop).as_ref(),
            Some(&before),
            "a refused batch changed the heads"
        );
        let stored_after = engine.changes_since(coop, &before).expect("store readable");
        assert!(stored_after.is_empty(), "a refused batch stored changes");
    }
});
