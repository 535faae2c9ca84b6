import { invalidArgument, type BerthError } from "@berth/core";
import { describe, expect, it } from "vitest";
import { specsFromFlags } from "./commands/spec-flags.js";
import { CliError, ExitCode } from "./exit-codes.js";
import {
  imageFromFlags,
  specErrorAgainstFlags,
  volumeFromFlags,
  parseCapacity,
  parseDiskGib,
  parseDurationMs,
  parseEndpoints,
  parseEtcdUrls,
  parseHostPort,
  parseLabels,
  parseMemoryMib,
  parseSecondsMs,
  parseVcpus,
  validateSpecFromFlags,
} from "./parse.js";

function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).exitCode).toBe(ExitCode.Usage);
    return (e as Error).message;
  }
  throw new Error("expected a usage error");
}

describe("sizes", () => {
  it("--memory: units, bare MiB", () => {
    expect(parseMemoryMib("512MiB")).toBe(512);
    expect(parseMemoryMib("4GiB")).toBe(4096);
    expect(parseMemoryMib("4Gi")).toBe(4096);
    expect(parseMemoryMib("4GB")).toBe(3815); // decimal: 4 x 10^9 bytes, rounded up to a MiB
    expect(parseMemoryMib("1.5GiB")).toBe(1536);
    expect(parseMemoryMib("2048")).toBe(2048);
    expect(parseMemoryMib("1TiB")).toBe(1024 * 1024);
  });

  it("--disk: units, bare GiB, rounded up", () => {
    expect(parseDiskGib("20GiB")).toBe(20);
    expect(parseDiskGib("20")).toBe(20);
    expect(parseDiskGib("1TiB")).toBe(1024);
    expect(parseDiskGib("512MiB")).toBe(1);
  });

  it("names the flag in errors", () => {
    expect(usage(() => parseMemoryMib("4XB"))).toBe(
      "--memory: unknown unit 'XB' in '4XB' (binary: Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB; decimal: kB, MB, GB, TB; or B)",
    );
    // A lone letter meant binary to Berth and decimal to kubectl: refused, with both spellings.
    expect(usage(() => parseMemoryMib("4G"))).toBe(
      "--memory: '4G' is ambiguous: write 4GiB (or 4Gi) for binary, 4GB for decimal (binary: Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB; decimal: kB, MB, GB, TB; or B)",
    );
    expect(usage(() => parseDiskGib("1T"))).toMatch(/^--disk: '1T' is ambiguous: write 1TiB/);
    expect(usage(() => parseCapacity("vcpus=4,memory=8G"))).toMatch(/^--capacity memory: '8G' is ambiguous/);
    expect(usage(() => parseDiskGib("big"))).toMatch(/^--disk: 'big' is not a size/);
    expect(usage(() => parseMemoryMib("-1GiB"))).toMatch(/^--memory: /);
  });
});

describe("numbers", () => {
  it("--vcpus is a whole number in range", () => {
    expect(parseVcpus("4")).toBe(4);
    expect(usage(() => parseVcpus("1.5"))).toBe("--vcpus: '1.5' is not a whole number");
    expect(usage(() => parseVcpus("0"))).toBe("--vcpus: must be from 1 to 1024 (got 0)");
  });

  it("seconds to ms, positive only", () => {
    expect(parseSecondsMs("10", "--timeout")).toBe(10_000);
    expect(parseSecondsMs("0.25", "--timeout")).toBe(250);
    expect(usage(() => parseSecondsMs("0", "--timeout"))).toBe("--timeout: must be more than 0 seconds");
    expect(usage(() => parseSecondsMs("1m", "--wait-timeout"))).toMatch(/^--wait-timeout: /);
  });
});

describe("labels", () => {
  it("KEY=VALUE, value may hold '=' or be empty, later wins", () => {
    expect(parseLabels(["a=1", "b=x=y", "c=", "a=2"])).toEqual({ a: "2", b: "x=y", c: "" });
    expect(usage(() => parseLabels(["=1"]))).toBe("--label: '=1' must be KEY=VALUE");
  });
});

