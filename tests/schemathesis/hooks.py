"""Schemathesis hooks for ICN: real DIDs, and wasm bodies.

Not every string of a DID's pattern is an Ed25519 key, so DIDs (the `did`
format of the OpenAPI document) come from the pool the test harness passes
in ICN_DIDS: the caller, its co-op's members, and keys no one registered.
"""

import os

import schemathesis
from hypothesis import strategies as st

DIDS = [d for d in os.environ.get("ICN_DIDS", "").split(",") if d]
if DIDS:
    schemathesis.openapi.format("did", st.sampled_from(DIDS))

schemathesis.openapi.media_type("application/wasm", st.binary(max_size=64))
