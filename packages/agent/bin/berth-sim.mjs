#!/usr/bin/env node
// Launcher kept in the repository so npm can link the command at install time, before the first
// build; the program itself is dist/sim-main.js.
try {
  await import("../dist/sim-main.js");
} catch (e) {
  if (e?.code === "ERR_MODULE_NOT_FOUND" && String(e.message).includes("dist/sim-main.js")) {
    process.stderr.write("berth-sim: not built yet: run `npm run build` in the Berth checkout\n");
    process.exit(1);
  }
  throw e;
}
