// DIDs: `did:icn:<base58btc(ed25519 public key)>`, as the Rust side writes them.

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/** Base58 (Bitcoin alphabet) of `bytes`. */
export function base58(bytes: Uint8Array): string {
  const digits: number[] = [];
  for (const byte of bytes) {
    let carry = byte;
    for (let i = 0; i < digits.length; i++) {
      carry += digits[i] << 8;
      digits[i] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry > 0) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  let out = "";
  for (const byte of bytes) {
    if (byte !== 0) break;
    out += "1";
  }
  for (let i = digits.length - 1; i >= 0; i--) out += ALPHABET[digits[i]];
  return out;
}

/** The bytes of a base58 string; throws on a character outside the alphabet. */
export function unbase58(text: string): Uint8Array {
  const bytes: number[] = [];
  for (const char of text) {
    let carry = ALPHABET.indexOf(char);
    if (carry < 0) throw new Error(`not base58: ${JSON.stringify(char)}`);
    for (let i = 0; i < bytes.length; i++) {
      carry += bytes[i] * 58;
      bytes[i] = carry & 0xff;
      carry >>= 8;
    }
    while (carry > 0) {
      bytes.push(carry & 0xff);
      carry >>= 8;
    }
  }
  for (const char of text) {
    if (char !== "1") break;
    bytes.push(0);
  }
  return Uint8Array.from(bytes.reverse());
}

/** The DID of a raw 32-byte Ed25519 public key. */
export function didFromPublicKey(raw: Uint8Array): string {
  if (raw.length !== 32) throw new Error(`an Ed25519 public key has 32 bytes, not ${raw.length}`);
  return `did:icn:${base58(raw)}`;
}

/** The raw public key a DID names. */
export function publicKeyOfDid(did: string): Uint8Array {
  if (!did.startsWith("did:icn:")) throw new Error(`not an ICN DID: ${did}`);
  const raw = unbase58(did.slice("did:icn:".length));
  if (raw.length !== 32) throw new Error(`not an Ed25519 key: ${did}`);
  return raw;
}
