import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { addResources, fitsIn, formatMib, parseSizeGib, parseSizeMib, subtractResources, sumResources, ZERO } from "./resources.js";

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
    ["4G", 4096],
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

  it("formats with the largest unit that divides exactly", () => {
    expect(formatMib(512)).toBe("512 MiB");
    expect(formatMib(4096)).toBe("4 GiB");
    expect(formatMib(1536)).toBe("1536 MiB");
    expect(formatMib(2 * 1024 * 1024)).toBe("2 TiB");
  });
});
