import { describe, expect, it } from "vitest";
import { CliError, ExitCode } from "./exit-codes.js";
import {
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
