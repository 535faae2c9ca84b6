import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const packages = fileURLToPath(new URL("./packages", import.meta.url));

// One config for the whole repository: unit tests next to the code, multi-process suites in test/.
// Workspace packages resolve to their sources, so unit tests need no build; test/ suites spawn the
// built binaries (the test script builds first).
export default defineConfig({
  resolve: {
    // A package's subpath export (`@berth/controller/scaling`) is its src/<name>.ts.
    alias: [
      { find: /^@berth\/([a-z]+)$/, replacement: `${packages}/$1/src/index.ts` },
      { find: /^@berth\/([a-z]+)\/([a-z-]+)$/, replacement: `${packages}/$1/src/$2.ts` },
    ],
  },
  test: {
    include: ["packages/*/src/**/*.test.ts", "test/**/*.test.ts"],
    // One test CA for the run: the suites run with mutual TLS, as the product does.
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Multi-process suites start real etcd and several processes: keep files from starving the 2 cores.
    fileParallelism: false,
    reporters: ["default"],
  },
});
