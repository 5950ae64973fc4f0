// Builds the web app into dist/ (committed: icnd embeds it, and a fresh
// clone serves it with nothing but cargo). `--check` builds in memory and
// fails when the committed dist/ differs, so dist/ never lags src/.
import * as esbuild from "esbuild";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");

const bundle = await esbuild.build({
  entryPoints: [join(root, "src/app.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  legalComments: "none",
  write: false,
  outfile: join(root, "dist/app.js"),
});
const files = {
  "app.js": bundle.outputFiles[0].contents,
  "index.html": readFileSync(join(root, "src/index.html")),
  "app.css": readFileSync(join(root, "src/app.css")),
};

let stale = [];
for (const [name, contents] of Object.entries(files)) {
  const path = join(root, "dist", name);
  if (check) {
    let committed = null;
    try {
      committed = readFileSync(path);
    } catch {}
    if (!committed || Buffer.compare(committed, Buffer.from(contents)) !== 0) stale.push(name);
  } else {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, contents);
  }
}
if (stale.length) {
  console.error(`web/dist is stale (${stale.join(", ")}): run npm run build in web/ and commit dist/`);
  process.exit(1);
}
console.log(check ? "web/dist matches src/" : `built web/dist (app.js ${files["app.js"].length} bytes)`);
