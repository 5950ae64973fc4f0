// The TypeScript encoder against the Rust one: every vector of
// test/vectors/entries.json (written by schemas/tests/entry_vectors.rs)
// encodes, hashes and signs to the same bytes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { encodeUnsigned, signingMessage, signEntry, signerFromKeyPair, toHex } from "../dist/index.js";

const { vectors } = JSON.parse(readFileSync(new URL("./vectors/entries.json", import.meta.url), "utf8"));

/** A WebCrypto Ed25519 key from a 32-byte seed (PKCS#8 wrapping). */
async function signerFromSeed(seedHex) {
  const pkcs8 = Uint8Array.from(
    ("302e020100300506032b657004220420" + seedHex).match(/../g),
    (h) => parseInt(h, 16),
  );
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  const publicKey = await crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", x: jwk.x }, { name: "Ed25519" }, true, ["verify"]);
  return signerFromKeyPair({ privateKey, publicKey });
}

test("there are vectors of every body a client signs", () => {
  const kinds = new Set(vectors.map((v) => `${v.entry.body.type}${v.entry.body.from_allowance ? "+allowance" : ""}`));
  for (const kind of ["transfer", "transfer+allowance", "grant", "release"]) assert.ok(kinds.has(kind), kind);
});

for (const v of vectors) {
  test(`vector: ${v.name}`, async () => {
    assert.equal(toHex(encodeUnsigned(v.entry)), v.unsigned);
    assert.equal(toHex(signingMessage(v.entry)), v.signing_message);
    const signer = await signerFromSeed(v.signer_seed);
    assert.equal(signer.did, v.entry.signer);
    const signed = await signEntry(v.entry, signer);
    assert.equal(toHex(signed.encoded), v.encoded);
    assert.equal(signed.id, v.id);
  });
}

test("what the encoding forbids is refused before signing", () => {
  const v = vectors[0].entry;
  assert.throws(() => encodeUnsigned({ ...v, coop_heads: [] }));
  assert.throws(() => encodeUnsigned({ ...v, memo: "x".repeat(1025) }));
  assert.throws(() => encodeUnsigned({ ...v, body: { type: "release", unit: "Hours", amount: 1 } }));
  assert.throws(() => encodeUnsigned({ ...v, parents: [v.coop_heads[0], v.coop_heads[0]] }));
});
