#!/usr/bin/env node
// The `berth` executable.
import { silenceIpServernameWarning } from "@berth/core";
import { processIo } from "./context.js";
import { run } from "./program.js";

// `berth vm list | head` closes the pipe early: not an error worth a stack trace.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw e;
});

silenceIpServernameWarning();
const code = await run(process.argv.slice(2), processIo());
process.exitCode = code;
// Everything is closed by now; should a handle still hold the event loop, do not hang on it.
setTimeout(() => process.exit(code), 1000).unref();
