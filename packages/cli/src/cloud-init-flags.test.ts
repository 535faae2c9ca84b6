import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MAX_USER_DATA_BYTES, readCloudInit, readSshKeys, readUserData } from "./cloud-init-flags.js";
import { CliError, ExitCode } from "./exit-codes.js";
import { recordingIo, type RecordingIo } from "./stub-server.testkit.js";

const dir = mkdtempSync(join(tmpdir(), "berth-cloud-init-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4xk0cVkq2mJ3l7Nq0Zk9b5pQ1b0mC2o8t1e4Zq9Q2x me@laptop";
const ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPo= ops";
const SK = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIA== yubikey";

/** An Io whose working directory and $HOME are the test's directory. */
function io(stdin?: string | Uint8Array, interactive = false): RecordingIo {
  const recorded = recordingIo({ HOME: dir }, 1_700_000_000_000, { interactive, ...(stdin !== undefined ? { stdin } : {}) });
  recorded.cwd = dir;
  return recorded;
}

function file(name: string, content: string | Uint8Array): string {
  const path = join(dir, name);
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, content);
  return path;
}

async function usage(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).exitCode).toBe(ExitCode.Usage);
    return (e as Error).message;
  }
  throw new Error("expected a usage error");
}

describe("--ssh-key: a key, @FILE or FILE", () => {
  it("takes a value that reads as a public key literally, whatever files exist", () => {
    expect(readSshKeys(io(), [ED25519, ECDSA, SK])).toEqual([ED25519, ECDSA, SK]);
    // Surrounding blanks (a key pasted with its newline) are trimmed; a key given twice is sent once.
    expect(readSshKeys(io(), [`  ${ED25519}\n`, ED25519])).toEqual([ED25519]);
  });

  it("reads a file's keys, one a line, skipping comments and empty lines; relative to the working directory, ~ as $HOME", () => {
    file("keys/team.pub", `# the team\n${ED25519}\r\n\n   \n${ECDSA}\n`);
    expect(readSshKeys(io(), ["keys/team.pub"])).toEqual([ED25519, ECDSA]);
    expect(readSshKeys(io(), ["~/keys/team.pub"])).toEqual([ED25519, ECDSA]);
    expect(readSshKeys(io(), [join(dir, "keys/team.pub")])).toEqual([ED25519, ECDSA]);
    // In the order given, across values, each key once.
    expect(readSshKeys(io(), [SK, "@keys/team.pub", ED25519])).toEqual([SK, ED25519, ECDSA]);
  });

  it("@PATH is always a file, even one whose name could pass for a key", async () => {
    expect(await usage(() => readSshKeys(io(), ["@missing.pub"]))).toBe("--ssh-key: missing.pub: no such file");
    expect(await usage(() => readSshKeys(io(), ["@"]))).toBe("--ssh-key: '@' needs a file: @PATH");
  });

  it("refuses a value that is neither a key nor a readable file, naming the flag and quoting a bounded prefix", async () => {
    expect(await usage(() => readSshKeys(io(), ["id_ed25519.pub"]))).toBe(
      "--ssh-key: id_ed25519.pub is neither an OpenSSH public key (ssh-ed25519 AAAA..., ecdsa-..., sk-...) nor a readable file (@PATH or PATH)",
    );
    // A key type without its base64 is not a key either.
    expect(await usage(() => readSshKeys(io(), ["ssh-ed25519"]))).toMatch(/^--ssh-key: ssh-ed25519 is neither/);
    const long = await usage(() => readSshKeys(io(), ["x".repeat(5000)]));
    expect(long.length).toBeLessThan(300);
    expect(long).toContain("(5000 characters)");
  });

  it("refuses a private key (never sent), a file with a line that is not a key, a file without keys, a directory", async () => {
    file("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----\n");
    expect(await usage(() => readSshKeys(io(), ["id_ed25519"]))).toBe("--ssh-key: id_ed25519 is a private key; give the public one (id_ed25519.pub)");
    file("mixed.pub", `${ED25519}\nnot a key at all\n`);
    expect(await usage(() => readSshKeys(io(), ["mixed.pub"]))).toBe(
      "--ssh-key: mixed.pub line 2: not an OpenSSH public key (ssh-ed25519 AAAA... comment): not a key at all",
    );
    file("empty.pub", "# nothing here\n\n");
    expect(await usage(() => readSshKeys(io(), ["@empty.pub"]))).toBe(
      "--ssh-key: empty.pub has no public key (one a line; # comments and empty lines are skipped)",
    );
    expect(await usage(() => readSshKeys(io(), ["@keys"]))).toBe("--ssh-key: keys: not a regular file");
  });

  // Root reads any file: there is nothing to refuse then, so the case is skipped (and shown so).
  it.skipIf(process.getuid?.() === 0)("refuses an unreadable file with the reason", async () => {
    const locked = file("locked.pub", `${ED25519}\n`);
    chmodSync(locked, 0o000);
    expect(await usage(() => readSshKeys(io(), ["@locked.pub"]))).toBe("--ssh-key: locked.pub: permission denied");
  });
});

