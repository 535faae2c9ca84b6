import { ImageInfo, VolumeInfo } from "@berth/api";
import { describe, expect, it } from "vitest";
import { render } from "./output.js";
import { imageDetail, imageListView, imageTable, shortenSource, volumeDetail, volumeListView, volumeTable } from "./storage-format.js";

const NOW = 1_700_000_000_000;
const JAMMY_URL = "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img";

const jammy = ImageInfo.fromPartial({
  image: { id: "img-1", name: "jammy", source: JAMMY_URL, format: "qcow2", sha256: "", createdAtMs: NOW - 2 * 86_400_000 },
  hosts: ["host-1", "host-10", "host-2"],
  vms: 4,
  sizeBytes: 650 * 2 ** 20,
  virtualSizeBytes: 2.2 * 2 ** 30,
});
const fresh = ImageInfo.fromPartial({
  image: { id: "img-2", name: "alpine", source: "/srv/images/alpine.raw", format: "raw", createdAtMs: NOW - 60_000 },
});

describe("image tables", () => {
  it("shortens a long source to its head and file name; a short one stays whole", () => {
    expect(shortenSource(JAMMY_URL)).toBe("https://cloud-images.ub…/jammy-server-cloudimg-amd64.img");
    expect(shortenSource(JAMMY_URL)).toHaveLength(56);
    expect(shortenSource("/srv/images/alpine.raw")).toBe("/srv/images/alpine.raw");
    // No usable file name: the end of it.
    expect(shortenSource(`https://example.com/${"x".repeat(60)}`)).toBe(`…${"x".repeat(55)}`);
  });

  it("list: NAME, FORMAT, SOURCE (shortened), HOSTS (count), VMS, SIZE, AGE; - before any host holds it", () => {
    expect(imageTable([fresh, jammy], NOW)).toBe(
      "NAME    FORMAT  SOURCE                                                    HOSTS  VMS  SIZE     AGE\n" +
        "alpine  raw     /srv/images/alpine.raw                                    0      0    -        1m\n" +
        "jammy   qcow2   https://cloud-images.ub…/jammy-server-cloudimg-amd64.img  3      4    650 MiB  2d\n",
    );
  });

  it("wide: the whole source, the hosts by name (natural order), the virtual size and the id", () => {
    const [header, , row] = render("wide", imageListView([fresh, jammy], NOW)).split("\n");
    expect(header).toMatch(/^NAME +FORMAT +SOURCE +HOSTS +VMS +SIZE +AGE +VIRTUAL SIZE +ID$/);
    expect(row).toContain(JAMMY_URL);
    expect(row).toMatch(/ host-1,host-2,host-10 +4 +650 MiB +2d +2\.2 GiB +img-1$/);
    expect(render("name", imageListView([fresh, jammy], NOW))).toBe("alpine\njammy\n");
    expect(JSON.parse(render("json", imageListView([jammy], NOW)))).toEqual([ImageInfo.toJSON(jammy)]);
  });

  it("show: every field, the sizes, the hosts, and what an unset checksum or an unfetched image means", () => {
    const text = imageDetail(jammy, NOW);
    expect(text).toContain(`Source:   ${JAMMY_URL}\n`);
    expect(text).toContain("SHA-256:  - (not checked)\n");
    expect(text).toContain("Size:     650 MiB on a host's disk; virtual 2.2 GiB (the smallest --disk over it)\n");
    expect(text).toContain("VMs:      4 (it cannot be deleted while a VM names it)\n");
    expect(text).toContain("Hosts:    3: host-1, host-2, host-10\n");
    expect(text).toContain("Created:  2d ago (2023-11-12T22:13:20Z)\n");
    const none = imageDetail(fresh, NOW);
    expect(none).toContain("Format:   raw\n");
    expect(none).toContain("Size:     - (no host holds it yet)\n");
    expect(none).toContain("Hosts:    - (none yet: a host fetches it when a VM there needs it)\n");
  });
});

describe("volume tables", () => {
  const bound = VolumeInfo.fromPartial({
    volume: { id: "vol-1", name: "db-data", sizeGib: 100, hostId: "host-2", attachedTo: "db-1", createdAtMs: NOW - 3600_000, generation: 3 },
    phase: "attached",
  });
  const unbound = VolumeInfo.fromPartial({ volume: { id: "vol-2", name: "scratch", sizeGib: 10, createdAtMs: NOW - 5_000 }, phase: "unbound" });

  it("list: NAME, SIZE, HOST (<unbound> until bound), ATTACHED TO, PHASE, AGE; wide adds ID and GENERATION", () => {
    expect(volumeTable([bound, unbound], NOW)).toBe(
      "NAME     SIZE     HOST       ATTACHED TO  PHASE     AGE\n" +
        "db-data  100 GiB  host-2     db-1         attached  1h\n" +
        "scratch  10 GiB   <unbound>  -            unbound   5s\n",
    );
    expect(render("wide", volumeListView([bound], NOW)).split("\n")[1]).toMatch(/ attached +1h +vol-1 +3$/);
    expect(render("name", volumeListView([bound, unbound], NOW))).toBe("db-data\nscratch\n");
  });

  it("show: where an unbound volume will go, and a delete in progress", () => {
    expect(volumeDetail(unbound, NOW)).toContain("Host:         <unbound> (bound to the host of the first VM it is attached to)\n");
    const deleting = VolumeInfo.fromPartial({ volume: { ...bound.volume!, attachedTo: "", deleting: true }, phase: "deleting" });
    const text = volumeDetail(deleting, NOW);
    expect(text).toContain("Phase:        deleting (delete asked: the host removes it, then the record goes)\n");
    expect(text).toContain("Attached to:  -\n");
  });
});
