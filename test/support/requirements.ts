// Suites that need something outside the project (etcd, a libvirtd) say so in one way.
import { describe, it } from "vitest";

/**
 * `describe` for a suite that needs what `missing` says is absent (undefined: nothing is missing).
 * When something is missing the suite is skipped with the reason printed, except in CI
 * (process.env.CI set), where it fails with that reason: CI installs everything.
 */
export function describeRequiring(name: string, missing: string | undefined, body: () => void): void {
  if (missing === undefined) {
    describe(name, body);
    return;
  }
  if (process.env.CI) {
    describe(name, () => {
      it("has what it needs", () => {
        throw new Error(`required in CI: ${missing}`);
      });
    });
    return;
  }
  console.warn(`skipping '${name}': ${missing}`);
  describe.skip(name, body);
}
