// @icn/client against a real icnd: log in with a WebCrypto key, typed
// calls, errors, retries, token renewal, and live events that survive a
// dropped socket without gaps or repeats.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createClient, generateSigner, IcnError, base58, unbase58, didFromPublicKey, publicKeyOfDid } from "../dist/index.js";
import { startIcnd } from "./support/icnd.mjs";

let node;
before(async () => {
  node = await startIcnd({ tokenSeconds: 4 });
});
after(async () => {
  await node?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(20);
  }
}

test("base58 and DIDs match the Rust side", () => {
  // did:icn of the all-zero key, as icn_schemas::Did writes it.
  assert.equal(didFromPublicKey(new Uint8Array(32)), "did:icn:11111111111111111111111111111111");
  const bytes = Uint8Array.from([0, 0, 1, 2, 255, 254, 7]);
  assert.deepEqual(unbase58(base58(bytes)), bytes);
  assert.throws(() => unbase58("0OIl"));
  const key = crypto.getRandomValues(new Uint8Array(32));
  assert.deepEqual(publicKeyOfDid(didFromPublicKey(key)), key);
});

test("a member logs in, pays, retries safely, renews its token and follows events", async () => {
  const { signer: alice } = await generateSigner();
  const { signer: bob } = await generateSigner();
  const client = createClient({ baseUrl: node.baseUrl, WebSocket, refreshMarginSeconds: 2 });
  const session = await client.authenticate(alice);
  assert.equal(session.did, alice.did);
  assert.equal(session.token.split(".").length, 3);

  // Typed calls on the generated paths.
  const created = await client.api.POST("/v1/coops", {
    body: { id: "sdk-coop", default_credit_limit: 20 },
  });
  assert.equal(created.response.status, 201, JSON.stringify(created.error));
  await client.call("POST", "/v1/coops/sdk-coop/members", { did: bob.did });
  const coop = await client.api.GET("/v1/coops/{id}", { params: { path: { id: "sdk-coop" } } });
  assert.equal(coop.data.id, "sdk-coop");
  // A list, one item per page, walked to its end.
  const members = [];
  for await (const m of client.items("/v1/coops/sdk-coop/members", { limit: 1 })) members.push(m.did);
  assert.deepEqual(members.sort(), [alice.did, bob.did].sort());

  const events = [];
  const states = [];
  const sub = client.subscribe("sdk-coop", {
    onEvent: (e) => events.push(e),
    onState: (s) => states.push(s),
  });
  await until("the subscription opens", () => states.includes("open"));

  const paid = await client.settle("sdk-coop", { to: bob.did, amount: 5, unit: "hours", memo: "bread" });
  assert.equal(paid.status.status, "applied");
  await until("the settlement is pushed", () => events.some((e) => e.event === "SettlementCreated"));

  // A retried write with the same Idempotency-Key pays once.
  const key = crypto.randomUUID();
  const once = await client.settle("sdk-coop", { to: bob.did, amount: 1, unit: "hours" }, { idempotencyKey: key });
  const again = await client.settle("sdk-coop", { to: bob.did, amount: 1, unit: "hours" }, { idempotencyKey: key });
  assert.equal(again.entry_id, once.entry_id);

  // Refusals are IcnError with the gateway's status and message.
  await assert.rejects(
    client.settle("sdk-coop", { to: bob.did, amount: 1000, unit: "hours" }),
    (e) => e instanceof IcnError && e.status === 422 && /credit/.test(e.message),
  );

  // The socket drops; payments go on meanwhile; the subscription comes
  // back and delivers what it missed, each event once, in order.
  sub.drop();
  await until("it notices", () => states.includes("reconnecting"));
  await client.settle("sdk-coop", { to: bob.did, amount: 2, unit: "hours" });
  await client.settle("sdk-coop", { to: bob.did, amount: 3, unit: "hours" });
  await until("it catches up", () => events.filter((e) => e.event === "SettlementCreated").length >= 4);
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "in order");
  assert.equal(new Set(seqs).size, seqs.length, "never twice");
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `no gap at ${seqs[i]}`);

  // Tokens last 4 s here and renew 2 s before they expire: calls go on.
  const first = client.current.token;
  await sleep(2500);
  const position = await client.position("sdk-coop", alice.did);
  assert.equal(position.positions.find((p) => p.unit === "hours").balance, -11);
  assert.notEqual(client.current.token, first, "renewed");
  sub.close();
  await until("closed", () => states.at(-1) === "closed");
});

test("a bad login is refused with the gateway's error", async () => {
  const { signer } = await generateSigner();
  const liar = { did: signer.did, sign: async () => new Uint8Array(64) };
  const client = createClient({ baseUrl: node.baseUrl });
  await assert.rejects(client.authenticate(liar), (e) => e instanceof IcnError && e.status === 401);
});
