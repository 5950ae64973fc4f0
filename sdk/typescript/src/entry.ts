// Ledger entries signed on the device: the canonical encoding of
// docs/ledger.md ("Canonical encoding (version 1)"), byte for byte what the
// Rust decoder accepts. test/vectors/entries.json, written by the Rust
// encoder (schemas/tests/entry_vectors.rs), holds the cases both must agree on.

import { blake3 } from "@noble/hashes/blake3.js";
import { publicKeyOfDid, unbase58 } from "./did.js";
import type { Signer } from "./signer.js";

/** A posting: `account` is a member's DID or `"treasury"`. */
export interface Posting {
  account: string;
  unit: string;
  amount: number;
}

/** What an entry a client signs does. */
export type EntryBody =
  | { type: "transfer"; postings: Posting[]; from_allowance: boolean }
  | { type: "grant"; device: string; unit: string; amount: number }
  | { type: "release"; unit: string; amount: number };

/** An entry, before its signature. Hashes are hex; the co-op is its document id (hex or base58). */
export interface EntryFields {
  coop: string;
  parents: string[];
  author: string;
  signer: string;
  /** Unix milliseconds. */
  timestamp: number;
  coop_heads: string[];
  body: EntryBody;
  memo: string;
  decision?: string | null;
}

const CONTEXT = new TextEncoder().encode("icn/entry/v1");

function hexBytes(hex: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`not hex: ${hex}`);
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function hash32(hex: string): Uint8Array {
  const bytes = hexBytes(hex);
  if (bytes.length !== 32) throw new Error(`not a 32-byte hash: ${hex}`);
  return bytes;
}

function compare(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

class Writer {
  private parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 0xff);
  }
  u16(v: number) {
    this.u8(v >> 8);
    this.u8(v);
  }
  bytes(b: Uint8Array) {
    for (const x of b) this.parts.push(x);
  }
  u64(v: bigint) {
    const view = new DataView(new ArrayBuffer(8));
    view.setBigUint64(0, v);
    this.bytes(new Uint8Array(view.buffer));
  }
  i64(v: bigint) {
    const view = new DataView(new ArrayBuffer(8));
    view.setBigInt64(0, v);
    this.bytes(new Uint8Array(view.buffer));
  }
  unit(unit: string) {
    const b = new TextEncoder().encode(unit);
    if (b.length < 1 || b.length > 32 || !/^[a-z0-9][a-z0-9\-_.:]*$/.test(unit)) {
      throw new Error(`not a unit id: ${JSON.stringify(unit)}`);
    }
    this.u8(b.length);
    this.bytes(b);
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

function ascending(hashes: string[], what: string, min: number): Uint8Array[] {
  const out = hashes.map(hash32).sort(compare);
  if (out.length < min || out.length > 64) throw new Error(`${what}: ${min} to 64, not ${out.length}`);
  for (let i = 1; i < out.length; i++) {
    if (compare(out[i - 1], out[i]) === 0) throw new Error(`${what}: twice the same`);
  }
  return out;
}

function coopBytes(coop: string): Uint8Array {
  return /^[0-9a-fA-F]{64}$/.test(coop) ? hexBytes(coop) : unbase58(coop);
}

function accountKey(account: string): Uint8Array {
  // member (tag 0) before treasury (tag 1); members by key bytes
  return account === "treasury" ? Uint8Array.of(1) : Uint8Array.of(0, ...publicKeyOfDid(account));
}

/** Sorts postings as the encoding wants them: by account, then unit. */
export function sortPostings(postings: Posting[]): Posting[] {
  return [...postings].sort(
    (a, b) =>
      compare(accountKey(a.account), accountKey(b.account)) ||
      compare(new TextEncoder().encode(a.unit), new TextEncoder().encode(b.unit)),
  );
}

/** The canonical encoding without the signature. */
export function encodeUnsigned(e: EntryFields): Uint8Array {
  const w = new Writer();
  w.bytes(new TextEncoder().encode("ICNE"));
  w.u8(1);
  const coop = coopBytes(e.coop);
  if (coop.length !== 32) throw new Error("the co-op's document id has 32 bytes");
  w.bytes(coop);
  const parents = ascending(e.parents, "parents", 0);
  w.u8(parents.length);
  parents.forEach((p) => w.bytes(p));
  w.bytes(publicKeyOfDid(e.author));
  w.bytes(publicKeyOfDid(e.signer));
  w.u64(BigInt(e.timestamp));
  const heads = ascending(e.coop_heads, "coop_heads", 1);
  w.u8(heads.length);
  heads.forEach((h) => w.bytes(h));
  const body = e.body;
  switch (body.type) {
    case "transfer": {
      w.u8(body.from_allowance ? 2 : 0);
      const postings = sortPostings(body.postings);
      if (postings.length < 1 || postings.length > 64) throw new Error("1 to 64 postings");
      w.u8(postings.length);
      for (const p of postings) {
        w.bytes(accountKey(p.account));
        w.unit(p.unit);
        if (p.amount === 0) throw new Error("a posting moves a non-zero amount");
        w.i64(BigInt(p.amount));
      }
      break;
    }
    case "grant":
      w.u8(3);
      w.bytes(publicKeyOfDid(body.device));
      w.unit(body.unit);
      w.i64(BigInt(body.amount));
      break;
    case "release":
      w.u8(4);
      w.unit(body.unit);
      w.i64(BigInt(body.amount));
      break;
  }
  const memo = new TextEncoder().encode(e.memo);
  if (memo.length > 1024) throw new Error("a memo has at most 1024 bytes");
  w.u16(memo.length);
  w.bytes(memo);
  if (e.decision) {
    w.u8(1);
    w.bytes(hash32(e.decision));
  } else {
    w.u8(0);
  }
  w.u8(0); // no delegation: the signer is the member's own key
  return w.done();
}

/** What the signer signs: `blake3("icn/entry/v1" ‖ unsigned encoding)`. */
export function signingMessage(e: EntryFields): Uint8Array {
  const unsigned = encodeUnsigned(e);
  const input = new Uint8Array(CONTEXT.length + unsigned.length);
  input.set(CONTEXT);
  input.set(unsigned, CONTEXT.length);
  return blake3(input);
}

/** A signed entry: its canonical bytes and its id (hex). */
export interface SignedEntry {
  encoded: Uint8Array;
  id: string;
}

/** Signs `e` with `signer` (whose DID must be `e.signer`). */
export async function signEntry(e: EntryFields, signer: Signer): Promise<SignedEntry> {
  if (signer.did !== e.signer) throw new Error(`the entry names ${e.signer} as its signer, not ${signer.did}`);
  const unsigned = encodeUnsigned(e);
  const signature = await signer.sign(signingMessage(e));
  const encoded = new Uint8Array(unsigned.length + 64);
  encoded.set(unsigned);
  encoded.set(signature, unsigned.length);
  return { encoded, id: toHex(blake3(encoded)) };
}