describe("addresses", () => {
  it("HOST:PORT lists, deduplicated", () => {
    expect(parseEndpoints("a:1, b:2,,a:1", "--controller")).toEqual(["a:1", "b:2"]);
    expect(parseEndpoints("[::1]:7400", "--controller")).toEqual(["[::1]:7400"]);
    expect(parseHostPort("0.0.0.0:7400", "--listen")).toEqual({ host: "0.0.0.0", port: 7400 });
    expect(usage(() => parseEndpoints(" , ", "--controller"))).toMatch(/^--controller: no address/);
    expect(usage(() => parseEndpoints("host", "BERTH_CONTROLLER"))).toMatch(/^BERTH_CONTROLLER: 'host' is not HOST:PORT/);
    expect(usage(() => parseHostPort("h:99999", "--listen"))).toMatch(/^--listen: /);
  });

  it("etcd URLs", () => {
    expect(parseEtcdUrls("http://a:2379,https://b:2379")).toEqual(["http://a:2379", "https://b:2379"]);
    expect(usage(() => parseEtcdUrls("a:2379"))).toMatch(/^--etcd: 'a:2379' must be an http/);
    expect(usage(() => parseEtcdUrls("::"))).toMatch(/^--etcd: '::' is not a URL/);
  });
});

describe("--capacity", () => {
  it("takes any subset of vcpus, memory, disk", () => {
    expect(parseCapacity("vcpus=16,memory=64GiB,disk=1TiB")).toEqual({ vcpus: 16, memoryMib: 65536, diskGib: 1024 });
    expect(parseCapacity("memory=8192")).toEqual({ memoryMib: 8192 });
  });

  it("names the key at fault", () => {
    expect(usage(() => parseCapacity("cpus=1"))).toBe("--capacity: unknown key 'cpus' (keys: vcpus, memory, disk)");
    expect(usage(() => parseCapacity("vcpus"))).toMatch(/^--capacity: 'vcpus' must be KEY=VALUE/);
    expect(usage(() => parseCapacity("memory=1XB"))).toMatch(/^--capacity memory: unknown unit/);
    expect(usage(() => parseCapacity(""))).toMatch(/^--capacity: empty/);
  });
});

describe("validateSpecFromFlags", () => {
  const spec = (over: object = {}) => ({
    name: "web-1",
    resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
    labels: {},
    group: "",
    requiredHostLabels: {},
    forbiddenHostLabels: {},
    pinnedHosts: [],
    onHostFailure: 0,
    image: "",
    networks: [],
    volumes: [],
    ...over,
  });

  it("passes a good spec", () => {
    expect(() => validateSpecFromFlags(spec())).not.toThrow();
  });

  it("reports core's rules against the flag", () => {
    expect(usage(() => validateSpecFromFlags(spec({ name: "-x" })))).toMatch(/^NAME: '-x' must be/);
    expect(usage(() => validateSpecFromFlags(spec({ resources: { vcpus: 2, memoryMib: 8, diskGib: 20 } })))).toMatch(
      /^--memory: must be a whole number from 16 to \d+ MiB \(got 8\)$/,
    );
    expect(usage(() => validateSpecFromFlags(spec({ resources: { vcpus: 2, memoryMib: 4096, diskGib: 10 ** 9 } })))).toMatch(/^--disk: /);
    expect(usage(() => validateSpecFromFlags(spec({ labels: { "bad key": "v" } })))).toMatch(/^--label bad key: key must be/);
  });
});

describe("durations", () => {
  const WEEK = 7 * 86_400_000;

  it("reads units and compound durations", () => {
    expect(parseDurationMs("10m", "--deadline", WEEK)).toBe(600_000);
    expect(parseDurationMs("90s", "--deadline", WEEK)).toBe(90_000);
    expect(parseDurationMs("1h30m", "--deadline", WEEK)).toBe(5_400_000);
    expect(parseDurationMs("1.5h", "--deadline", WEEK)).toBe(5_400_000);
    expect(parseDurationMs(" 2 d ", "--deadline", WEEK)).toBe(2 * 86_400_000);
    expect(parseDurationMs("500ms", "--deadline", WEEK)).toBe(500);
    expect(parseDurationMs("7d", "--deadline", WEEK)).toBe(WEEK);
  });

  it("refuses a bare number, unknown units, trailing words, zero and too long, naming the flag", () => {
    expect(usage(() => parseDurationMs("600", "--deadline", WEEK))).toBe("--deadline: '600' needs a unit (e.g. 90s, 10m, 1h30m)");
    expect(usage(() => parseDurationMs("10x", "--deadline", WEEK))).toContain("--deadline: '10x' has an unknown unit");
    expect(usage(() => parseDurationMs("1h5x", "--deadline", WEEK))).toContain("'5x' has an unknown unit");
    expect(usage(() => parseDurationMs("10m later", "--deadline", WEEK))).toContain("is not a duration");
    expect(usage(() => parseDurationMs("-10m", "--deadline", WEEK))).toContain("is not a duration");
    expect(usage(() => parseDurationMs("", "--deadline", WEEK))).toContain("is not a duration");
    expect(usage(() => parseDurationMs("0s", "--deadline", WEEK))).toBe("--deadline: must be more than 0");
    expect(usage(() => parseDurationMs("8d", "--deadline", WEEK))).toBe("--deadline: must be at most 7 days (got 8d)");
  });
});

