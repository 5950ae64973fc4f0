// Keys that sign for a member: WebCrypto Ed25519, in the browser and in Node.

import { didFromPublicKey } from "./did.js";

/** What signs a login challenge (and, later, entries): a device's key. */
export interface Signer {
  /** The key's DID (`did:icn:…`). */
  readonly did: string;
  /** An Ed25519 signature of `message`. */
  sign(message: Uint8Array): Promise<Uint8Array>;
}

/** A signer over a WebCrypto Ed25519 key pair. */
export async function signerFromKeyPair(keys: CryptoKeyPair): Promise<Signer> {
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
  const did = didFromPublicKey(raw);
  return {
    did,
    async sign(message: Uint8Array): Promise<Uint8Array> {
      const data = new Uint8Array(message); // a plain ArrayBuffer view
      return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, keys.privateKey, data));
    },
  };
}

/**
 * A new device key. Non-extractable by default: the private key never leaves
 * WebCrypto (keep the `CryptoKeyPair` in IndexedDB to keep the device).
 */
export async function generateSigner(extractable = false): Promise<{ signer: Signer; keys: CryptoKeyPair }> {
  const keys = (await crypto.subtle.generateKey({ name: "Ed25519" }, extractable, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  return { signer: await signerFromKeyPair(keys), keys };
}
