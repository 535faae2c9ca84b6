// A simulated virsh (and qemu-img, genisoimage) for the libvirt driver's unit tests: an injected
// CommandRunner that keeps domains, pool volumes (with their bytes), networks and leases in memory
// and records every command line. Enough of libvirt's behaviour for the driver's commands, no more.
import { readFileSync, writeFileSync } from "node:fs";
import { expect } from "vitest";
import { metadataElement, parseBerthMetadata, parseDomainXml } from "./domain-xml.js";
import type { CommandResult, CommandRunner } from "./virsh.js";

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

/**
 * A file qemu-img would read as qcow2 of `virtualSizeBytes` (magic, version 3, the size at offset
 * 24 as qcow2 keeps it; a backing file name's length at offset 16 when given), padded with `body`
 * to at least 8 KiB. Not a usable image: enough for the simulation, which reads nothing else.
 */
export function fakeQcow2(virtualSizeBytes: number, body: Buffer = Buffer.alloc(0), backingFile = ""): Buffer {
  const file = Buffer.alloc(Math.max(8192, 1024 + body.length));
  QCOW2_MAGIC.copy(file, 0);
  file.writeUInt32BE(3, 4);
  file.writeBigUInt64BE(BigInt(virtualSizeBytes), 24);
  if (backingFile !== "") {
    file.writeBigUInt64BE(512n, 8);
    file.writeUInt32BE(backingFile.length, 16);
    file.write(backingFile, 512);
  }
  body.copy(file, file.length - body.length);
  return file;
}

/** qemu-img's view of a file in the simulation: qcow2 by its magic (size from the header), else raw. */
function probe(data: Buffer): { format: string; virtualSize: number; backing: string | undefined } {
  if (data.length >= 32 && data.subarray(0, 4).equals(QCOW2_MAGIC)) {
    const backingLength = data.readUInt32BE(16);
    return { format: "qcow2", virtualSize: Number(data.readBigUInt64BE(24)), backing: backingLength > 0 ? data.subarray(512, 512 + backingLength).toString() : undefined };
  }
  return { format: "raw", virtualSize: data.length, backing: undefined };
}

/** A volume of the simulated pool. */
export interface SimVolume {
  capacityBytes: number;
  format: string;
  backing: string | undefined;
  data: Buffer;
}

