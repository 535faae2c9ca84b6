#!/usr/bin/env node
// Regenerates packages/api/src/gen from proto/ with buf and the ts-proto plugin (both from npm).
// `node scripts/gen.mjs --check` regenerates into a temporary folder and fails when the committed
// files differ: the staleness test runs it.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const committed = join(root, "packages/api/src/gen");
const buf = join(root, "node_modules/.bin/buf");
const check = process.argv.includes("--check");

function run(outDir) {
  if (!existsSync(buf)) {
    console.error(`${relative(root, buf)} is missing: run \`npm ci\` first`);
    process.exit(1);
  }
  // Lint first: a proto that fails lint leaves the committed files as they were.
  execFileSync(buf, ["lint"], { cwd: root, stdio: "inherit" });
  rmSync(outDir, { recursive: true, force: true });
  const args = ["generate"];
  if (outDir !== committed) {
    // Same template, other output folder.
    const template = readFileSync(join(root, "buf.gen.yaml"), "utf8").replace(
      "out: packages/api/src/gen",
      `out: ${outDir}`,
    );
    args.push("--template", template);
  }
  execFileSync(buf, args, { cwd: root, stdio: "inherit" });
}

/** Every file below `dir`, as sorted paths relative to it. */
function files(dir, prefix = "") {
  const out = [];
  for (const name of readdirSync(join(dir, prefix))) {
    const rel = join(prefix, name);
    if (statSync(join(dir, rel)).isDirectory()) out.push(...files(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

if (!check) {
  run(committed);
  console.log(`generated ${files(committed).length} files in ${relative(root, committed)}`);
} else {
  const tmp = mkdtempSync(join(tmpdir(), "berth-gen-"));
  try {
    run(tmp);
    const fresh = files(tmp);
    const old = files(committed);
    const stale = [];
    for (const f of new Set([...fresh, ...old])) {
      const a = fresh.includes(f) ? readFileSync(join(tmp, f), "utf8") : undefined;
      const b = old.includes(f) ? readFileSync(join(committed, f), "utf8") : undefined;
      if (a !== b) stale.push(f);
    }
    if (stale.length > 0) {
      console.error(`packages/api/src/gen is stale (${stale.join(", ")}): run \`npm run gen\``);
      process.exit(1);
    }
    console.log("packages/api/src/gen is up to date");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