describe("image create's flags (imageFromFlags: core's validateImage, told against the flags)", () => {
  const image = (source: string, extra: { format?: string; sha256?: string } = {}) => imageFromFlags("jammy", { source, ...extra });

  it("takes http(s) and file URLs and absolute paths; qcow2 by default; a checksum lower-cased", () => {
    expect(image(" https://cloud-images.ubuntu.com/jammy/current/jammy.img ")).toEqual({
      id: "",
      name: "jammy",
      source: "https://cloud-images.ubuntu.com/jammy/current/jammy.img",
      format: "qcow2",
      sha256: "",
      createdAtMs: 0,
    });
    expect(image("file:///srv/images/alpine.qcow2").source).toBe("file:///srv/images/alpine.qcow2");
    expect(image("/srv/images/alpine.raw", { format: "raw" })).toMatchObject({ source: "/srv/images/alpine.raw", format: "raw" });
    const hex = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    expect(image("/srv/a.img", { sha256: hex }).sha256).toBe(hex.toLowerCase());
    expect(image("/srv/a.img", { sha256: `sha256:${hex}` }).sha256).toBe(hex.toLowerCase());
  });

  it("refuses a relative path with the reason (each host reads it), rather than making it absolute here", () => {
    expect(usage(() => image("jammy.img"))).toBe(
      "--source: jammy.img is a relative path, but each host reads the source itself: give an absolute path every host can read " +
        "(a shared mount, e.g. /srv/images/jammy.img) or an http(s):// URL",
    );
    expect(usage(() => image("./images/jammy.img"))).toMatch(/^--source: \.\/images\/jammy\.img is a relative path/);
    expect(usage(() => image("~/jammy.img"))).toMatch(/is a relative path/);
  });

  it("core's refusals name the flag: another scheme, a file URL naming a host, too long, a bad checksum, a bad name", () => {
    expect(usage(() => image("ftp://mirror/x.img"))).toMatch(/^--source: 'ftp:\/\/mirror\/x\.img': only http:\/\/, https:\/\/ and file:\/\/ URLs/);
    expect(usage(() => image("file://nas/images/x.img"))).toMatch(/^--source: 'file:\/\/nas\/images\/x\.img': a file:\/\/ URL names a path on each host/);
    expect(usage(() => image(`/${"a".repeat(2048)}`))).toBe("--source: at most 2048 characters (got 2049)");
    expect(usage(() => image("  "))).toMatch(/^--source: is required/);
    expect(usage(() => image("/srv/a.img", { sha256: "abc123" }))).toMatch(/^--sha256: must be 64 lower-case hex digits/);
    expect(usage(() => imageFromFlags("Jammy", { source: "/srv/a.img" }))).toMatch(/^NAME: 'Jammy' must be 1-63 lower-case/);
  });
});

describe("volume create's flags (volumeFromFlags)", () => {
  it("--size in whole GiB through the --disk parser: units, a bare number is GiB, rounded up; --host", () => {
    expect(volumeFromFlags("data", { size: "10GiB" })).toMatchObject({ name: "data", sizeGib: 10, hostId: "" });
    expect(volumeFromFlags("data", { size: "10" }).sizeGib).toBe(10);
    expect(volumeFromFlags("data", { size: "1TiB", host: "host-2" })).toMatchObject({ sizeGib: 1024, hostId: "host-2" });
    expect(volumeFromFlags("data", { size: "1500MiB" }).sizeGib).toBe(2);
  });

  it("refuses no size, an ambiguous unit and a bad host, naming the flag", () => {
    expect(usage(() => volumeFromFlags("data", { size: "0" }))).toMatch(/^--size: must be a whole number from 1 to \d+ GiB \(got 0\)$/);
    expect(usage(() => volumeFromFlags("data", { size: "10G" }))).toMatch(/^--size: '10G' is ambiguous/);
    expect(usage(() => volumeFromFlags("data", { size: "10", host: "Host_1" }))).toMatch(/^--host: 'Host_1' must be/);
  });
});

