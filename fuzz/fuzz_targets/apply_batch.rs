//! Decodes a batch of signed changes from arbitrary bytes and applies it to a
//! co-op. Whatever the bytes, nothing panics, and a refused batch leaves the
//! document and the store exactly as they were.
//!
//! `cargo fuzz run --sanitizer none apply_batch -- -max_total_time=60`

#![no_main]

use std::sync::OnceLock;

use icn_engine::test_utils::{TestNode, keypair, new_coop};
use icn_engine::{Signer, decode_batch};
use icn_schemas::{DocId, coop};

struct Fixture {
    node: TestNode,
    coop: DocId,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let node = TestNode::new();
        let admin = keypair(1);
        let signer = Signer::Device(admin.clone());
        let coop = node
            .engine
            .create_coop(&signer, &new_coop(&admin))
            .expect("create");
        node.engine
            .write(&coop, &signer, |tx| {
                coop::add_member(tx, &keypair(2).did(), coop::Role::Member, 1)
            })
            .expect("add member");
        Fixture { node, coop }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(batch) = decode_batch(data) else {
        return;
    };
    let f = fixture();
    let engine = &f.node.engine;
    let before = engine.heads(&f.coop).expect("fixture exists");
    if engine.apply_remote(&f.coop, batch).is_err() {
        assert_eq!(
            engine.heads(&f.coop).as_ref(),
            Some(&before),
            "a refused batch changed the heads"
        );
        let stored_after = engine
            .changes_since(&f.coop, &before)
            .expect("store readable");
        assert!(stored_after.is_empty(), "a refused batch stored changes");
    }
});
