//! OpenAPI schemas of the identifiers the API shows as strings (feature
//! `openapi`, which the gateway turns on). Each carries the pattern its
//! `FromStr` accepts, so a generated client and a fuzzer see the same rule
//! the server applies, and a format naming it (`did`, `doc-id`, `hash`,
//! `account`): not every string of a DID's pattern is a key on the curve,
//! so a fuzzer generates DIDs by their format (tests/schemathesis).

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};

use crate::ledger::{Account, EntryId};
use crate::{Did, DocId};

/// A base58btc string of 32 bytes: 32 to 44 characters of its alphabet.
pub const BASE58_32: &str = "[1-9A-HJ-NP-Za-km-z]{32,44}";
/// The pattern of a DID.
pub const DID_PATTERN: &str = "^did:icn:[1-9A-HJ-NP-Za-km-z]{32,44}$";
/// The pattern of a document id.
pub const DOC_ID_PATTERN: &str = "^[1-9A-HJ-NP-Za-km-z]{32,44}$";
/// The pattern of an entry id, a blake3 hash, a receipt hash: 64 lowercase hex digits.
pub const HASH_PATTERN: &str = "^[0-9a-f]{64}$";

fn string(format: &str, pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom(format.to_owned())))
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
        .into()
}

macro_rules! string_schema {
    ($ty:ty, $name:literal, $format:literal, $pattern:expr, $description:literal, $example:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($format, $pattern, $description, $example)
            }
        }
        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_schema!(
    Did,
    "Did",
    "did",
    DID_PATTERN,
    "A DID: `did:icn:` and an Ed25519 public key in base58btc.",
    "did:icn:4y8UeDugpmZe21L1Ujoapm8FaHxhRV1M4sZtTXSyZPq2"
);
string_schema!(
    DocId,
    "DocId",
    "doc-id",
    DOC_ID_PATTERN,
    "A document id: 32 bytes in base58btc.",
    "HkPVJhLhTf3h1BtwDfh2sPZtd2qaoN1fCvBYpETw8WA3"
);
string_schema!(
    EntryId,
    "EntryId",
    "hash",
    HASH_PATTERN,
    "A ledger entry's id: the blake3 hash of its canonical bytes, 64 lowercase hex digits.",
    "8f2a33c0e1d4b5a697887766554433221100ffeeddccbbaa9988776655443322"
);
string_schema!(
    Account,
    "Account",
    "account",
    "^(treasury|did:icn:[1-9A-HJ-NP-Za-km-z]{32,44})$",
    "An account: a member's DID, or `treasury`.",
    "treasury"
);
