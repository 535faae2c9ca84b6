import { describe, expect, it } from "vitest";
import { DesiredState, VmSpec, Volume, type HostVolume, type Vm } from "@berth/api";
import { recordFailure } from "./reconcile.js";
import { attachDecision, planVolumeCommands, released, volumePhase, volumesForCreate } from "./volumes.js";

const volume = (name: string, over: Partial<Volume> = {}): Volume => Volume.fromPartial({ id: `id-${name}`, name, sizeGib: 10, generation: 1, ...over });
const pool = (...held: HostVolume[]): Map<string, HostVolume> => new Map(held.map((v) => [v.volumeId, v]));
const inPool = (name: string, attachedVmId = ""): HostVolume => ({ volumeId: `id-${name}`, sizeGib: 10, attachedVmId });
const vm = (name: string, hostId: string, volumes: string[] = [], desiredState = DesiredState.DESIRED_STATE_RUNNING): Vm => ({
  id: `vm-id-${name}`,
  spec: VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, volumes }),
  desiredState,
  hostId,
  generation: 3,
  status: undefined,
  createdAtMs: 0,
  forceStop: false,
  requestId: "",
});

describe("volumePhase", () => {
  it("follows the record and the host's report through a volume's life", () => {
    expect(volumePhase(volume("d"), pool(), undefined)).toBe("unbound");
    expect(volumePhase(volume("d", { hostId: "h1" }), pool(), undefined)).toBe("creating");
    expect(volumePhase(volume("d", { hostId: "h1" }), pool(inPool("d")), undefined)).toBe("available");
    expect(volumePhase(volume("d", { hostId: "h1", attachedTo: "web" }), pool(inPool("d")), "vm-id-web")).toBe("attaching");
    expect(volumePhase(volume("d", { hostId: "h1", attachedTo: "web" }), pool(), "vm-id-web")).toBe("attaching");
    expect(volumePhase(volume("d", { hostId: "h1", attachedTo: "web" }), pool(inPool("d", "vm-id-web")), "vm-id-web")).toBe("attached");
    // Attached on the host to another domain than the record's VM (a stale VM id): not attached yet.
    expect(volumePhase(volume("d", { hostId: "h1", attachedTo: "web" }), pool(inPool("d", "vm-id-old")), "vm-id-web")).toBe("attaching");
    expect(volumePhase(volume("d", { hostId: "h1" }), pool(inPool("d", "vm-id-web")), undefined)).toBe("detaching");
    expect(volumePhase(volume("d", { hostId: "h1", deleting: true }), pool(inPool("d")), undefined)).toBe("deleting");
  });
  it("is the record's alone while the host's stream is down", () => {
    expect(volumePhase(volume("d", { hostId: "h1" }), undefined, undefined)).toBe("available");
    expect(volumePhase(volume("d", { hostId: "h1", attachedTo: "web" }), undefined, "vm-id-web")).toBe("attached");
  });
});

describe("planVolumeCommands", () => {
  const context = { failures: new Map(), nowMs: 1_000 };
  const summary = (p: ReturnType<typeof planVolumeCommands>) => p.commands.map((c) => `${c.volumeId}:${c.action.$case}:${c.generation}`);

  it("makes a bound volume missing from the pool, unless a VM's command makes it; deletes a detached one being deleted; removes the record once the pool has none", () => {
    const volumes = [
      volume("new", { hostId: "h1", sizeGib: 20, generation: 2 }),
      volume("held", { hostId: "h1" }),
      volume("attached", { hostId: "h1", attachedTo: "web" }),
      volume("doomed", { hostId: "h1", deleting: true, generation: 4 }),
      volume("busy", { hostId: "h1", deleting: true }),
      volume("gone", { hostId: "h1", deleting: true }),
    ];
    const plan = planVolumeCommands(volumes, pool(inPool("held"), inPool("doomed"), inPool("busy", "vm-id-web")), context);
    expect(summary(plan)).toEqual(["id-new:createVolume:2", "id-doomed:deleteVolume:4"]);
    expect(plan.commands[0]).toMatchObject({ vmId: "", volumeId: "id-new", action: { $case: "createVolume", value: { sizeGib: 20 } } });
    expect(plan.remove.map((v) => v.name)).toEqual(["gone"]);
    expect(plan.nextRetryAtMs).toBeUndefined();
  });

  it("backs a failed volume command off per volume, and holds a permanent failure until the volume's generation changes", () => {
    const v = volume("new", { hostId: "h1", generation: 2 });
    const retrying = recordFailure(undefined, { generation: 2, code: "UNAVAILABLE", message: "pool busy" }, 1_000, () => 0.5);
    const early = planVolumeCommands([v], pool(), { failures: new Map([["volume:id-new", retrying]]), nowMs: 1_100 });
    expect(early.commands).toEqual([]);
    expect(early.nextRetryAtMs).toBe(retrying.nextAttemptAtMs);
    expect(summary(planVolumeCommands([v], pool(), { failures: new Map([["volume:id-new", retrying]]), nowMs: retrying.nextAttemptAtMs }))).toEqual(["id-new:createVolume:2"]);
    const permanent = recordFailure(undefined, { generation: 2, code: "INVALID_ARGUMENT", message: "bad size" }, 1_000, () => 0.5);
    expect(planVolumeCommands([v], pool(), { failures: new Map([["volume:id-new", permanent]]), nowMs: 10 ** 9 }).commands).toEqual([]);
    // A VM's failure (keyed by its id) is not the volume's.
    expect(summary(planVolumeCommands([v], pool(), { failures: new Map([["id-new", permanent]]), nowMs: 1 }))).toEqual(["id-new:createVolume:2"]);
    // Deleting is a new generation: the old failure no longer holds it back.
    expect(summary(planVolumeCommands([{ ...v, deleting: true, generation: 3 }], pool(inPool("new")), { failures: new Map([["volume:id-new", permanent]]), nowMs: 1 }))).toEqual(["id-new:deleteVolume:3"]);
  });
});