const sizeOf = (text: string): number => {
  const m = /^(\d+)([KMGT]?)$/.exec(text);
  if (!m) throw new Error(`sim: size ${text}`);
  return Number(m[1]) * ({ "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 } as Record<string, number>)[m[2]!]!;
};

/** The positional arguments of a virsh command (options' values left out). */
const positional = (rest: readonly string[]): string[] =>
  rest.filter((a, i) => !a.startsWith("--") && !["--pool", "--offset", "--length", "--format", "--backing-vol", "--backing-vol-format", "--xml", "--migrateuri"].includes(rest[i - 1] ?? ""));

/** A domain of the simulated libvirt. */
export interface SimDomain {
  name: string;
  xml: string;
  state: number; // virDomainState
  reason: number;
  persistent: boolean;
}

/** A tiny libvirt: enough of virsh for the driver's commands. Records every command line. */
/** A tiny libvirt: enough of virsh for the driver's commands. Records every command line. */
export class SimVirsh {
  readonly domains = new Map<string, SimDomain>();
  /** The pool's volumes by name. */
  readonly volumes = new Set<string>();
  /** Their sizes, probed formats and bytes (a volume made by vol-create-as holds a qcow2 header, or nothing). */
  readonly volumeData = new Map<string, SimVolume>();
  /** libvirt networks: name → active. */
  readonly networks = new Map<string, boolean>([["default", true]]);
  /** DHCP leases per network. */
  readonly leases = new Map<string, { mac: string; ip: string }[]>();
  /** Pool room (`pool-info --bytes` Available). */
  availableBytes = 100 * 2 ** 30;
  /** What genisoimage was given for each seed made (the ISO's files by name). */
  readonly seeds: Record<string, string>[] = [];
  /** Whether genisoimage is installed. */
  hasGenisoimage = true;
  /** The `--xml` the last migrate was given. */
  migrateXml: string | undefined;
  readonly commands: string[][] = [];
  /** Commands (by name) made to fail with this stderr. */
  readonly failures = new Map<string, string>();
  /** Whether the guest obeys `shutdown`. */
  guestObeysShutdown = false;
  memoryKib = 8 * 1024 * 1024;
  /** The storage pool's type (`pool-dumpxml`). */
  poolType = "dir";

  readonly runner: CommandRunner = async (file, argv) => {
    if (file === "qemu-img") return this.qemuImg(argv);
    if (file === "genisoimage") return this.genisoimage(argv);
    expect(argv.slice(0, 3)).toEqual(["-q", "-c", "qemu:///system"]);
    const rest = argv.slice(3);
    if (rest.length === 1 && rest[0]!.includes(" ; ")) {
      let stdout = "";
      let stderr = "";
      let exitCode = 0;
      for (const command of rest[0]!.split(" ; ")) {
        const r = this.one(command.split(" "));
        stdout += r.stdout;
        stderr += r.stderr;
        exitCode = r.exitCode ?? 1;
      }
      return { exitCode, stdout, stderr, timedOut: false };
    }
    return this.one(rest);
  };

  private byId(id: string): SimDomain | undefined {
    return this.domains.get(id) ?? [...this.domains.values()].find((d) => d.name === id);
  }

  private one(args: readonly string[]): CommandResult {
    const [command = "", ...rest] = args;
    if (command !== "echo") this.commands.push([...args]);
    const ok = (stdout = ""): CommandResult => ({ exitCode: 0, stdout, stderr: "", timedOut: false });
    const fail = (stderr: string): CommandResult => ({ exitCode: 1, stdout: "", stderr: `error: ${stderr}\n`, timedOut: false });
    const failure = this.failures.get(command);
    if (failure !== undefined) return fail(failure);
    const domain = (): SimDomain | undefined => this.byId(rest.find((a) => !a.startsWith("--"))!);
    const noDomain = (): CommandResult => fail(`failed to get domain '${rest.find((a) => !a.startsWith("--"))}'`);
    switch (command) {
      case "echo":
        return ok(rest.join(" "));
      case "uri":
        return ok("qemu:///system\n");
      case "nodeinfo":
        return ok(`CPU model:           x86_64\nCPU(s):              4\nMemory size:         ${this.memoryKib} KiB\n`);
      case "domcapabilities":
        return ok("<domainCapabilities/>\n");
      case "list":
        return ok([...this.domains.keys()].map((u) => `${u}\n`).join("") + "\n");
      case "dumpxml": {
        const d = domain();
        return d ? ok(d.xml) : noDomain();
      }
      case "domstats": {
        const ids = rest.filter((a) => !a.startsWith("--"));
        const list = ids.length === 0 ? [...this.domains.values()] : ids.map((i) => this.byId(i));
        if (list.some((d) => !d)) return noDomain();
        return ok(list.map((d) => `Domain: '${d!.name}'\n  state.state=${d!.state}\n  state.reason=${d!.reason}\n  cpu.time=5\n  balloon.rss=2048\n\n`).join(""));
      }
      case "domstate": {
        const d = domain();
        return d ? ok(d.state === 5 ? "shut off\n" : "running\n") : noDomain();
      }
      case "domuuid": {
        const d = domain();
        return d ? ok(`${[...this.domains.entries()].find(([, v]) => v === d)![0]}\n`) : noDomain();
      }
      case "dominfo": {
        const d = domain();
        return d ? ok(`Name: ${d.name}\nPersistent:     ${d.persistent ? "yes" : "no"}\n`) : noDomain();
      }
      case "define": {
        const xml = readFileSync(rest[0]!, "utf8");
        const parsed = parseDomainXml(xml)!;
        const clash = [...this.domains.entries()].find(([u, d]) => d.name === parsed.name && u !== parsed.uuid);
        if (clash) return fail(`operation failed: domain '${parsed.name}' already exists with uuid ${clash[0]}`);
        const existing = this.domains.get(parsed.uuid);
        this.domains.set(parsed.uuid, { name: parsed.name, xml, state: existing?.state ?? 5, reason: existing?.reason ?? 0, persistent: true });
        return ok();
      }
      case "start": {
        const d = domain();
        if (!d) return noDomain();
        if (d.state !== 5) return fail("Domain is already active");
        d.state = 1;
        return ok();
      }
      case "resume": {
        const d = domain();
        if (!d) return noDomain();
        d.state = 1;
        return ok();
      }
      case "shutdown":
      case "destroy": {
        const d = domain();
        if (!d) return noDomain();
        if (d.state === 5) return fail("Requested operation is not valid: domain is not running");
        if (command === "destroy" || this.guestObeysShutdown) d.state = 5;
        return ok();
      }
      case "undefine": {
        const d = domain();
        if (!d) return noDomain();
        this.domains.delete([...this.domains.entries()].find(([, v]) => v === d)![0]);
        return ok();
      }
      case "metadata": {
        const d = domain();
        if (!d) return noDomain();
        if (rest.includes("--live") && d.state === 5) return fail("Requested operation is not valid: domain is not running");
        const value = rest[rest.indexOf("--set") + 1]!;
        const m = parseBerthMetadata(value)!;
        d.xml = d.xml.replace(/<berth:vm [^>]*\/>/, metadataElement(m));
        return ok();
      }
      case "vol-create-as": {
        const [, name, size] = positional(rest);
        if (this.volumes.has(name!)) return fail(`storage volume '${name}' exists already`);
        const format = rest.includes("--format") ? rest[rest.indexOf("--format") + 1]! : "raw";
        const backing = rest.includes("--backing-vol") ? rest[rest.indexOf("--backing-vol") + 1] : undefined;
        if (backing !== undefined && !this.volumes.has(backing)) return fail(`failed to get vol '${backing}'`);
        const capacityBytes = sizeOf(size!);
        this.volumes.add(name!);
        this.volumeData.set(name!, { capacityBytes, format, backing, data: format === "qcow2" ? fakeQcow2(capacityBytes) : Buffer.alloc(0) });
        return ok();
      }
      case "vol-delete":
      case "vol-info": {
        const name = rest[rest.length - 1]!;
        if (!this.volumes.has(name)) return fail(`failed to get vol '${name}'\nerror: Storage volume not found: no storage vol with matching path '${name}'`);
        if (command === "vol-delete") {
          this.volumes.delete(name);
          this.volumeData.delete(name);
        }
        return ok();
      }
      case "vol-list":
        return ok([...this.volumes].map((n) => ` ${n}   /pool/${n}\n`).join("") + "\n");
      case "vol-dumpxml": {
        const name = rest[rest.length - 1]!;
        const v = this.volumeData.get(name);
        if (!v) return fail(`failed to get vol '${name}'\nerror: Storage volume not found: no storage vol with matching path '${name}'`);
        const backing = v.backing === undefined ? "" : `  <backingStore>\n    <path>/pool/${v.backing}</path>\n    <format type='qcow2'/>\n  </backingStore>\n`;
        return ok(
          `<volume type='file'>\n  <name>${name}</name>\n  <capacity unit='bytes'>${v.capacityBytes}</capacity>\n  <allocation unit='bytes'>${v.data.length}</allocation>\n  <target>\n    <path>/pool/${name}</path>\n    <format type='${v.format}'/>\n  </target>\n${backing}</volume>\n`,
        );
      }
      case "vol-upload": {
        const [name, from] = positional(rest);
        const v = this.volumeData.get(name!);
        if (!v) return fail(`failed to get vol '${name}'`);
        const offset = rest.includes("--offset") ? Number(rest[rest.indexOf("--offset") + 1]) : 0;
        const bytes = readFileSync(from!);
        const data = Buffer.alloc(Math.max(v.data.length, offset + bytes.length));
        v.data.copy(data);
        bytes.copy(data, offset);
        v.data = data;
        // libvirt probes a file volume's format again after an upload.
        const p = probe(data);
        v.format = p.format;
        if (p.format === "qcow2") v.capacityBytes = p.virtualSize;
        return ok();
      }
      case "vol-download": {
        const [name, to] = positional(rest);
        const v = this.volumeData.get(name!);
        if (!v) return fail(`failed to get vol '${name}'`);
        const offset = rest.includes("--offset") ? Number(rest[rest.indexOf("--offset") + 1]) : 0;
        const length = rest.includes("--length") ? Number(rest[rest.indexOf("--length") + 1]) : v.data.length;
        writeFileSync(to!, v.data.subarray(offset, offset + length));
        return ok();
      }
      case "pool-info":
        return ok(`Name:           vms\nState:          running\nCapacity:       ${200 * 2 ** 30}\nAllocation:     0\nAvailable:      ${this.availableBytes}\n`);
      case "net-list":
        return ok([...this.networks].map(([n, active]) => ` ${n}   ${active ? "active" : "inactive"}   no   yes\n`).join("") + "\n");
      case "net-dhcp-leases": {
        const network = rest[0]!;
        if (!this.networks.has(network)) return fail(`failed to get network '${network}'\nerror: Network not found: no network with matching name '${network}'`);
        return ok((this.leases.get(network) ?? []).map((l) => ` 2026-12-02 02:16:44   ${l.mac}   ipv4   ${l.ip}/24   guest   -\n`).join("") + "\n");
      }
      case "attach-device": {
        const d = domain();
        if (!d) return noDomain();
        const disk = readFileSync(positional(rest)[1]!, "utf8").trim();
        const target = /<target dev='([^']+)'/.exec(disk)![1];
        if (d.xml.includes(`<target dev='${target}'`)) return fail(`Requested operation is not valid: target ${target} already exists`);
        if (rest.includes("--live") && d.state === 5) return fail("Requested operation is not valid: domain is not running");
        d.xml = d.xml.replace("  </devices>", `    ${disk.split("\n").join("\n    ")}\n  </devices>`);
        return ok("Device attached successfully\n");
      }
      case "detach-disk": {
        const d = domain();
        if (!d) return noDomain();
        const target = positional(rest)[1]!;
        const disks = [...d.xml.matchAll(/\n\s*<disk\b[\s\S]*?<\/disk>/g)].map((m) => m[0]);
        const disk = disks.find((x) => x.includes(`<target dev='${target}'`));
        if (!disk) return fail(`No disk found whose source path or target is ${target}`);
        if (rest.includes("--live") && d.state === 5) return fail("Requested operation is not valid: domain is not running");
        d.xml = d.xml.replace(disk, "");
        return ok("Disk detached successfully\n");
      }
      case "pool-dumpxml":
        return ok(`<pool type='${this.poolType}'>\n  <name>${rest[0]}</name>\n  <target>\n    <path>/pool</path>\n  </target>\n</pool>\n`);
      case "migrate": {
        const d = this.byId(positional(rest)[0]!);
        if (rest.includes("--xml")) this.migrateXml = readFileSync(rest[rest.indexOf("--xml") + 1]!, "utf8");
        if (!d) return noDomain();
        this.domains.delete([...this.domains.entries()].find(([, v]) => v === d)![0]);
        return ok();
      }
      case "domjobabort":
        return fail("Requested operation is not valid: no job is active on the domain");
      default:
        return fail(`unknown command '${command}'`);
    }
  }

  /** The domain XML of `vmId` as defined (and changed by attach/detach). */
  xmlOf(vmId: string): string {
    return this.domains.get(vmId)!.xml;
  }

  private qemuImg(argv: readonly string[]): CommandResult {
    const [command, ...rest] = argv;
    const ok = (stdout = ""): CommandResult => ({ exitCode: 0, stdout, stderr: "", timedOut: false });
    this.commands.push(["qemu-img", ...argv]);
    if (command === "info") {
      const p = probe(readFileSync(rest[rest.length - 1]!));
      return ok(JSON.stringify({ "virtual-size": p.virtualSize, format: p.format, ...(p.backing ? { "backing-filename": p.backing } : {}) }));
    }
    if (command === "convert") {
      const [input, output] = rest.slice(-2);
      const data = readFileSync(input!);
      writeFileSync(output!, fakeQcow2(data.length, data.subarray(0, 64)));
      return ok();
    }
    return { exitCode: 1, stdout: "", stderr: `qemu-img: unknown command ${command}`, timedOut: false };
  }

  private genisoimage(argv: readonly string[]): CommandResult {
    if (!this.hasGenisoimage) return { exitCode: null, stdout: "", stderr: "", timedOut: false, spawnError: "ENOENT: spawn genisoimage ENOENT" };
    this.commands.push(["genisoimage", ...argv]);
    const output = argv[argv.indexOf("-output") + 1]!;
    const files: Record<string, string> = {};
    for (const f of argv.slice(-2)) files[f.split("/").pop()!] = readFileSync(f, "utf8");
    this.seeds.push(files);
    writeFileSync(output, JSON.stringify(files));
    return { exitCode: 0, stdout: "", stderr: "", timedOut: false };
  }
}
