import { readFileSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import type { CloudInit } from "@berth/api";
import { formatBytes, Limits, quote } from "@berth/core";
import type { Io } from "./context.js";
import { CliError, usageError } from "./exit-codes.js";

// `vm create --ssh-key` and `--user-data` (and the same flags of `berth plan`): what cloud-init is
// given, read from the operator's files on this machine. The controller and the hosts never see the
// files, only what is read here, so every file error is reported by the CLI, naming the flag.

/** The largest user-data: core's bound on CloudInit.user_data, in bytes of UTF-8. */
export const MAX_USER_DATA_BYTES = Limits.maxUserDataBytes;

/**
 * The largest file `--ssh-key` reads: a file of as many keys of the longest kind as a seed takes
 * (32 of 8 KiB), with room for comments. Anything larger is not a key file (a disk image given by
 * mistake) and is not read into memory. Counts and lengths of the keys themselves are core's rules.
 */
export const MAX_SSH_KEY_FILE_BYTES = 2 * Limits.maxSshKeys * Limits.maxSshKeyBytes;

/**
 * One OpenSSH public key line: its type (`ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`,
 * `sk-ssh-ed25519@openssh.com`, certificates `...-cert-v01@openssh.com`), the base64 blob, and an
 * optional comment. The types are those cloud-init and the controller take (`ssh-`, `ecdsa-`,
 * `sk-`); an authorized_keys line with options before the type (`from="..." ssh-ed25519 ...`) is not
 * a key cloud-init's public-keys takes.
 */
const PUBLIC_KEY_LINE = /^(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+[ \t]+[A-Za-z0-9+/]+={0,3}(?:[ \t]+\S.*)?$/;

/** Whether `text` (one line, trimmed) is an OpenSSH public key. */
export const isPublicKeyLine = (text: string): boolean => PUBLIC_KEY_LINE.test(text);

/** What the first bytes of user-data say it is, for cloud-init (else it ignores the data). */
const USER_DATA_FORMATS = ["#cloud-config", "#!", "Content-Type:", "#include", "#cloud-boothook", "## template: jinja", "#part-handler"];

/** `~/x` (and `~`) under `$HOME`, then relative to the working directory: the shell's reading of a path. */
function localPath(io: Io, path: string): string {
  const home = io.env["HOME"];
  const expanded = home && (path === "~" || path.startsWith("~/")) ? `${home}${path.slice(1)}` : path;
  return isAbsolute(expanded) ? expanded : resolve(io.cwd, expanded);
}

/** Why a local file cannot be read, in words (`no such file`, `permission denied`...). */
function whyUnreadable(e: unknown): string {
  const code = (e as { code?: string } | undefined)?.code;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return e instanceof Error ? e.message : String(e);
  }
}

/** The bytes of a regular file of at most `maxBytes`; a usage error naming `flag` otherwise. */
function readBoundedFile(io: Io, flag: string, path: string, maxBytes: number, tooLarge: (size: number) => string): Buffer {
  const full = localPath(io, path);
  let size: number;
  try {
    const stat = statSync(full);
    if (!stat.isFile()) throw usageError(`${flag}: ${quote(path, 256)}: not a regular file`);
    size = stat.size;
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw usageError(`${flag}: ${quote(path, 256)}: ${whyUnreadable(e)}`);
  }
  if (size > maxBytes) throw usageError(`${flag}: ${quote(path, 256)}: ${tooLarge(size)}`);
  try {
    return readFileSync(full);
  } catch (e) {
    throw usageError(`${flag}: ${quote(path, 256)}: ${whyUnreadable(e)}`);
  }
}

/** Whether `path` names a regular file on this machine (a plain `--ssh-key` value may be one). */
function isFile(io: Io, path: string): boolean {
  try {
    return statSync(localPath(io, path)).isFile();
  } catch {
    return false;
  }
}

/** The keys of a key file: one per line; empty lines and `#` comments skipped; every other line a key. */
function keysOfFile(io: Io, flag: string, path: string): string[] {
  const bytes = readBoundedFile(io, flag, path, MAX_SSH_KEY_FILE_BYTES, (size) => `${formatBytes(size)} is too large for a public key file (at most ${formatBytes(MAX_SSH_KEY_FILE_BYTES)})`);
  const text = bytes.toString("utf8");
  if (/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) {
    // Never sent anywhere: the file is refused before any call.
    throw usageError(`${flag}: ${quote(path, 256)} is a private key; give the public one (${quote(path, 256)}.pub)`);
  }
  const keys: string[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) return;
    if (!isPublicKeyLine(line)) {
      throw usageError(`${flag}: ${quote(path, 256)} line ${i + 1}: not an OpenSSH public key (ssh-ed25519 AAAA... comment): ${quote(line, 40)}`);
    }
    keys.push(line);
  });
  if (keys.length === 0) throw usageError(`${flag}: ${quote(path, 256)} has no public key (one a line; # comments and empty lines are skipped)`);
  return keys;
}

