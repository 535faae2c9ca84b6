/**
 * Certificates for the processes the multi-process suites start: every daemon and CLI run with
 * mutual TLS unless a test asks for `--insecure`. The files come from the run-wide test PKI that
 * test/support/global-setup.ts makes (see TestPki).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { TLS_ENV, type PeerRole, type TlsFiles } from "@berth/core";
import { TEST_PKI_DIR_ENV } from "../../packages/core/src/pki.testkit.js";

/** The certificates pre-issued for the whole run: the names the suites' processes use. */
export const PREISSUED: readonly { role: PeerRole; name: string }[] = [
  { role: "controller", name: "controller" },
  { role: "admin", name: "admin" },
  { role: "viewer", name: "viewer" },
  ...Array.from({ length: 24 }, (_, i) => ({ role: "host" as const, name: `host-${i + 1}` })),
  ...Array.from({ length: 4 }, (_, i) => ({ role: "host" as const, name: `hv-${i + 1}` })),
  { role: "host", name: "lv-a" },
  { role: "host", name: "lv-b" },
];

/** The files of a pre-issued certificate. Throws, naming the list to extend, for one that is not. */
export function tlsFiles(role: PeerRole, name: string): TlsFiles {
  const dir = process.env[TEST_PKI_DIR_ENV];
  if (!dir) throw new Error(`${TEST_PKI_DIR_ENV} is not set: run the suites through vitest (its global setup makes the test PKI)`);
  const files = { ca: join(dir, "ca.crt"), cert: join(dir, `${role}-${name}.crt`), key: join(dir, `${role}-${name}.key`) };
  if (!existsSync(files.cert)) throw new Error(`no pre-issued test certificate for ${role} '${name}': add it to PREISSUED in test/support/pki.ts`);
  return files;
}

/** BERTH_TLS_* for a process that is `role`/`name`. */
export function tlsEnv(role: PeerRole, name: string): Record<string, string> {
  const f = tlsFiles(role, name);
  return { [TLS_ENV.ca]: f.ca, [TLS_ENV.cert]: f.cert, [TLS_ENV.key]: f.key };
}

/** `--tls-ca/--tls-cert/--tls-key` for a process that is `role`/`name`. */
export function tlsArgs(role: PeerRole, name: string): string[] {
  const f = tlsFiles(role, name);
  return ["--tls-ca", f.ca, "--tls-cert", f.cert, "--tls-key", f.key];
}
