// The wallet in two real browsers against a real icnd: keys made in the
// browser, a co-op started and joined by invite, payments each way seen
// live on the other member's page, a payment made offline from an
// allowance and counted on reconnect, a vote, the devices screen. Every main
// screen is kept as a screenshot (ICN_WEB_SCREENSHOTS).

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { createClient, generateSigner } from "../../sdk/typescript/dist/index.js";
import { startIcnd } from "../../sdk/typescript/test/support/icnd.mjs";
import { launch, member, shot } from "./support/browser.mjs";

const ready = (page) => page.waitForSelector("body[data-ready=true]");

test("two members pay each other in two browsers and see it live", async () => {
  const node = await startIcnd();
  // A browser that fails to start must not leave icnd running (the test
  // runner would wait for it forever).
  const browser = await launch().catch(async (e) => {
    await node.stop();
    throw e;
  });
  try {
    // Alice makes her key and starts a co-op.
    const alice = await member(browser, node.baseUrl);
    const a = alice.page;
    await shot(a, "1-welcome");
    // By keyboard: the first stop is the button that makes the key.
    await a.keyboard.press("Tab");
    assert.equal(await a.evaluate(() => document.activeElement.textContent), "Create my key");
    await a.keyboard.press("Enter");
    const aliceDid = (await a.locator("#my-did").textContent()).trim();
    assert.match(aliceDid, /^did:icn:/);
    await a.getByLabel("Co-op id (a-z, 0-9, -)").fill("garden");
    await a.getByLabel("Name").fill("Garden Co-op");
    await a.getByLabel("Credit limit per member").fill("20");
    await a.getByRole("button", { name: "Start it" }).click();
    await a.locator("#coop-name", { hasText: "Garden Co-op" }).waitFor();

    // She invites Bob, who makes his key in his browser and joins.
    await a.getByRole("button", { name: "Members" }).click();
    await a.getByRole("button", { name: "Create an invite code" }).click();
    const code = (await a.locator("#invite-code").textContent()).trim();
    const bob = await member(browser, node.baseUrl);
    const b = bob.page;
    await b.getByRole("button", { name: "Create my key" }).click();
    const bobDid = (await b.locator("#my-did").textContent()).trim();
    await b.getByLabel("Co-op id", { exact: true }).fill("garden");
    await b.getByLabel("Invite code").fill(code);
    await b.getByRole("button", { name: "Join" }).click();
    await b.locator("#application-state", { hasText: "pending" }).waitFor();
    await shot(b, "2-join");
    await a.getByRole("button", { name: "Members" }).click();
    await a.locator("#applications li", { hasText: bobDid }).getByRole("button", { name: "Approve" }).click();
    await a.locator("#applications li", { hasText: bobDid }).filter({ hasText: "approved" }).waitFor();
    await shot(a, "3-members");

    // Bob's key survives a reload (IndexedDB): he opens the co-op.
    await b.reload();
    await ready(b);
    await b.getByRole("button", { name: "Open Garden Co-op" }).click();
    await b.locator("#balances").waitFor();

    // Alice pays Bob; Bob's page shows it without a reload.
    await a.getByRole("button", { name: "Wallet" }).click();
    await a.getByLabel("To (their DID)").fill(bobDid);
    await a.getByLabel("Amount").fill("3");
    await a.getByLabel("Memo").fill("weeding");
    await a.getByRole("button", { name: "Pay", exact: true }).click();
    await b.locator('#balances [data-unit="hours"] .amount', { hasText: /^3 hours$/ }).waitFor();
    await b.locator("#history li", { hasText: "weeding" }).filter({ hasText: "counted" }).waitFor();
    await b.locator("#notice", { hasText: "You were paid" }).waitFor();

    // Bob pays Alice back one; she sees it live.
    await b.getByLabel("To (their DID)").fill(aliceDid);
    await b.getByLabel("Amount").fill("1");
    await b.getByLabel("Memo").fill("seeds");
    await b.getByRole("button", { name: "Pay", exact: true }).click();
    await a.locator('#balances [data-unit="hours"] .amount', { hasText: /^−2 hours$/ }).waitFor();
    await a.locator("#history li", { hasText: "seeds" }).filter({ hasText: "counted" }).waitFor();
    await shot(a, "4-wallet-alice");
    await shot(b, "5-wallet-bob");

    // Beyond her credit limit (20): refused, nothing recorded.
    await a.getByLabel("To (their DID)").fill(bobDid);
    await a.getByLabel("Amount").fill("30");
    await a.getByRole("button", { name: "Pay", exact: true }).click();
    await a.locator("#notice", { hasText: "credit limit" }).waitFor();
    assert.equal(await a.locator("#history li").count(), 2);

    // Bob sets 5 hours aside for this browser, loses the network, and pays
    // Alice 2 from it: queued on his device, pending. Back online, it is
    // sent, counted, and Alice sees it.
    await b.getByLabel("Set aside").fill("5");
    await b.getByRole("button", { name: "Set aside for offline" }).click();
    await b.locator("#allowance", { hasText: "5 hours set aside" }).waitFor();
    await bob.context.setOffline(true);
    await b.getByLabel("To (their DID)").fill(aliceDid);
    await b.getByLabel("Amount").fill("2");
    await b.getByLabel("Memo").fill("offline seeds");
    await b.getByRole("button", { name: "Pay", exact: true }).click();
    await b.locator("#history li", { hasText: "offline seeds" }).filter({ hasText: "pending" }).waitFor();
    await shot(b, "5b-offline-pending");
    assert.equal(await a.locator('#balances [data-unit="hours"] .amount').textContent(), "−2 hours");
    await bob.context.setOffline(false);
    await b.locator("#history li", { hasText: "offline seeds" }).filter({ hasText: "counted" }).waitFor();
    await a.locator('#balances [data-unit="hours"] .amount', { hasText: /^0 hours$/ }).waitFor();
    await a.locator("#history li", { hasText: "offline seeds" }).filter({ hasText: "counted" }).waitFor();

    // Carol joins from a script, attaches a board with all three, and opens
    // a proposal; Bob votes in his browser.
    await a.getByRole("button", { name: "Members" }).click();
    await a.getByRole("button", { name: "Create an invite code" }).click();
    await a.locator("#invite-code", { hasNotText: code }).waitFor();
    const code2 = (await a.locator("#invite-code").textContent()).trim();
    const { signer: carolKey } = await generateSigner();
    const carol = createClient({ baseUrl: node.baseUrl, WebSocket });
    await carol.authenticate(carolKey);
    await carol.call("POST", "/v1/coops/garden/applications", { code: code2 });
    await a.getByRole("button", { name: "Members" }).click();
    await a.locator("#applications li", { hasText: carolKey.did }).getByRole("button", { name: "Approve" }).click();
    await a.locator("#applications li", { hasText: carolKey.did }).filter({ hasText: "approved" }).waitFor();
    await carol.call("POST", "/v1/gov/domains", {
      id: "garden-board",
      coop_id: "garden",
      members: [aliceDid, bobDid, carolKey.did],
    });
    const proposal = await carol.call("POST", "/v1/gov/domains/garden-board/proposals", {
      title: "Buy seeds",
      description: "Twenty packets for spring",
    });
    await carol.call("POST", `/v1/gov/proposals/${proposal.id}/open`);
    await b.getByRole("button", { name: "Proposals" }).click();
    await b.getByRole("group", { name: "Vote on Buy seeds" }).getByRole("button", { name: "for" }).click();
    await b.locator("#proposals li", { hasText: "Buy seeds" }).filter({ hasText: "you voted for" }).waitFor();
    await shot(b, "6-proposals");
    const tally = await carol.call("GET", `/v1/gov/proposals/${proposal.id}/vote`);
    assert.equal(tally.tally.for, 1);

    // Devices: Bob's key and this browser's spending key, live; he revokes
    // the spending key as lost.
    await b.getByRole("button", { name: "Devices" }).click();
    await b.locator("#devices li", { hasText: "This key" }).filter({ hasText: "live" }).waitFor();
    await shot(b, "7-devices");
    const spending = b.locator("#devices li", { hasText: "offline payments" });
    await spending.getByRole("button", { name: "Revoke (lost)" }).click();
    await spending.filter({ hasText: "revoked · lost" }).waitFor();
    // Setting credit aside again makes and registers a new spending key.
    await b.getByRole("button", { name: "Wallet" }).click();
    await b.getByLabel("Set aside").fill("1");
    await b.getByRole("button", { name: "Set aside for offline" }).click();
    await b.locator("#allowance", { hasText: "1 hours set aside" }).waitFor();
    await b.getByRole("button", { name: "Devices" }).click();
    await b.locator("#devices li", { hasText: "offline payments" }).filter({ hasText: "live" }).waitFor();

    // Phone-sized: nothing wider than the screen; every field has a label.
    for (const p of [a, b]) {
      assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= innerWidth));
      assert.equal(await p.locator("input:not(label input), select:not(label select)").count(), 0);
    }
    for (const m of [alice, bob]) {
      assert.deepEqual(m.foreign, [], "no request leaves the node");
      assert.deepEqual(m.errors, [], "no script error");
    }
  } finally {
    await browser.close();
    await node.stop();
  }
});
