//! Decodes a ledger entry from arbitrary bytes. Whatever decodes re-encodes
//! to exactly the same bytes (one canonical encoding) with the same id, and
//! ingesting it into a co-op either stores it or leaves the ledger as it was.
//!
//! `cargo fuzz run --sanitizer none entry_decode -- -max_total_time=60`

#![no_main]

use icn_fuzz::fixture;
use icn_schemas::ledger::SignedEntry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok((entry, id)) = SignedEntry::decode(data) else {
        return;
    };
    let encoded = entry.encode().expect("a decoded entry encodes");
    assert_eq!(encoded, data, "decode∘encode is not the identity");
    assert_eq!(entry.id().expect("encodes"), id);

    let f = fixture();
    let engine = &f.node.engine;
    let before = engine.trial_balance(&f.coop).expect("ledger");
    let result = engine
        .ingest_entries(&f.coop, vec![data.to_vec()])
        .expect("the co-op exists")
        .remove(0);
    if result.is_err() {
        assert_eq!(
            engine.trial_balance(&f.coop).expect("ledger"),
            before,
            "a refused entry changed the ledger"
        );
    }
});