describe("vm create's device flags (specsFromFlags)", () => {
  const base = { vcpus: "2", memory: "2GiB", disk: "20GiB" };

  it("--network is repeatable, one NIC each, in the order given (the same network twice is two NICs)", () => {
    const [spec] = specsFromFlags("app-1", { ...base, network: ["storage", "default", "storage"] });
    expect(spec?.networks).toEqual(["storage", "default", "storage"]);
    expect(specsFromFlags("app-1", base)[0]?.networks).toEqual([]);
  });

  it("--image and --volume by name; every VM of --count gets the image, the NICs and the seed, as copies", () => {
    const [one] = specsFromFlags("db-1", { ...base, image: "jammy", volume: ["db-data", "logs"] });
    expect(one).toMatchObject({ image: "jammy", volumes: ["db-data", "logs"] });
    expect(one?.cloudInit).toBeUndefined();
    const seed = { sshAuthorizedKeys: ["ssh-ed25519 AAAA k"], userData: "" };
    const gang = specsFromFlags("web", { ...base, image: "jammy", network: ["default"], count: "2" }, seed);
    expect(gang.map((g) => [g.name, g.image, g.networks, g.cloudInit])).toEqual([
      ["web-1", "jammy", ["default"], seed],
      ["web-2", "jammy", ["default"], seed],
    ]);
    expect(gang[0]?.networks).not.toBe(gang[1]?.networks);
    expect(gang[0]?.cloudInit?.sshAuthorizedKeys).not.toBe(gang[1]?.cloudInit?.sshAuthorizedKeys);
  });

  it("refuses --volume with --count (a volume has one VM), a bad --image or --volume name, and no --disk (saying how big with --image)", () => {
    expect(usage(() => specsFromFlags("web", { ...base, count: "2", volume: ["data"] }))).toMatch(/^--volume: not with --count: a volume is attached to one VM/);
    expect(usage(() => specsFromFlags("web", { ...base, image: "Jammy_22" }))).toMatch(/^--image: 'Jammy_22' must be 1-63 lower-case/);
    expect(usage(() => specsFromFlags("web", { ...base, volume: ["ok", "-bad"] }))).toMatch(/^--volume: '-bad' must be/);
    expect(usage(() => specsFromFlags("web", { vcpus: "2", memory: "2GiB", image: "jammy" }))).toBe(
      "--disk: required: the VM's disk is a layer over image jammy, so give --disk at least the image's virtual size (berth image show jammy)",
    );
    expect(usage(() => specsFromFlags("web", { vcpus: "2", memory: "2GiB" }))).toBe("--disk: required: the VM's disk size, e.g. 20GiB");
  });

  it("core's rules on the new fields are told against their flags, a list flag's entry by its place", () => {
    const told = (field: string, rule: string): string => specErrorAgainstFlags(invalidArgument(field, rule) as BerthError & { field: string });
    expect(told("spec.networks[1]", "'br 0' must be 1-64 letters, digits, '.', '_' or '-'")).toBe("--network #2: 'br 0' must be 1-64 letters, digits, '.', '_' or '-'");
    expect(told("spec.networks", "at most 8 NICs")).toBe("--network: at most 8 NICs");
    expect(told("spec.cloud_init.ssh_authorized_keys[0]", "longer than 8 KiB")).toBe("--ssh-key #1: longer than 8 KiB");
    expect(told("spec.cloud_init.user_data", "at most 64 KiB")).toBe("--user-data: at most 64 KiB");
    expect(told("spec.volumes[2]", "'data' appears twice")).toBe("--volume #3: 'data' appears twice");
    expect(told("spec.image", "'X' must be a DNS label")).toBe("--image: 'X' must be a DNS label");
    expect(told("spec.resources.disk_gib", "must be more than 0 with an image")).toBe("--disk: must be more than 0 with an image");
    // Unchanged: a pinned host is named by its value, a label by its key.
    expect(told("spec.pinned_hosts[0]", "'H' must be ...")).toBe("--pin: 'H' must be ...");
    expect(told("spec.labels[tier]", "value longer than 253 characters")).toBe("--label tier: value longer than 253 characters");
  });
});
