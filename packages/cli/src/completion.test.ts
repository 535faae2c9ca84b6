import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { bashCompletion, commandTree, fishCompletion } from "./completion.js";
import { CliContext } from "./context.js";
import { ExitCode } from "./exit-codes.js";
import { buildProgram, run } from "./program.js";
import { recordingIo } from "./stub-server.testkit.js";

const program = buildProgram(new CliContext(recordingIo()));
const dir = mkdtempSync(join(tmpdir(), "berth-completion-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A stand-in `berth` for the script's name lookups: records its arguments, prints names for
 * `vm list -o name` and `host list -o name`.
 */
const fakeBerth = join(dir, "berth");
writeFileSync(
  fakeBerth,
  `#!/bin/sh
echo "$@" >> "${join(dir, "calls")}"
case "$*" in
  *"vm list -o name"*) printf 'web-1\\nweb-2\\ndb-1\\n' ;;
  *"host list -o name"*) printf 'host-1\\nhost-10\\n' ;;
  *"image list -o name"*) printf 'jammy\\nalpine\\n' ;;
  *"volume list -o name"*) printf 'db-data\\nlogs\\n' ;;
esac
`,
);
chmodSync(fakeBerth, 0o755);
const script = join(dir, "berth.bash");
writeFileSync(script, bashCompletion(program));

/** What bash's completion offers for `words` (the last one being completed), as `_berth` sets COMPREPLY. */
function complete(...words: string[]): string[] {
  const line = [fakeBerth, ...words].map((w) => `'${w}'`).join(" ");
  const out = execFileSync(
    "bash",
    ["-c", `source '${script}'; COMP_WORDS=(${line}); COMP_CWORD=${words.length}; _berth; printf '%s\\n' "\${COMPREPLY[@]}"`],
    { encoding: "utf8" },
  );
  return out.split("\n").filter((l) => l !== "");
}

describe("berth completion bash", () => {
  it("is valid bash (bash -n)", () => {
    expect(() => execFileSync("bash", ["-n", script])).not.toThrow();
  });

  it("completes verbs from the command tree: berth vm cr -> create; berth ho -> host", () => {
    expect(complete("vm", "cr")).toEqual(["create"]);
    expect(complete("ho")).toEqual(["host"]);
    expect(complete("host", "or")).toEqual(["orphans"]);
    // Global flags before the verb are skipped, with their values.
    expect(complete("--controller", "10.0.0.1:7400", "vm", "li")).toEqual(["list"]);
  });

  it("completes flags of the command and the global ones, and -o's choices", () => {
    expect(complete("vm", "create", "web", "--wa")).toEqual(["--wait", "--wait-timeout"]);
    expect(complete("vm", "list", "--out")).toEqual(["--output"]);
    expect(complete("-o", "")).toEqual(["table", "wide", "json", "yaml", "name"]);
    expect(complete("vm", "create", "x", "--on-host-failure", "r")).toEqual(["restart"]);
  });

  it("completes VM and host names from the cluster, passing on the cluster flags typed", () => {
    expect(complete("--insecure", "--controller", "10.0.0.1:7400", "vm", "show", "web")).toEqual(["web-1", "web-2"]);
    expect(readFileSync(join(dir, "calls"), "utf8").trim().split("\n").at(-1)).toBe("--insecure --controller 10.0.0.1:7400 vm list -o name");
    expect(complete("host", "drain", "host-1")).toEqual(["host-1", "host-10"]);
    expect(complete("vm", "migrate", "web-1", "--to", "")).toEqual(["host-1", "host-10"]);
    // A new VM's name is not completed from the existing ones, nor a second argument.
    expect(complete("vm", "create", "w")).toEqual([]);
    expect(complete("vm", "show", "web-1", "w")).toEqual([]);
  });
});

describe("completion of images, volumes and the VM device flags", () => {
  it("offers the image and volume verbs", () => {
    expect(complete("im")).toEqual(["image"]);
    expect(complete("vol")).toEqual(["volume"]);
    expect(complete("image", "")).toEqual(["create", "list", "show", "delete"]);
    expect(complete("volume", "")).toEqual(["create", "list", "show", "delete", "attach", "detach"]);
    expect(complete("image", "create", "x", "--f")).toEqual(["--format"]);
    expect(complete("image", "create", "x", "--format", "")).toEqual(["qcow2", "raw"]);
  });

  it("completes existing image and volume names, and vm create's --image, --volume, --network, --ssh-key flags", () => {
    expect(complete("image", "show", "j")).toEqual(["jammy"]);
    expect(complete("volume", "attach", "d")).toEqual(["db-data"]);
    expect(complete("vm", "create", "app-1", "--image", "a")).toEqual(["alpine"]);
    expect(complete("vm", "create", "app-1", "--volume", "")).toEqual(["db-data", "logs"]);
    expect(complete("vm", "create", "app-1", "--ne")).toEqual(["--network"]);
    expect(complete("vm", "create", "app-1", "--ss")).toEqual(["--ssh-key"]);
    expect(complete("plan", "--us")).toEqual(["--user-data"]);
    expect(complete("volume", "create", "x", "--host", "host-1")).toEqual(["host-1", "host-10"]);
    // A new image's or volume's name is not completed from the existing ones.
    expect(complete("image", "create", "j")).toEqual([]);
    expect(complete("volume", "create", "d")).toEqual([]);
  });
});

describe("the command tree", () => {
  it("is the program's own: every verb and flag, and completion itself", () => {
    const paths = commandTree(program).map((n) => n.path);
    expect(paths).toEqual(expect.arrayContaining(["", "vm", "vm create", "host drain", "completion"]));
    const create = commandTree(program).find((n) => n.path === "vm create");
    expect(create?.flags).toEqual(expect.arrayContaining(["--vcpus", "--memory", "--count", "-o", "--controller", "--help"]));
  });

  it("fish: a complete line per verb and flag", () => {
    const fish = fishCompletion(program);
    expect(fish).toContain(`complete -c berth -n '__berth_path | string match -q -- "vm"' -a create`);
    expect(fish).toContain(`-l output -x -a 'table wide json yaml name'`);
  });

  it("berth completion zsh prints a script for bashcompinit; an unknown shell is exit 2", async () => {
    const io = recordingIo();
    expect(await run(["completion", "zsh"], io)).toBe(0);
    expect(io.out).toMatch(/^#compdef berth\n/);
    expect(io.out).toContain("complete -o default -F _berth berth");
    const bad = recordingIo();
    expect(await run(["completion", "tcsh"], bad)).toBe(ExitCode.Usage);
    expect(bad.err).toBe("error: completion: unknown shell 'tcsh' (use one of: bash, zsh, fish)\n");
  });
});
