/**
 * Vitest's global setup: one test CA for the whole run, with the certificates the multi-process
 * suites hand their daemons pre-issued (issuing takes tens of milliseconds each, and a process
 * started with TLS flags needs its files at once). Its directory reaches every test file through
 * BERTH_TEST_PKI_DIR; certificates not listed here are issued on demand by TestPki.
 */
import { TEST_PKI_DIR_ENV, TestPki } from "../../packages/core/src/pki.testkit.js";
import { PREISSUED } from "./pki.js";

export default async function setup(): Promise<void> {
  const pki = await TestPki.create();
  await pki.preissue(PREISSUED);
  process.env[TEST_PKI_DIR_ENV] = pki.dir;
}
