import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { addResources, fitsIn, formatExactDuration, formatGib, formatMib, formatPercent, formatResources, parseSizeGib, parseSizeMib, subtractResources, sumResources, ZERO } from "./resources.js";

const resources = fc.record({
  vcpus: fc.integer({ min: 0, max: 1 << 16 }),
  memoryMib: fc.integer({ min: 0, max: 1 << 30 }),
  diskGib: fc.integer({ min: 0, max: 1 << 30 }),
});

describe("resource arithmetic", () => {
  it("subtract undoes add, and a sum fits in itself", () => {
    fc.assert(
      fc.property(resources, resources, (a, b) => {
        expect(subtractResources(addResources(a, b), b)).toEqual(a);
        expect(fitsIn(a, addResources(a, b))).toBe(true);
        expect(sumResources([a, b])).toEqual(addResources(a, b));
      }),
    );
  });
  it("fits only when every dimension fits", () => {
    expect(fitsIn({ vcpus: 2, memoryMib: 10, diskGib: 1 }, { vcpus: 2, memoryMib: 10, diskGib: 1 })).toBe(true);
    expect(fitsIn({ vcpus: 2, memoryMib: 11, diskGib: 1 }, { vcpus: 8, memoryMib: 10, diskGib: 9 })).toBe(false);
    expect(sumResources([])).toEqual(ZERO);
  });
});

describe("sizes", () => {
  it.each([
    ["512MiB", 512],
    ["4GiB", 4096],
    ["4Gi", 4096],
    ["1KiB", 1],
    ["1500kB", 2],
    ["1.5GiB", 1536],
    ["1TiB", 1024 * 1024],
    ["2048", 2048],
    ["1GB", 954],
    [" 8 gib ", 8192],
  ])("%s is %d MiB", (text, mib) => expect(parseSizeMib(text, "--memory")).toBe(mib));

  it("takes bare numbers in GiB for disks and rounds up", () => {
    expect(parseSizeGib("20", "--disk")).toBe(20);
    expect(parseSizeGib("512MiB", "--disk")).toBe(1);
    expect(parseSizeGib("1TiB", "--disk")).toBe(1024);
  });

  it.each(["", "GiB", "-1GiB", "4XB", "4 GiB extra", "1e3"])("refuses '%s' naming the flag", (text) => {
    expect(() => parseSizeMib(text, "--memory")).toThrow(/^--memory: /);
  });

  it.each([
    ["4G", "write 4GiB (or 4Gi) for binary, 4GB for decimal"],
    ["512m", "write 512MiB (or 512Mi) for binary, 512MB for decimal"],
    ["2k", "write 2KiB (or 2Ki) for binary, 2kB for decimal"],
    ["1T", "write 1TiB (or 1Ti) for binary, 1TB for decimal"],
  ])("refuses the ambiguous lone letter of '%s', with the spellings to use", (text, advice) => {
    expect(() => parseSizeMib(text, "--memory")).toThrow(`--memory: '${text}' is ambiguous: ${advice}`);
    expect(() => parseSizeGib(text, "--disk")).toThrow(/^--disk: .* is ambiguous/);
  });

  it("binary units carry an i, decimal ones do not", () => {
    expect(parseSizeMib("1GiB", "--memory")).toBe(1024);
    expect(parseSizeMib("1GB", "--memory")).toBe(Math.ceil(1e9 / 2 ** 20));
    expect(parseSizeGib("1TB", "--disk")).toBe(Math.ceil(1e12 / 2 ** 30));
    expect(parseSizeGib("1TiB", "--disk")).toBe(1024);
  });

  it("prints sizes one way: binary units, at most one decimal, truncated, a space", () => {
    expect(formatMib(512)).toBe("512 MiB");
    expect(formatMib(4096)).toBe("4 GiB");
    expect(formatMib(1536)).toBe("1.5 GiB");
    expect(formatMib(1280)).toBe("1.2 GiB"); // 1.25, never rounded up
    expect(formatMib(2 * 1024 * 1024)).toBe("2 TiB");
    expect(formatGib(0)).toBe("0 B");
    expect(formatResources({ vcpus: 2, memoryMib: 4096, diskGib: 20 })).toBe("2 vCPU, 4 GiB memory, 20 GiB disk");
  });
});

describe("formatPercent and formatExactDuration", () => {
  it("print a fraction with at most one decimal, and a configured duration exactly", () => {
    expect(formatPercent(0.6)).toBe("60%");
    expect(formatPercent(0.725)).toBe("72.5%");
    expect(formatPercent(0.12345)).toBe("12.3%");
    expect(formatPercent(1)).toBe("100%");
    expect(formatExactDuration(45_000)).toBe("45s");
    expect(formatExactDuration(180_000)).toBe("3m");
    expect(formatExactDuration(90_000)).toBe("1m30s");
    expect(formatExactDuration(630_000)).toBe("10m30s");
    expect(formatExactDuration(3_600_000)).toBe("1h");
    expect(formatExactDuration(3_900_000)).toBe("1h5m");
    expect(formatExactDuration(-5)).toBe("0s");
  });
});
