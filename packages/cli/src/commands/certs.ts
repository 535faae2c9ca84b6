import { resolve } from "node:path";
import {
  DEFAULT_CONTROLLER_SANS,
  DEFAULT_LEAF_DAYS,
  ErrorCode,
  initPkiDirectory,
  isBerthError,
  issueToDirectory,
  MAX_CERTIFICATE_DAYS,
  PKI_FILES,
  type PeerRole,
} from "@berth/core";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { usageError } from "../exit-codes.js";
import { parseInteger } from "../parse.js";
import { render, type OutputFormat } from "../output.js";

// `berth certs`: files only. No verb here makes a call, so none asks the context for a client.

/** The flags and environment variables every daemon and the CLI read their TLS files from. */
const TLS_FLAGS = "--tls-ca FILE --tls-cert FILE --tls-key FILE";
const TLS_ENV_NAMES = "BERTH_TLS_CA, BERTH_TLS_CERT, BERTH_TLS_KEY";

/** The flag or argument a core field is typed as. */
const FLAG_OF_FIELD: Readonly<Record<string, string>> = { name: "NAME", sans: "--san", days: "--days", role: "--role" };

/** A core INVALID_ARGUMENT (bad input) as a usage error (exit 2) naming the flag; anything else as it is. */
async function withFlags<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!isBerthError(e, ErrorCode.InvalidArgument)) throw e;
    const field = e.field ?? "";
    const flag = FLAG_OF_FIELD[field.split(/[.[]/)[0] ?? ""];
    throw usageError(flag && e.message.startsWith(field) ? `${flag}${e.message.slice(field.length)}` : e.message);
  }
}

/** `--san a,b --san c`: each value split on commas. */
const collectSans = (value: string, previous: string[] | undefined): string[] => [
  ...(previous ?? []),
  ...value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== ""),
];

const parseDays = (text: string): number => parseInteger(text, "--days", 1, MAX_CERTIFICATE_DAYS);

interface CommonFlags {
  dir: string;
  days?: string;
  force?: boolean;
}

const dirOption = (): Option => new Option("--dir <dir>", "the PKI directory (made 0700 if missing): ca.crt and ca.key live there").makeOptionMandatory();
const daysOption = (what: string): Option => new Option("--days <n>", `${what} (default: ${DEFAULT_LEAF_DAYS})`);
const forceOption = (): Option => new Option("--force", "replace files that exist (without it, nothing is written when one does: exit 6)");

const EXIT_CODES = `Exit codes: 0 written; 2 bad input (a name, a SAN, --days, --role); 6 a file exists
(without --force) or DIR has no usable CA; see berth --help.`;

