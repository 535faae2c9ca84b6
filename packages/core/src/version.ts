import { createRequire } from "node:module";

/**
 * Berth's version, as its packages' package.json says (they are released together): what
 * `--version` prints and what the agent sends in Hello.
 */
export const BERTH_VERSION: string = (createRequire(import.meta.url)("../package.json") as { version: string }).version;
