import { describe, expect, it } from "vitest";
import { BerthError } from "@berth/core";
import { mapVirshError, splitSections, Virsh, type CommandResult, type CommandRunner } from "./virsh.js";

const failed = (stderr: string, extra: Partial<CommandResult> = {}): CommandResult => ({ exitCode: 1, stdout: "", stderr, timedOut: false, ...extra });

describe("mapVirshError", () => {
  it.each([
    ["error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory", "HYPERVISOR_UNAVAILABLE"],
    ["error: Disconnected from qemu:///system due to end of file", "HYPERVISOR_UNAVAILABLE"],
    ["error: failed to get domain 'x'", "NOT_FOUND"],
    ["error: Domain not found: no domain with matching uuid 'x'", "NOT_FOUND"],
    ["error: failed to get vol 'a.qcow2'\nerror: Storage volume not found: no storage vol with matching path 'a.qcow2'", "NOT_FOUND"],
    ["error: Failed to create vol a.qcow2\nerror: storage volume 'a.qcow2' exists already", "ALREADY_EXISTS"],
    ["error: Failed to define domain from f.xml\nerror: operation failed: domain 'berth-a' is already defined with uuid 1", "ALREADY_EXISTS"],
    ["error: operation failed: domain 'berth-a' already exists with uuid 1", "ALREADY_EXISTS"],
    ["error: Failed to destroy domain 'x'\nerror: Requested operation is not valid: domain is not running", "FAILED_PRECONDITION"],
    ["error: Domain is already active", "FAILED_PRECONDITION"],
    ["error: Timed out during operation: cannot acquire state change lock", "DEADLINE_EXCEEDED"],
    ["error: internal error: qemu unexpectedly closed the monitor: cannot set up guest memory 'pc.ram': Cannot allocate memory", "RESOURCE_EXHAUSTED"],
    ["error: XML error: bad thing", "INVALID_ARGUMENT"],
    ["error: something odd", "INTERNAL"],
  ])("%s → %s", (stderr, code) => {
    const e = mapVirshError(failed(stderr), "virsh x");
    expect(e).toBeInstanceOf(BerthError);
    expect(e.code).toBe(code);
    expect(e.message.startsWith("virsh x: ")).toBe(true);
    expect(e.message).not.toMatch(/(: |; )error: /);
  });

  it("maps a timeout and a missing virsh", () => {
    expect(mapVirshError(failed("", { timedOut: true, exitCode: null }), "virsh start a").code).toBe("DEADLINE_EXCEEDED");
    expect(mapVirshError(failed("", { spawnError: "ENOENT: spawn virsh ENOENT", exitCode: null }), "virsh start a").code).toBe("HYPERVISOR_UNAVAILABLE");
  });
});

describe("Virsh", () => {
  function recorder(result: Partial<CommandResult> = {}): { runner: CommandRunner; calls: { file: string; args: readonly string[]; timeoutMs: number }[] } {
    const calls: { file: string; args: readonly string[]; timeoutMs: number }[] = [];
    const runner: CommandRunner = async (file, args, options) => {
      calls.push({ file, args, timeoutMs: options.timeoutMs });
      return { exitCode: 0, stdout: "", stderr: "", timedOut: false, ...result };
    };
    return { runner, calls };
  }

  it("runs virsh -q -c <uri> with the per-call time limit", async () => {
    const { runner, calls } = recorder({ stdout: "ok\n" });
    const virsh = new Virsh({ uri: "qemu:///system", virshPath: "/usr/bin/virsh", timeoutMs: 1234, runner });
    expect(await virsh.run(["start", "u"])).toBe("ok\n");
    await virsh.run(["list"], { timeoutMs: 5 });
    expect(calls).toEqual([
      { file: "/usr/bin/virsh", args: ["-q", "-c", "qemu:///system", "start", "u"], timeoutMs: 1234 },
      { file: "/usr/bin/virsh", args: ["-q", "-c", "qemu:///system", "list"], timeoutMs: 5 },
    ]);
  });

  it("rejects with the mapped error", async () => {
    const { runner } = recorder({ exitCode: 1, stderr: "error: failed to get domain 'u'\n" });
    const virsh = new Virsh({ uri: "qemu:///system", virshPath: "virsh", timeoutMs: 10, runner });
    await expect(virsh.run(["start", "u"])).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("batches commands in one process, split by markers (even without newlines)", async () => {
    const { runner, calls } = recorder({ stdout: "@@berth-section:a@@one\ntwo\n@@berth-section:b@@\nthree\n" });
    const virsh = new Virsh({ uri: "qemu:///system", virshPath: "virsh", timeoutMs: 10, runner });
    const { sections } = await virsh.batch([
      { tag: "a", args: ["dumpxml", "u1"] },
      { tag: "b", args: ["domstats", "--raw", "--state"] },
    ]);
    expect(calls[0]!.args).toEqual(["-q", "-c", "qemu:///system", "echo @@berth-section:a@@ ; dumpxml u1 ; echo @@berth-section:b@@ ; domstats --raw --state"]);
    expect(sections.get("a")).toBe("one\ntwo\n");
    expect(sections.get("b")).toBe("three\n");
  });

  it("refuses batch arguments that would need quoting", async () => {
    const { runner } = recorder();
    const virsh = new Virsh({ uri: "qemu:///system", virshPath: "virsh", timeoutMs: 10, runner });
    await expect(virsh.batch([{ tag: "a", args: ["dumpxml", "name with space"] }])).rejects.toThrow(/needs quoting/);
    await expect(virsh.batch([{ tag: "a", args: ["dumpxml", "x;undefine"] }])).rejects.toThrow(/needs quoting/);
  });

  it("a batch fails as a whole only when libvirtd cannot be reached", async () => {
    const down = recorder({ exitCode: 1, stderr: "error: failed to connect to the hypervisor\n" });
    await expect(new Virsh({ uri: "u://", virshPath: "virsh", timeoutMs: 10, runner: down.runner }).batch([{ tag: "a", args: ["nodeinfo"] }])).rejects.toMatchObject({
      code: "HYPERVISOR_UNAVAILABLE",
    });
    const partial = recorder({ exitCode: 1, stdout: "@@berth-section:a@@", stderr: "error: failed to get domain 'u'\n" });
    const r = await new Virsh({ uri: "u://", virshPath: "virsh", timeoutMs: 10, runner: partial.runner }).batch([{ tag: "a", args: ["dumpxml", "u"] }]);
    expect(r.sections.get("a")).toBe("");
    expect(r.stderr).toContain("failed to get domain");
  });

  it("passes a file's content to commands that read one, and removes the file", async () => {
    let seen = "";
    let path = "";
    const runner: CommandRunner = async (_file, args) => {
      path = args[args.length - 1]!;
      seen = (await import("node:fs")).readFileSync(path, "utf8");
      return { exitCode: 0, stdout: "", stderr: "", timedOut: false };
    };
    const virsh = new Virsh({ uri: "u://", virshPath: "virsh", timeoutMs: 10, runner });
    await virsh.runWithFile("<domain/>", (file) => ["define", file]);
    expect(seen).toBe("<domain/>");
    expect((await import("node:fs")).existsSync(path)).toBe(false);
  });

  it("splitSections ignores text before the first marker", () => {
    expect([...splitSections("junk@@berth-section:x@@1")]).toEqual([["x", "1"]]);
  });
});
