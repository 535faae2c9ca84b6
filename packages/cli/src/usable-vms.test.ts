import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DesiredState, Host, HostState, Image, ImageInfo, Vm, VmPhase, Volume, VolumeInfo } from "@berth/api";
import { BerthError, ErrorCode, nicMacAddress, notFound } from "@berth/core";
import { afterAll, describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { recordingIo, stubPerTest, type StubCluster, type TerminalScript } from "./stub-server.testkit.js";

// `berth image`, `berth volume`, and vm create / vm show / host show with images, NICs, cloud-init
// and volumes, against a stub ClusterService.

const NOW = 1_700_000_000_000;
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4xk0cVkq2mJ3l7Nq0Zk9b5pQ1b0mC2o8t1e4Zq9Q2x me@laptop";
const dir = mkdtempSync(join(tmpdir(), "berth-usable-vms-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const stub = stubPerTest();

async function berth(s: StubCluster, argv: string[], terminal: TerminalScript = {}) {
  const io = recordingIo({ HOME: dir }, NOW, terminal);
  io.cwd = dir;
  const code = await run(["--insecure", "--controller", s.address, ...argv], io);
  return { code, out: io.out, err: io.err, questions: io.questions };
}

const image = (name: string, extra: Partial<Image> = {}): Image =>
  Image.fromPartial({ id: `id-${name}`, name, source: `https://images.example/${name}.qcow2`, format: "qcow2", createdAtMs: NOW - 3600_000, ...extra });

const volume = (name: string, extra: Partial<Volume> = {}): Volume =>
  Volume.fromPartial({ id: `vol-${name}`, name, sizeGib: 10, createdAtMs: NOW - 60_000, generation: 1, ...extra });

function vm(name: string, extra: Partial<Vm> = {}): Vm {
  return Vm.fromPartial({
    id: `id-${name}`,
    spec: { name, resources: { vcpus: 2, memoryMib: 2048, diskGib: 20 } },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId: "host-2",
    generation: 1,
    status: { phase: VmPhase.VM_PHASE_PENDING },
    createdAtMs: NOW - 1000,
    ...extra,
  });
}

describe("berth image", () => {
  it("create sends the name, source, format (qcow2 by default) and checksum, and prints the image", async () => {
    const s = await stub({ createImage: (r) => ({ image: { ...r.image!, id: "id-new", createdAtMs: NOW - 1000 } }) });
    const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const r = await berth(s, ["image", "create", "jammy", "--source", "https://images.example/jammy.img", "--sha256", sha.toUpperCase()]);
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("createImage")[0]?.image).toMatchObject({ name: "jammy", source: "https://images.example/jammy.img", format: "qcow2", sha256: sha });
    expect(r.out).toBe(
      "NAME   FORMAT  SOURCE                            HOSTS  VMS  SIZE  AGE\n" + "jammy  qcow2   https://images.example/jammy.img  0      0    -     1s\n",
    );
    const raw = await berth(s, ["image", "create", "scratch", "--source", "/srv/images/scratch.raw", "--format", "raw"]);
    expect(raw.code).toBe(0);
    expect(s.requests("createImage")[1]?.image).toMatchObject({ format: "raw", sha256: "" });
  });

  it("refuses a relative --source, an unknown --format and a bad name before any call (exit 2)", async () => {
    const s = await stub({ createImage: (r) => ({ image: r.image }) });
    const relative = await berth(s, ["image", "create", "jammy", "--source", "jammy.img"]);
    expect(relative.code).toBe(ExitCode.Usage);
    expect(relative.err).toMatch(/^error: --source: jammy\.img is a relative path, but each host reads the source itself/);
    const format = await berth(s, ["image", "create", "jammy", "--source", "/srv/j.img", "--format", "vmdk"]);
    expect(format.code).toBe(ExitCode.Usage);
    expect(format.err).toContain("error: option '--format <format>' argument 'vmdk' is invalid. Allowed choices are qcow2, raw.");
    expect((await berth(s, ["image", "create", "Jammy", "--source", "/srv/j.img"])).code).toBe(ExitCode.Usage);
    expect(s.requests("createImage")).toHaveLength(0);
  });

  it("list: natural order, hosts counted (named with -o wide), -o name", async () => {
    const s = await stub({
      listImages: () => ({
        images: [
          ImageInfo.fromPartial({ image: image("ubuntu-10"), hosts: ["host-1"], vms: 2, sizeBytes: 2 ** 30 }),
          ImageInfo.fromPartial({ image: image("ubuntu-9"), hosts: ["host-10", "host-2"], vms: 0, sizeBytes: 0 }),
        ],
      }),
    });
    const r = await berth(s, ["image", "list"]);
    expect(r.out.split("\n").map((l) => l.split(/ +/).slice(0, 5).join(" "))).toEqual([
      "NAME FORMAT SOURCE HOSTS VMS",
      "ubuntu-9 qcow2 https://images.example/ubuntu-9.qcow2 2 0",
      "ubuntu-10 qcow2 https://images.example/ubuntu-10.qcow2 1 2",
      "",
    ]);
    expect((await berth(s, ["-o", "wide", "image", "list"])).out.split("\n")[1]).toMatch(/ host-2,host-10 +0 +- +1h +- +id-ubuntu-9$/);
    expect((await berth(s, ["-o", "name", "image", "list"])).out).toBe("ubuntu-9\nubuntu-10\n");
  });

  it("show: the detail; an unknown image is exit 3", async () => {
    const s = await stub({
      getImage: (r) => {
        if (r.name !== "jammy") throw notFound(`image ${r.name}`);
        return { image: ImageInfo.fromPartial({ image: image("jammy"), hosts: ["host-1"], vms: 1, sizeBytes: 2 ** 29, virtualSizeBytes: 2 ** 31 }) };
      },
    });
    const r = await berth(s, ["image", "show", "jammy"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("Size:     512 MiB on a host's disk; virtual 2 GiB (the smallest --disk over it)\n");
    expect(r.out).toContain("Hosts:    1: host-1\n");
    const missing = await berth(s, ["image", "show", "nope"]);
    expect(missing.code).toBe(ExitCode.NotFound);
    expect(missing.err).toBe("error: image nope not found\n");
  });

  it("delete: refused without --yes and no terminal; asks on one, naming what it holds; the controller's refusal while used is exit 6", async () => {
    const s = await stub({
      getImage: () => ({ image: ImageInfo.fromPartial({ image: image("jammy"), hosts: ["host-1", "host-2"], vms: 0 }) }),
      deleteImage: () => ({}),
    });
    const script = await berth(s, ["image", "delete", "jammy"]);
    expect(script.code).toBe(ExitCode.Usage);
    expect(script.err).toBe("error: image delete: refusing without --yes: standard input is not a terminal, so nobody can confirm\n");
    expect(s.requests("deleteImage")).toHaveLength(0);
    const asked = await berth(s, ["image", "delete", "jammy"], { interactive: true, answers: ["y"] });
    expect(asked.code).toBe(0);
    expect(asked.questions[0]).toContain("This removes image jammy (https://images.example/jammy.qcow2; held by 2 hosts, used by 0 VMs) from the catalog");
    expect(asked.out).toBe("image jammy deleted\n");
    s.handlers.deleteImage = () => {
      throw new BerthError(ErrorCode.FailedPrecondition, "image jammy is used by 2 VMs: web-1, web-2");
    };
    const used = await berth(s, ["image", "delete", "jammy", "--yes"]);
    expect(used.code).toBe(ExitCode.Conflict);
    expect(used.err).toBe("error: image jammy is used by 2 VMs: web-1, web-2\n");
    expect(s.requests("deleteImage")).toHaveLength(2);
  });
});

describe("berth volume", () => {
  it("create: --size through the disk parser (GiB), --host binds it; prints it with its phase", async () => {
    const s = await stub({ createVolume: (r) => ({ volume: { ...r.volume!, id: "vol-1", createdAtMs: NOW - 1000, generation: 1 } }) });
    const bound = await berth(s, ["volume", "create", "db-data", "--size", "100GiB", "--host", "host-2"]);
    expect(bound.err).toBe("");
    expect(s.requests("createVolume")[0]?.volume).toMatchObject({ name: "db-data", sizeGib: 100, hostId: "host-2" });
    expect(bound.out).toBe("NAME     SIZE     HOST    ATTACHED TO  PHASE     AGE\n" + "db-data  100 GiB  host-2  -            creating  1s\n");
    const unbound = await berth(s, ["volume", "create", "scratch", "--size", "1500MiB"]);
    expect(s.requests("createVolume")[1]?.volume).toMatchObject({ sizeGib: 2, hostId: "" });
    expect(unbound.out.split("\n")[1]).toMatch(/^scratch +2 GiB +<unbound> +- +unbound +1s$/);
    const json = await berth(s, ["-o", "json", "volume", "create", "x", "--size", "1"]);
    expect(JSON.parse(json.out)).toMatchObject({ volume: { name: "x", sizeGib: 1 }, phase: "unbound" });
  });

  it("create refuses a bad --size or --host before any call", async () => {
    const s = await stub({ createVolume: (r) => ({ volume: r.volume }) });
    const none = await berth(s, ["volume", "create", "x", "--size", "0"]);
    expect(none.code).toBe(ExitCode.Usage);
    expect(none.err).toMatch(/^error: --size: must be a whole number from 1 to \d+ GiB \(got 0\)\n$/);
    expect((await berth(s, ["volume", "create", "x", "--size", "10G"])).err).toMatch(/^error: --size: '10G' is ambiguous/);
    expect((await berth(s, ["volume", "create", "x", "--size", "10GiB", "--host", "Host_1"])).code).toBe(ExitCode.Usage);
    expect(s.requests("createVolume")).toHaveLength(0);
  });

  it("list: --host is sent; natural order; <unbound>; -o name", async () => {
    const s = await stub({
      listVolumes: () => ({
        volumes: [
          VolumeInfo.fromPartial({ volume: volume("data-10", { hostId: "host-1", attachedTo: "db-1" }), phase: "attached" }),
          VolumeInfo.fromPartial({ volume: volume("data-9"), phase: "unbound" }),
        ],
      }),
    });
    const r = await berth(s, ["volume", "list", "--host", "host-1"]);
    expect(s.requests("listVolumes")[0]).toEqual({ hostId: "host-1" });
    expect(r.out).toBe(
      "NAME     SIZE    HOST       ATTACHED TO  PHASE     AGE\n" +
        "data-9   10 GiB  <unbound>  -            unbound   1m\n" +
        "data-10  10 GiB  host-1     db-1         attached  1m\n",
    );
    expect((await berth(s, ["-o", "name", "volume", "list"])).out).toBe("data-9\ndata-10\n");
  });

  it("attach and detach send the names and say what happened; -o json prints the answer", async () => {
    const s = await stub({
      attachVolume: (r) => ({ volume: volume(r.volume, { hostId: "host-2", attachedTo: r.vm }), vm: vm(r.vm, { generation: 5 }) }),
      detachVolume: (r) => ({ volume: volume(r.volume, { hostId: "host-2" }), vm: vm("db-1", { generation: 6 }) }),
    });
    const attached = await berth(s, ["volume", "attach", "db-data", "db-1"]);
    expect(s.requests("attachVolume")[0]).toEqual({ volume: "db-data", vm: "db-1" });
    expect(attached.out).toBe("volume db-data attached to vm db-1 on host-2 (vm generation 5: its host attaches it, live if the VM runs)\n");
    const detached = await berth(s, ["volume", "detach", "db-data"]);
    expect(s.requests("detachVolume")[0]).toEqual({ volume: "db-data" });
    expect(detached.out).toBe("volume db-data detached from vm db-1; it and its data stay on host-2\n");
    const json = await berth(s, ["-o", "json", "volume", "attach", "db-data", "db-1"]);
    expect(JSON.parse(json.out)).toMatchObject({ volume: { name: "db-data", attachedTo: "db-1" }, vm: { generation: 5 } });
  });

  it("delete: --yes needed without a terminal; the host removes it; attached: the controller's refusal, exit 6", async () => {
    const s = await stub({ deleteVolume: (r) => ({ volume: volume(r.name, { hostId: "host-2", deleting: true }) }) });
    expect((await berth(s, ["volume", "delete", "scratch"])).code).toBe(ExitCode.Usage);
    expect(s.requests("deleteVolume")).toHaveLength(0);
    const r = await berth(s, ["volume", "delete", "scratch", "--yes"]);
    expect(r.code).toBe(0);
    expect(r.out).toBe("volume scratch deleting: host-2 removes it and its data, then the record goes\n");
    s.handlers.deleteVolume = () => {
      throw new BerthError(ErrorCode.FailedPrecondition, "volume db-data is attached to db-1: detach it first");
    };
    const attached = await berth(s, ["volume", "delete", "db-data", "--yes"]);
    expect(attached.code).toBe(ExitCode.Conflict);
    expect(attached.err).toBe("error: volume db-data is attached to db-1: detach it first\n");
  });
});

describe("vm create with an image, NICs, cloud-init and volumes", () => {
  const create = (s: StubCluster, extra: string[], terminal: TerminalScript = {}) =>
    berth(s, ["vm", "create", "app-1", "--vcpus", "2", "--memory", "2GiB", "--disk", "20GiB", ...extra], terminal);

  it("sends the image, the NICs in order, the keys read from files, the user-data from stdin, and the volumes", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec!.name, { spec: r.spec }) }) });
    writeFileSync(join(dir, "team.pub"), `# ops\n${KEY}\n`);
    const userData = "#cloud-config\npackages: [postgresql]\n";
    const r = await create(
      s,
      ["--image", "jammy", "--network", "default", "--network", "storage", "--ssh-key", "@team.pub", "--ssh-key", "ssh-ed25519 AAAAB3 ops@bastion", "--user-data", "-", "--volume", "db-data"],
      { stdin: userData },
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const spec = s.requests("createVm")[0]?.spec;
    expect(spec).toMatchObject({
      image: "jammy",
      networks: ["default", "storage"],
      volumes: ["db-data"],
      cloudInit: { sshAuthorizedKeys: [KEY, "ssh-ed25519 AAAAB3 ops@bastion"], userData },
    });
  });

  it("an image without --ssh-key or --user-data: no seed, and a note saying there is no key to log in with", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec!.name, { spec: r.spec }) }) });
    const r = await create(s, ["--image", "jammy"]);
    expect(r.code).toBe(0);
    expect(s.requests("createVm")[0]?.spec?.cloudInit).toBeUndefined();
    expect(r.err).toBe("note: no --ssh-key or --user-data: the guest gets no cloud-init seed, so a cloud image has no key or password to log in with\n");
    // Machine output stays clean.
    expect((await create(s, ["--image", "jammy", "-o", "json"])).err).toBe("");
  });

  it("refuses a bad key, too large a user-data, and --image without --disk, with exit 2 and nothing sent", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec!.name, { spec: r.spec }) }) });
    const key = await create(s, ["--ssh-key", "id_rsa.pub"]);
    expect(key.code).toBe(ExitCode.Usage);
    expect(key.err).toMatch(/^error: --ssh-key: id_rsa\.pub is neither an OpenSSH public key/);
    writeFileSync(join(dir, "huge.yaml"), `#cloud-config\n${"#".repeat(64 * 1024)}\n`);
    const big = await create(s, ["--user-data", "huge.yaml"]);
    expect(big.code).toBe(ExitCode.Usage);
    expect(big.err).toMatch(/^error: --user-data: huge\.yaml: 65551 bytes is too large: user-data is at most 64 KiB/);
    const noDisk = await berth(s, ["vm", "create", "app-1", "--vcpus", "2", "--memory", "2GiB", "--image", "jammy"]);
    expect(noDisk.code).toBe(ExitCode.Usage);
    expect(noDisk.err).toBe(
      "error: --disk: required: the VM's disk is a layer over image jammy, so give --disk at least the image's virtual size (berth image show jammy)\n",
    );
    // A bad flag is found before standard input is read (read first, this empty one would be the error).
    const early = await create(s, ["--vcpus", "0", "--user-data", "-"], { stdin: "" });
    expect(early.err).toBe("error: --vcpus: must be from 1 to 1024 (got 0)\n");
    expect(s.requests("createVm")).toHaveLength(0);
  });

  it("the controller's answer to an unknown image or a missing network is its exit code (3, 4)", async () => {
    const s = await stub({
      createVm: () => {
        throw notFound("image jammy");
      },
    });
    const r = await create(s, ["--image", "jammy", "--ssh-key", KEY]);
    expect(r.code).toBe(ExitCode.NotFound);
    expect(r.err).toBe("error: image jammy not found\n");
    s.handlers.createVm = () => {
      throw new BerthError(ErrorCode.ResourceExhausted, "no host can take vm app-1: 3 hosts lack network storage");
    };
    expect((await create(s, ["--network", "storage"])).code).toBe(ExitCode.NoCapacity);
  });

  it("berth plan sends the same devices, reading the keys as vm create does, with no note", async () => {
    const s = await stub({ planPlacement: (r) => ({ placeable: true, placements: r.specs.map((sp) => ({ vmName: sp.name, hostId: "host-1", verdicts: [] })), reasons: [] }) });
    const r = await berth(s, ["plan", "--vcpus", "1", "--memory", "1GiB", "--disk", "10GiB", "--image", "jammy", "--network", "default", "--ssh-key", KEY]);
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(s.requests("planPlacement")[0]?.specs[0]).toMatchObject({ image: "jammy", networks: ["default"], cloudInit: { sshAuthorizedKeys: [KEY], userData: "" } });
  });
});

