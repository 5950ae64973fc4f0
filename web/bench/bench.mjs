// The web app's speed (issue 16 §2), against a real icnd in headless
// Chromium on loopback:
// - first load: bytes of JavaScript the page fetched, and the time from
//   navigation to the app being usable, for a first visit (no key yet) and
//   a returning member (key in IndexedDB, logs in, opens the co-op);
// - live push: for each of N payments made from a script, the time from
//   sending the settle to the event arriving in the receiving member's page,
//   and to the new balance being on screen.
// Prints one JSON object. Usage (from web/, after npm ci and a release
// build): ICND=../target/release/icnd node bench/bench.mjs [payments=200]

import WebSocket from "ws";
import { createClient, generateSigner } from "../../sdk/typescript/dist/index.js";
import { startIcnd } from "../../sdk/typescript/test/support/icnd.mjs";
import { launch } from "../test/support/browser.mjs";

const N = Number(process.argv[2] ?? 200);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

const node = await startIcnd();
const browser = await launch();
try {
  // First visit: a fresh browser profile each time (nothing cached, no key).
  const loads = [];
  let firstVisitJs = 0;
  for (let i = 0; i < 5; i++) {
    const fresh = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const p = await fresh.newPage();
    let js = 0;
    p.on("response", async (r) => {
      if (r.request().resourceType() === "script" && r.status() === 200) js += (await r.body()).length;
    });
    await p.goto(`${node.baseUrl}/`);
    await p.waitForSelector("body[data-ready=true]");
    loads.push(await p.evaluate(() => window.icnPerf.ready));
    firstVisitJs = js;
    await fresh.close();
  }

  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await page.goto(`${node.baseUrl}/`);
  await page.waitForSelector("body[data-ready=true]");

  // The member: a key, a co-op with a payer in it.
  await page.getByRole("button", { name: "Create my key" }).click();
  const did = (await page.locator("#my-did").textContent()).trim();
  const { signer: payerKey } = await generateSigner();
  const payer = createClient({ baseUrl: node.baseUrl, WebSocket });
  await payer.authenticate(payerKey);
  await payer.call("POST", "/v1/coops", { id: "bench", default_credit_limit: 1_000_000 });
  await payer.call("POST", "/v1/coops/bench/members", { did });
  await page.reload();
  await page.waitForSelector("body[data-ready=true]");
  await page.getByRole("button", { name: "Open bench" }).click();
  await page.locator("#balances").waitFor();

  // Returning member: key in IndexedDB, co-op remembered.
  const returning = [];
  for (let i = 0; i < 5; i++) {
    await page.reload();
    await page.waitForSelector("body[data-ready=true]");
    await page.locator("#balances .balance").first().waitFor();
    returning.push(await page.evaluate(() => performance.now()));
  }
  await page.locator("#live.open").waitFor();

  // Live push.
  const arrive = [];
  const shown = [];
  for (let i = 0; i < N; i++) {
    const before = await page.evaluate(() => window.icnPerf.events.length);
    const sent = Date.now();
    await payer.settle("bench", { to: did, amount: 1, unit: "hours", memo: `p${i}` });
    await page.waitForFunction(
      (n) => window.icnPerf.events.length > n && window.icnPerf.events.at(-1).shown > 0,
      before,
    );
    const e = await page.evaluate(() => window.icnPerf.events.at(-1));
    arrive.push(e.received - sent);
    shown.push(e.shown - sent);
  }
  await page.locator('#balances [data-unit="hours"] .amount', { hasText: `${N} hours` }).waitFor();
  console.log(
    JSON.stringify({
      js_bytes_first_load: firstVisitJs,
      first_visit_ready_ms: { median: pct(loads, 50), max: Math.max(...loads) },
      returning_member_balances_shown_ms: { median: pct(returning, 50), max: Math.max(...returning) },
      payments: N,
      settle_sent_to_event_in_page_ms: { p50: pct(arrive, 50), p99: pct(arrive, 99), max: Math.max(...arrive) },
      settle_sent_to_balance_on_screen_ms: { p50: pct(shown, 50), p99: pct(shown, 99), max: Math.max(...shown) },
    }),
  );
} finally {
  await browser.close();
  await node.stop();
}
