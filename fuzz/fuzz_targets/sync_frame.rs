//! Decodes a sync frame from arbitrary bytes, as a peer's stream delivers
//! it. Whatever decodes re-encodes to a frame that decodes to itself, and a
//! session fed the frame (after the peer's `Hello`) either takes it or
//! counts a fault: it never panics, and never ends for anything but faults.
//! A `Doc` frame's Automerge sync message and a `LedgerHave`'s bloom filter
//! are decoded by the session, so their decoders are fuzzed here too.
//!
//! `cargo fuzz run --sanitizer none sync_frame -- -max_total_time=60`

#![no_main]

use icn_fuzz::{fixture, member};
use icn_sync::session::{Session, SessionError};
use icn_sync::wire::Frame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    let again = Frame::decode(&frame.encode()).expect("an encoded frame decodes");
    assert_eq!(again, frame, "encode∘decode is not stable");

    let f = fixture();
    let engine = f.node.engine.clone();
    let mut session = Session::new(
        engine,
        icn_engine::test_utils::keypair(1).did(),
        member().did(),
    );
    session
        .receive(Frame::Hello {
            docs: vec![f.coop.0],
        })
        .expect("a hello is taken");
    match session.receive(frame) {
        Ok(()) | Err(SessionError::TooManyFaults { .. }) => {}
        Err(e) => panic!("the session failed on its own side: {e}"),
    }
    while let Ok(Some(_)) = session.next_frame() {}
});