describe("vm show, vm list -o wide and host show: addresses, volumes, what hosts offer", () => {
  const running = vm("app-1", {
    spec: { name: "app-1", resources: { vcpus: 2, memoryMib: 2048, diskGib: 20 }, image: "jammy", networks: ["default"], volumes: ["db-data"], cloudInit: { sshAuthorizedKeys: [KEY], userData: "" } } as never,
    status: {
      phase: VmPhase.VM_PHASE_RUNNING,
      interfaces: [{ network: "default", mac: nicMacAddress("id-app-1", 0), ipAddresses: ["10.122.3.4"], addressSource: "lease" }],
    } as never,
  });

  it("vm show: the NIC with its MAC and address, the volume with its size and phase, the seed counted", async () => {
    const s = await stub({
      getVm: () => ({ vm: running }),
      listVolumes: () => ({ volumes: [VolumeInfo.fromPartial({ volume: volume("db-data", { sizeGib: 100, hostId: "host-2", attachedTo: "app-1" }), phase: "attached" })] }),
    });
    const r = await berth(s, ["vm", "show", "app-1"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("Image:            jammy\n");
    expect(r.out).toContain(`Networks:         eth0  default  ${nicMacAddress("id-app-1", 0)}  10.122.3.4 (lease)\n`);
    expect(r.out).toContain("Volumes:          db-data (100 GiB, attached)\n");
    expect(r.out).toContain("Cloud-init:       1 ssh key; user-data: Berth's own (hostname and keys)\n");
    expect(r.out).not.toContain("AAAAC3Nz");
    // Without an answer about volumes, their names.
    s.handlers.listVolumes = () => {
      throw new BerthError(ErrorCode.Unavailable, "busy");
    };
    expect((await berth(s, ["vm", "show", "app-1"])).out).toContain("Volumes:          db-data\n");
  });

  it("vm list -o wide: the IP column", async () => {
    const s = await stub({ listVms: () => ({ vms: [running, vm("app-2")], nextPageToken: "" }) });
    const lines = (await berth(s, ["-o", "wide", "vm", "list"])).out.split("\n");
    expect(lines[0]).toMatch(/ AGE +IP +ID /);
    expect(lines[1]).toMatch(/^app-1 .* 10\.122\.3\.4 +id-app-1 /);
    expect(lines[2]).toMatch(/^app-2 .* - +id-app-2 /);
  });

  it("host show: networks, images named from the catalog (ids when it does not answer), volumes", async () => {
    const host = Host.fromPartial({
      id: "host-2",
      state: HostState.HOST_STATE_READY,
      networks: [{ name: "default", kind: "network", active: true }],
      images: [{ imageId: "id-jammy", sizeBytes: 2 ** 30, virtualSizeBytes: 2 ** 32 }],
      volumes: [{ volumeId: "vol-db-data", sizeGib: 100, attachedVmId: "id-app-1" }],
    });
    const s = await stub({ getHost: () => ({ host }), listImages: () => ({ images: [ImageInfo.fromPartial({ image: image("jammy") })] }) });
    const r = await berth(s, ["host", "show", "host-2"]);
    expect(r.out).toContain("Networks:         default (network)\n");
    expect(r.out).toContain("Images:           1 (1 GiB on disk): jammy\n");
    expect(r.out).toContain("Volumes:          1 (100 GiB), 1 attached\n");
    s.handlers.listImages = () => {
      throw new BerthError(ErrorCode.Unavailable, "busy");
    };
    expect((await berth(s, ["host", "show", "host-2"])).out).toContain("Images:           1 (1 GiB on disk): id-jammy\n");
    // -o json is the host as answered: no catalog call.
    const before = s.requests("listImages").length;
    await berth(s, ["-o", "json", "host", "show", "host-2"]);
    expect(s.requests("listImages")).toHaveLength(before);
  });
});
