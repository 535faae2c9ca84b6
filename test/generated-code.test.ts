import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));

describe("generated code", () => {
  it("packages/api/src/gen matches proto/ (run `npm run gen` after editing a .proto)", () => {
    // Regenerates into a temporary folder with the same buf template and compares; also runs buf lint.
    const out = execFileSync(process.execPath, ["scripts/gen.mjs", "--check"], { cwd: root, encoding: "utf8", stdio: "pipe" });
    expect(out).toContain("up to date");
  }, 60_000);
});
