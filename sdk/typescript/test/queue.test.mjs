// The offline queue against a real icnd: a phone, registered as its
// member's device and granted an allowance, pays while the node is
// unreachable; the payments wait, then count on reconnect, each once,
// whatever the member's DID key spent meanwhile.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createClient, generateSigner, grantAllowance, OfflineQueue, signEntry, toHex } from "../dist/index.js";
import { startIcnd } from "./support/icnd.mjs";

let node;
before(async () => {
  node = await startIcnd();
});
after(async () => {
  await node?.stop();
});

test("payments signed offline from an allowance count after reconnect", async () => {
  const { signer: alice } = await generateSigner();
  const { signer: phone } = await generateSigner();
  const { signer: bob } = await generateSigner();
  const icn = createClient({ baseUrl: node.baseUrl });
  await icn.authenticate(alice);
  await icn.call("POST", "/v1/coops", { id: "q-coop", default_credit_limit: 50 });
  await icn.call("POST", "/v1/coops/q-coop/members", { did: bob.did });

  // The phone consents to act for alice; alice registers it.
  const proof = await phone.sign(new TextEncoder().encode(`icn-device/v1\n${alice.did}`));
  await icn.call("POST", `/v1/devices/${alice.did}`, { device: phone.did, label: "phone", proof: toHex(proof) });

  // Alice's DID key sets 10 hours aside for the phone: an entry signed here.
  const granted = await grantAllowance(icn, alice, "q-coop", { device: phone.did, unit: "hours", amount: 10 });
  assert.equal(granted.status.status, "applied");

  // The phone logs in for alice, learns what to cite, then loses the node.
  let offline = false;
  const phoneFetch = (url, init) => (offline ? Promise.reject(new TypeError("offline")) : fetch(url, init));
  const phoneClient = createClient({ baseUrl: node.baseUrl, fetch: phoneFetch });
  const session = await phoneClient.authenticate(phone, { member: alice.did });
  assert.equal(session.device, phone.did);
  const queue = new OfflineQueue(phoneClient, { device: phone, member: alice.did });
  await queue.prepare("q-coop");
  offline = true;

  await queue.pay("q-coop", { to: bob.did, amount: 4, unit: "hours", memo: "eggs" });
  await queue.pay("q-coop", { to: bob.did, amount: 5, unit: "hours", memo: "milk" });
  await assert.rejects(queue.pay("q-coop", { to: bob.did, amount: 2, unit: "hours" }), /allowance/);
  let items = await queue.flush();
  assert.deepEqual(items.map((i) => i.state), ["queued", "queued"], "kept while unreachable");

  // Meanwhile alice's DID key spends all its general credit (50, less the
  // 10 set aside), in an entry it signs itself. (Once a member has granted
  // allowances, only its DID key spends general credit: the node's
  // delegated settle would be refused.)
  const now = await icn.call("GET", "/v1/ledger/q-coop/heads");
  const spend = await signEntry(
    {
      coop: now.coop_doc_id,
      parents: now.ledger_heads,
      author: alice.did,
      signer: alice.did,
      timestamp: Date.now(),
      coop_heads: now.coop_heads,
      body: {
        type: "transfer",
        from_allowance: false,
        postings: [
          { account: alice.did, unit: "hours", amount: -40 },
          { account: bob.did, unit: "hours", amount: 40 },
        ],
      },
      memo: "rent",
    },
    alice,
  );
  const spent = await icn.call("POST", "/v1/ledger/q-coop/entries", { bytes: toHex(spend.encoded) });
  assert.equal(spent.status.status, "applied");

  offline = false;
  items = await queue.flush();
  assert.deepEqual(items.map((i) => [i.state, i.reason]), [["applied", undefined], ["applied", undefined]]);
  const again = await queue.flush();
  assert.deepEqual(again.map((i) => i.state), ["applied", "applied"], "nothing sent twice");
  const bobs = await icn.position("q-coop", bob.did);
  assert.equal(bobs.positions.find((p) => p.unit === "hours").balance, 49);
  const tb = await icn.call("GET", "/v1/ledger/q-coop/trial-balance");
  assert.equal(tb.conflicted.length, 0, JSON.stringify(tb.conflicted));
});