export function registerCertsCommands(program: Command, ctx: CliContext): void {
  const output = (cmd: Command): OutputFormat => cmd.optsWithGlobals<{ output?: OutputFormat }>().output ?? "table";

  /** Prints what was written, then (tables only) the next step; `-o name`: the files written. */
  const report = (cmd: Command, written: readonly string[], next: string): void => {
    const format = output(cmd);
    // -o json stays one line, as it always was.
    if (format === "json") {
      ctx.io.stdout(`${JSON.stringify({ written })}\n`);
      return;
    }
    ctx.io.stdout(render(format, { data: () => ({ written }), table: () => `${written.map((p) => `wrote ${p}\n`).join("")}\n${next}`, names: () => written }));
  };

  const certs = program
    .command("certs")
    .description("Make the CA and the certificates of Berth's mutual TLS (files only: no call to the controller)")
    .addHelpText(
      "after",
      `
Every Berth connection is mutual TLS with certificates from one CA. A certificate says who its
holder is: subject CN = the name (a host's id, an operator's or a controller's name), subject
O = the role: berth:controller, berth:host, berth:admin (read and change) or berth:viewer
(read and watch). ECDSA P-256 keys (PKCS#8 PEM, mode 0600), certificates mode 0644; a file that
exists is never replaced without --force.

How:
  1. berth certs init --dir DIR                      the CA, and the first controller's certificate
  2. berth certs issue host HOST_ID --dir DIR        one per agent; its CN is the host id
  3. berth certs issue operator NAME --role admin --dir DIR    one per person (or --role viewer)
  4. start each daemon, and run berth, with ${TLS_FLAGS}
     (or ${TLS_ENV_NAMES} in the environment)

Keep DIR/ca.key on the machine that issues certificates: whoever holds it can make any identity.

Examples:
  berth certs init --dir ./pki --san 127.0.0.1,ctl-1.lab
  berth certs issue host host-1 --dir ./pki
  berth certs issue operator alice --role admin --dir ./pki
  berth certs issue controller ctl-2 --san 10.0.0.2,ctl-2.lab --dir ./pki

${EXIT_CODES}`,
    );

  certs
    .command("init")
    .description("Make a CA and the first controller's certificate in DIR: ca.crt, ca.key, controller.crt, controller.key")
    .addOption(dirOption())
    .addOption(
      new Option(
        "--san <list>",
        `the controller's addresses and DNS names, comma-separated or repeated (default: ${DEFAULT_CONTROLLER_SANS.join(",")})`,
      ).argParser(collectSans),
    )
    .addOption(daysOption("validity of the controller's certificate in days; the CA's is 10 years (or a day longer than this)"))
    .addOption(forceOption())
    .addHelpText(
      "after",
      `
The CA's certificate and key are DIR/ca.crt and DIR/ca.key; the controller's certificate
(CN controller, O berth:controller) serves and calls, and names every --san: clients check the
address they dial against them, so list each IP address and DNS name the controller is reached by.
With --force everything is replaced, the CA too: certificates it issued stop being trusted.

${EXIT_CODES}

Examples:
  berth certs init --dir ./pki
  berth certs init --dir /etc/berth/pki --san 10.0.0.1,ctl-1.lab --days 90`,
    )
    .action(async (flags: CommonFlags & { san?: string[] }, cmd: Command) => {
      const dir = resolve(ctx.io.cwd, flags.dir);
      const written = await withFlags(() =>
        initPkiDirectory(dir, {
          ...(flags.san !== undefined ? { sans: flags.san } : {}),
          ...(flags.days !== undefined ? { days: parseDays(flags.days) } : {}),
          force: flags.force === true,
        }),
      );
      const file = (f: string): string => resolve(dir, f);
      report(
        cmd,
        written,
        `Next: start the controller with
  --tls-ca ${file(PKI_FILES.caCert)} --tls-cert ${file(PKI_FILES.controllerCert)} --tls-key ${file(PKI_FILES.controllerKey)}
(or set ${TLS_ENV_NAMES} to those files); then issue a certificate per host and operator:
  berth certs issue host HOST_ID --dir ${dir}
  berth certs issue operator NAME --role admin|viewer --dir ${dir}
Keep ${file(PKI_FILES.caKey)} private: whoever holds it can make any identity.
`,
      );
    });

  const issue = certs
    .command("issue")
    .description("Issue a certificate with DIR's CA: for a host, an operator, or another controller")
    .addHelpText(
      "after",
      `
Writes DIR/NAME.key (mode 0600) and DIR/NAME.crt (0644), signed by DIR/ca.crt and DIR/ca.key
(run 'berth certs init --dir DIR' first). A certificate may not outlive the CA.

  host NAME                         an agent: CN = its host id, O = berth:host (client only)
  operator NAME --role admin|viewer a person running berth: O = berth:admin or berth:viewer
  controller NAME --san LIST        another controller (one certificate each): server and client

${EXIT_CODES}

Examples:
  berth certs issue host host-1 --dir ./pki
  berth certs issue operator alice --role admin --dir ./pki
  berth certs issue controller ctl-2 --san 10.0.0.2,ctl-2.lab --dir ./pki`,
    );

  /** Issues one certificate into the directory and reports it. */
  const issueAction = async (cmd: Command, role: PeerRole, name: string, flags: CommonFlags, sans: string[] | undefined, next: (files: { ca: string; cert: string; key: string }) => string) => {
    const dir = resolve(ctx.io.cwd, flags.dir);
    const written = await withFlags(() =>
      issueToDirectory(dir, {
        role,
        name,
        ...(sans !== undefined ? { sans } : {}),
        ...(flags.days !== undefined ? { days: parseDays(flags.days) } : {}),
        force: flags.force === true,
      }),
    );
    report(cmd, written, next({ ca: resolve(dir, PKI_FILES.caCert), cert: resolve(dir, `${name}.crt`), key: resolve(dir, `${name}.key`) }));
  };
  const tlsFlags = (f: { ca: string; cert: string; key: string }): string => `--tls-ca ${f.ca} --tls-cert ${f.cert} --tls-key ${f.key}`;

  issue
    .command("host")
    .description("Issue an agent's certificate: CN = the host id, O = berth:host")
    .argument("<name>", "the host id the agent runs as (a lower-case DNS label: letters, digits, '-')")
    .addOption(dirOption())
    .addOption(daysOption("validity in days"))
    .addOption(forceOption())
    .addHelpText(
      "after",
      `
A host's certificate lets its agent act only as the host its CN names: the agent must run with
that host id. It is a client certificate (clientAuth), with the host id as a DNS SAN.

${EXIT_CODES}

Examples:
  berth certs issue host host-1 --dir ./pki
  berth certs issue host host-1 --dir ./pki --days 30 --force    # renew`,
    )
    .action(async (name: string, flags: CommonFlags, cmd: Command) =>
      issueAction(cmd, "host", name, flags, undefined, (f) =>
        `Next: copy ${f.ca}, ${f.cert} and ${f.key} to host ${name} (the key stays private to it),
and start its agent, as host id ${name}, with
  ${tlsFlags(f)}
(or set ${TLS_ENV_NAMES} to those files).
`,
      ),
    );

  issue
    .command("operator")
    .description("Issue a person's certificate for berth: O = berth:admin (read and change) or berth:viewer (read and watch)")
    .argument("<name>", "the operator's name: 1-64 letters, digits, '.', '_' or '-'")
    .addOption(new Option("--role <role>", "admin: read and change; viewer: read and watch").choices(["admin", "viewer"]).makeOptionMandatory())
    .addOption(dirOption())
    .addOption(daysOption("validity in days"))
    .addOption(forceOption())
    .addHelpText(
      "after",
      `
${EXIT_CODES}

Examples:
  berth certs issue operator alice --role admin --dir ./pki
  berth certs issue operator ci-bot --role viewer --dir ./pki --days 30`,
    )
    .action(async (name: string, flags: CommonFlags & { role: "admin" | "viewer" }, cmd: Command) =>
      issueAction(cmd, flags.role, name, flags, undefined, (f) =>
        `Next: run berth with these files, as flags
  berth ${tlsFlags(f)} host list
or in the environment:
  export BERTH_TLS_CA=${f.ca} BERTH_TLS_CERT=${f.cert} BERTH_TLS_KEY=${f.key}
`,
      ),
    );

  issue
    .command("controller")
    .description("Issue another controller's certificate (one per controller): O = berth:controller, server and client")
    .argument("<name>", "the controller's name (its CN and file name): 1-64 letters, digits, '.', '_' or '-'")
    .addOption(new Option("--san <list>", "the addresses and DNS names it is reached by, comma-separated or repeated").argParser(collectSans).makeOptionMandatory())
    .addOption(dirOption())
    .addOption(daysOption("validity in days"))
    .addOption(forceOption())
    .addHelpText(
      "after",
      `
Clients and the other controllers check the address they dial against the SANs: list every IP
address and DNS name this controller is reached by.

${EXIT_CODES}

Example:
  berth certs issue controller ctl-2 --san 10.0.0.2,ctl-2.lab --dir ./pki`,
    )
    .action(async (name: string, flags: CommonFlags & { san: string[] }, cmd: Command) =>
      issueAction(cmd, "controller", name, flags, flags.san, (f) =>
        `Next: copy ${f.ca}, ${f.cert} and ${f.key} to controller ${name}, and start it with
  ${tlsFlags(f)}
(or set ${TLS_ENV_NAMES} to those files).
`,
      ),
    );
}
