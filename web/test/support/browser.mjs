// Headless Chromium (Debian's, driven by playwright-core: no browser
// download; Playwright gives it a fresh profile), each member in its own context (its own IndexedDB, its own
// key), every request outside the node it was pointed at recorded.

import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const SHOTS = process.env.ICN_WEB_SCREENSHOTS ?? join(tmpdir(), "icn-web-screenshots");

export async function launch() {
  mkdirSync(SHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A member's page on a phone-sized viewport; `foreign` collects requests
 * to anywhere but `baseUrl`. */
export async function member(browser, baseUrl) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const foreign = [];
  const errors = [];
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.origin !== baseUrl && url.origin !== baseUrl.replace("http", "ws")) foreign.push(r.url());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${baseUrl}/`);
  await page.waitForSelector("body[data-ready=true]");
  return { context, page, foreign, errors };
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}