describe("volumesForCreate", () => {
  const records = new Map([
    ["free", volume("free", { sizeGib: 5 })],
    ["free-2", volume("free-2", { sizeGib: 7 })],
    ["on-h1", volume("on-h1", { hostId: "h1" })],
    ["also-h1", volume("also-h1", { hostId: "h1" })],
    ["on-h2", volume("on-h2", { hostId: "h2" })],
    ["used", volume("used", { hostId: "h1", attachedTo: "db" })],
    ["doomed", volume("doomed", { hostId: "h1", deleting: true })],
  ]);
  const lookup = (n: string) => records.get(n);
  const spec = (volumes: string[]) => VmSpec.fromPartial({ name: "web", volumes });

  it("pins to the host of the bound volumes and asks room for the unbound ones", () => {
    expect(volumesForCreate(spec(["free", "on-h1", "free-2", "also-h1"]), "spec", lookup)).toMatchObject({ hostId: "h1", unboundGib: 12 });
    expect(volumesForCreate(spec(["free"]), "spec", lookup)).toMatchObject({ hostId: undefined, unboundGib: 5 });
    expect(volumesForCreate(spec([]), "spec", lookup)).toEqual({ volumes: [], hostId: undefined, unboundGib: 0 });
  });
  it("refuses unknown, attached, deleting and split volumes, naming the entry", () => {
    expect(() => volumesForCreate(spec(["free", "nope"]), "specs[2]", lookup)).toThrow("specs[2].volumes[1]: volume 'nope' not found");
    expect(() => volumesForCreate(spec(["used"]), "spec", lookup)).toThrow("spec.volumes[0]: volume 'used' is attached to vm 'db'");
    expect(() => volumesForCreate(spec(["doomed"]), "spec", lookup)).toThrow("spec.volumes[0]: volume 'doomed' is being deleted");
    expect(() => volumesForCreate(spec(["on-h1", "on-h2"]), "spec", lookup)).toThrow("spec.volumes[1]: volume 'on-h2' is on host 'h2' but volume 'on-h1' is on host 'h1'");
  });
});

describe("attachDecision", () => {
  it("binds an unbound volume, attaches one on the VM's host, and says nothing is to be done when it is attached already", () => {
    expect(attachDecision(volume("d"), vm("web", "h1"), false, 16)).toEqual({ bind: true });
    expect(attachDecision(volume("d", { hostId: "h1" }), vm("web", "h1"), false, 16)).toEqual({ bind: false });
    expect(attachDecision(volume("d", { hostId: "h1", attachedTo: "web" }), vm("web", "h1", ["d"]), false, 16)).toBeUndefined();
  });
  it("refuses a volume on another host, naming both hosts and the way out", () => {
    expect(() => attachDecision(volume("d", { hostId: "h2" }), vm("web", "h1"), false, 16)).toThrow(
      "volume 'd' is on host 'h2' but vm 'web' runs on host 'h1': a volume's data stays on its host; move the VM there first (berth vm migrate web --to h2), then attach",
    );
  });
  it("refuses while the volume is elsewhere or deleting, the VM migrating or deleting, or full", () => {
    expect(() => attachDecision(volume("d", { hostId: "h1", attachedTo: "db" }), vm("web", "h1"), false, 16)).toThrow("volume 'd' is attached to vm 'db'");
    expect(() => attachDecision(volume("d", { deleting: true }), vm("web", "h1"), false, 16)).toThrow("volume 'd' is being deleted");
    expect(() => attachDecision(volume("d"), vm("web", "h1"), true, 16)).toThrow("vm 'web' is migrating");
    expect(() => attachDecision(volume("d"), vm("web", "h1", [], DesiredState.DESIRED_STATE_DELETED), false, 16)).toThrow("vm 'web' is being deleted");
    expect(() => attachDecision(volume("d"), vm("web", "h1", ["a", "b"]), false, 2)).toThrow("vm 'web' has 2 volumes already");
  });
});

describe("released", () => {
  it("detaches the volume and bumps its generation, keeping its host (the data is there)", () => {
    expect(released(volume("d", { hostId: "h1", attachedTo: "web", generation: 5 }))).toMatchObject({ hostId: "h1", attachedTo: "", generation: 6 });
  });
});
