// @icn/client: the ICN gateway for apps and wallets.

export { createClient, IcnClient, IcnError } from "./client.js";
export type {
  AuthOptions,
  ClientOptions,
  IcnEvent,
  Session,
  SubscribeHandlers,
  Schema,
  SubscribeOptions,
  Subscription,
  WebSocketCtor,
  WebSocketLike,
} from "./client.js";
export { generateSigner, signerFromKeyPair } from "./signer.js";
export type { Signer } from "./signer.js";
export { base58, unbase58, didFromPublicKey, publicKeyOfDid } from "./did.js";
export type { paths, components } from "./schema.js";
export { encodeUnsigned, signingMessage, signEntry, sortPostings, toHex } from "./entry.js";
export type { EntryBody, EntryFields, Posting, SignedEntry } from "./entry.js";
export { OfflineQueue, grantAllowance, memoryStore } from "./queue.js";
export type { OfflineQueueOptions, QueueStore, Queued } from "./queue.js";
