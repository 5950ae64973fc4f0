// Fails when src/schema.ts is not what the committed OpenAPI document
// generates (`npm run gen` rewrites it): the SDK's types follow the spec.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const out = join(mkdtempSync(join(tmpdir(), "icn-schema-")), "schema.ts");
execFileSync(
  process.execPath,
  [join(root, "node_modules/openapi-typescript/bin/cli.js"), join(root, "../../docs/api/openapi.json"), "-o", out],
  { stdio: "ignore" },
);
if (readFileSync(join(root, "src/schema.ts"), "utf8") !== readFileSync(out, "utf8")) {
  console.error("src/schema.ts is not what docs/api/openapi.json generates: run npm run gen");
  process.exit(1);
}
console.log("src/schema.ts matches docs/api/openapi.json");