describe("--user-data FILE (- for standard input)", () => {
  it("reads the file as given, up to 64 KiB exactly", async () => {
    const config = "#cloud-config\npackages: [nginx]\n";
    file("web.yaml", config);
    expect(await readUserData(io(), "web.yaml")).toBe(config);
    const atLimit = `#!/bin/sh\n${"x".repeat(MAX_USER_DATA_BYTES - 11)}\n`;
    expect(Buffer.byteLength(atLimit)).toBe(MAX_USER_DATA_BYTES);
    file("big-ok.sh", atLimit);
    expect(await readUserData(io(), "big-ok.sh")).toBe(atLimit);
  });

  it("refuses one byte over 64 KiB, from a file or standard input, saying the limit", async () => {
    file("big.sh", `#!/bin/sh\n${"x".repeat(MAX_USER_DATA_BYTES - 10)}\n`);
    expect(await usage(() => readUserData(io(), "big.sh"))).toMatch(/^--user-data: big\.sh: 65537 bytes is too large: user-data is at most 64 KiB \(65536 bytes; /);
    expect(await usage(() => readUserData(io(`#!/bin/sh\n${"y".repeat(MAX_USER_DATA_BYTES)}`), "-"))).toMatch(
      /^--user-data: standard input: more than 64 KiB: user-data is at most 64 KiB/,
    );
  });

  it("reads standard input for -, saying so on a terminal", async () => {
    const piped = io("#cloud-config\nruncmd: [date]\n");
    expect(await readUserData(piped, "-")).toBe("#cloud-config\nruncmd: [date]\n");
    expect(piped.err).toBe("");
    const typed = io("#cloud-config\n", true);
    await readUserData(typed, "-");
    expect(typed.err).toBe("reading --user-data from standard input (end it with Ctrl-D)...\n");
  });

  it("refuses an empty file, a missing one and bytes that are not UTF-8", async () => {
    file("empty.yaml", "");
    expect(await usage(() => readUserData(io(), "empty.yaml"))).toBe(
      "--user-data: empty.yaml is empty (leave out --user-data for Berth's own #cloud-config: the hostname and the --ssh-key keys)",
    );
    expect(await usage(() => readUserData(io(), "nope.yaml"))).toBe("--user-data: nope.yaml: no such file");
    file("data.gz", new Uint8Array([0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe]));
    expect(await usage(() => readUserData(io(), "data.gz"))).toBe("--user-data: data.gz is not UTF-8 text (compressed or binary user-data cannot be sent)");
  });

  it("takes data cloud-init would not recognise, with a note on stderr (never the content)", async () => {
    file("plain.txt", "hello secret\n");
    const recorded = io();
    expect(await readUserData(recorded, "plain.txt")).toBe("hello secret\n");
    expect(recorded.err).toBe("note: --user-data plain.txt does not start with #cloud-config, #! or a MIME header: cloud-init may ignore it\n");
  });
});

describe("readCloudInit", () => {
  it("no seed without either flag; keys alone leave the user-data to Berth", async () => {
    expect(await readCloudInit(io(), {})).toBeUndefined();
    expect(await readCloudInit(io(), { sshKey: [ED25519] })).toEqual({ sshAuthorizedKeys: [ED25519], userData: "" });
    file("only.yaml", "#cloud-config\n");
    expect(await readCloudInit(io(), { userData: "only.yaml" })).toEqual({ sshAuthorizedKeys: [], userData: "#cloud-config\n" });
  });
});
