// A real icnd for the tests: its own data directory, free ports, stopped
// with SIGTERM. ICND names the binary (default: the workspace's debug build).

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
    server.on("error", fail);
  });
}

export async function startIcnd({ tokenSeconds } = {}) {
  const bin = process.env.ICND ?? resolve(import.meta.dirname, "../../../../target/debug/icnd");
  const dir = mkdtempSync(join(tmpdir(), "icn-sdk-"));
  const port = await freePort();
  const metrics = await freePort();
  const config = join(dir, "icn.toml");
  writeFileSync(
    config,
    `[gateway]\n${tokenSeconds ? `token_ttl_seconds = ${tokenSeconds}\n` : ""}rate_burst = 10000\nrate_per_second = 10000\n`,
  );
  const child = spawn(
    bin,
    [
      "--config", config,
      "--data-dir", join(dir, "data"),
      "--gateway-bind", `127.0.0.1:${port}`,
      "--listen-addr", "127.0.0.1:0",
      "--metrics-port", String(metrics),
    ],
    {
      env: { ...process.env, ICN_KEYSTORE_PASSPHRASE: "sdk tests", RUST_LOG: "warn" },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let log = "";
  child.stderr.on("data", (d) => (log += d));
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`icnd exited: ${log}`);
    try {
      if ((await fetch(`${baseUrl}/v1/health`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`icnd did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    baseUrl,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    },
  };
}
