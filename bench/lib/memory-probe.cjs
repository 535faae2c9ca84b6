// Preloaded into a process a benchmark measures (node --expose-gc --require this): on SIGUSR2 it
// runs a full garbage collection and prints the memory use after it on stderr, one line:
//   BERTH_MEMORY {"rss":...,"heapTotal":...,"heapUsed":...,"external":...,"arrayBuffers":...}
// so RSS is read as live memory, not as whatever garbage V8 has not collected yet.
process.on("SIGUSR2", () => {
  if (typeof global.gc === "function") global.gc();
  process.stderr.write(`BERTH_MEMORY ${JSON.stringify(process.memoryUsage())}\n`);
});
