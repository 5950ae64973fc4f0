//! What the gateway decodes from a client before it trusts anything: a
//! bearer token, a challenge coming back to `/v1/auth/verify` (a delegation
//! statement) and its signature. None of them panics on any input; an
//! accepted token and a statement that parses are byte for byte what the
//! gateway would write (one canonical form, `device:` line or not), and a
//! challenge verifies only as one this gateway issued, signed by the member
//! or by the device it names.
//!
//! The input is split at its first 0xff byte: token-or-challenge, then
//! signature text.
//!
//! `cargo fuzz run --sanitizer none gateway_auth -- -max_total_time=60`

#![no_main]

use icn_engine::test_utils::keypair;
use icn_gateway::auth::{Authority, decode_signature};
use icn_schemas::Delegation;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(first);
    let signature = String::from_utf8_lossy(second);
    let authority = Authority::new(b"fuzz secret".to_vec(), keypair(9).did(), 3600);

    // An accepted token is exactly the one this gateway issues for its
    // claims: no other bytes carry them.
    if let Ok(token) = authority.check_token(&text, 1_000) {
        assert_eq!(
            authority.encode(&token.claims),
            text,
            "a non-canonical token passed"
        );
    }
    if let Ok(d) = text.parse::<Delegation>() {
        assert_eq!(d.statement(), text, "a statement that parses is canonical");
    }
    let _ = decode_signature(&signature);
    // A challenge that verifies is one this gateway issued, for this
    // member, and the member's signature of its exact text.
    let member = keypair(1).did();
    if let Ok((d, signed)) = authority.verify_challenge(&member, &text, &signature, 1_000) {
        assert_eq!(d.member, member);
        assert_eq!(d.node, keypair(9).did());
        assert_eq!(signed.statement, text);
        assert_eq!(
            signed.verify(),
            Ok(d.clone()),
            "the signature does not hold"
        );
        assert_ne!(
            d.device,
            Some(member),
            "a device line never names the member"
        );
    }
});