/**
 * The keys of repeated `--ssh-key VALUE`s, in order, each once. A VALUE is read as:
 *
 * 1. `@PATH`: the file at PATH, always (for a file whose name could pass for a key);
 * 2. an OpenSSH public key (`ssh-ed25519 AAAA... me@laptop`): that key;
 * 3. the path of a readable file (`~/.ssh/id_ed25519.pub`; `~` and relative paths as the shell
 *    reads them): the file.
 *
 * A file holds one key a line; empty lines and `#` comments are skipped, any other line must be a
 * key. Anything else, a private key, or a file that cannot be read is a usage error (exit 2) naming
 * `flag` and quoting a bounded prefix of the value. Reads local files only; sends nothing.
 */
export function readSshKeys(io: Io, values: readonly string[], flag = "--ssh-key"): string[] {
  const keys: string[] = [];
  for (const value of values) {
    const text = value.trim();
    let found: string[];
    if (text.startsWith("@")) {
      if (text.length === 1) throw usageError(`${flag}: '@' needs a file: @PATH`);
      found = keysOfFile(io, flag, text.slice(1));
    } else if (isPublicKeyLine(text)) {
      found = [text];
    } else if (text !== "" && isFile(io, text)) {
      found = keysOfFile(io, flag, text);
    } else {
      throw usageError(
        `${flag}: ${quote(value, 64)} is neither an OpenSSH public key (ssh-ed25519 AAAA..., ecdsa-..., sk-...) nor a readable file (@PATH or PATH)`,
      );
    }
    for (const key of found) if (!keys.includes(key)) keys.push(key);
  }
  return keys;
}

/**
 * The user-data of `--user-data FILE` (`-`: standard input), as text: at most
 * {@link MAX_USER_DATA_BYTES} of UTF-8, not empty. A usage error (exit 2) naming `flag` otherwise.
 * When the data does not start the way cloud-init recognises (`#cloud-config`, `#!`, a MIME
 * header...), a note on stderr says cloud-init may ignore it; the data is still taken, as given.
 * The content is never printed.
 */
export async function readUserData(io: Io, value: string, flag = "--user-data"): Promise<string> {
  const limit = `at most ${formatBytes(MAX_USER_DATA_BYTES)} (${MAX_USER_DATA_BYTES} bytes; fetch a larger setup from the user-data, e.g. #include URL, or build it into the image)`;
  const tooLarge = (size: number): string => `${size} bytes is too large: user-data is ${limit}`;
  let bytes: Uint8Array;
  let what: string;
  if (value === "-") {
    what = "standard input";
    if (!io.readStdin) throw usageError(`${flag}: -: standard input cannot be read here`);
    if (io.interactive) io.stderr(`reading ${flag} from standard input (end it with Ctrl-D)...\n`);
    bytes = await io.readStdin(MAX_USER_DATA_BYTES + 1);
    if (bytes.length > MAX_USER_DATA_BYTES) throw usageError(`${flag}: ${what}: more than ${formatBytes(MAX_USER_DATA_BYTES)}: user-data is ${limit}`);
  } else {
    if (value === "") throw usageError(`${flag}: needs a file (or - for standard input)`);
    what = quote(value, 256);
    bytes = readBoundedFile(io, flag, value, MAX_USER_DATA_BYTES, tooLarge);
  }
  if (bytes.length === 0) throw usageError(`${flag}: ${what} is empty (leave out ${flag} for Berth's own #cloud-config: the hostname and the --ssh-key keys)`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw usageError(`${flag}: ${what} is not UTF-8 text (compressed or binary user-data cannot be sent)`);
  }
  const start = text.replace(/^\uFEFF/, "");
  if (!USER_DATA_FORMATS.some((f) => start.startsWith(f))) {
    io.stderr(`note: ${flag} ${what} does not start with #cloud-config, #! or a MIME header: cloud-init may ignore it\n`);
  }
  return text;
}

/** The `--ssh-key` and `--user-data` flags, as commander hands them over. */
export interface CloudInitFlags {
  sshKey?: string[];
  userData?: string;
}

/**
 * The CloudInit the flags ask for: `undefined` (no seed at all) when neither flag is given; else the
 * keys (possibly none) and the user-data (empty: Berth's own #cloud-config).
 */
export async function readCloudInit(io: Io, flags: CloudInitFlags): Promise<CloudInit | undefined> {
  if (flags.sshKey === undefined && flags.userData === undefined) return undefined;
  const sshAuthorizedKeys = readSshKeys(io, flags.sshKey ?? []);
  const userData = flags.userData === undefined ? "" : await readUserData(io, flags.userData);
  return { sshAuthorizedKeys, userData };
}
