import { describe, expect, it } from "vitest";
import {
  DesiredState,
  DrainPhase,
  EventSeverity,
  HostState,
  MigrationPhase,
  Host,
  Migration,
  ScaleGroup,
  ScalePrediction,
  Vm,
  VmPhase,
  type ClusterEvent,
  type DeepPartial,
  type ScaleDecision,
  type ScaleGroupInfo,
} from "@berth/api";
import {
  FEED_LENGTH,
  badgesOf,
  durationText,
  feedOf,
  hostRow,
  migrationProgress,
  migrationRow,
  naturalCompare,
  percentText,
  placementView,
  scaleDecisionRow,
  scaleGroupDetail,
  scaleGroupRow,
  snapshotOf,
  vmDetail,
  vmMatches,
  vmRow,
} from "./view.js";

const host = (id: string, over: DeepPartial<Host> = {}): Host =>
  Host.fromPartial({ id, state: HostState.HOST_STATE_READY, capacity: { vcpus: 8, memoryMib: 16384, diskGib: 100 }, ...over });
const vm = (name: string, hostId: string, vcpus: number, memoryMib: number, over: DeepPartial<Vm> = {}): Vm =>
  Vm.fromPartial({
    id: `id-${name}`,
    hostId,
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    spec: { name, resources: { vcpus, memoryMib, diskGib: 10 }, labels: {} },
    status: { phase: VmPhase.VM_PHASE_RUNNING },
    ...over,
  });
const labels = (h: Host): string[] => badgesOf(h).map((b) => b.label);

describe("naturalCompare", () => {
  it("orders digit runs by value, case folded, and keeps distinct names distinct", () => {
    const names = ["host-10", "host-2", "Host-1", "host-1", "host-02", "a", "host-100", "host-9b", "host-9a"];
    expect([...names].sort(naturalCompare)).toEqual(["a", "Host-1", "host-1", "host-02", "host-2", "host-9a", "host-9b", "host-10", "host-100"]);
    expect(naturalCompare("vm-1", "vm-1")).toBe(0);
    expect(naturalCompare("host-1", "Host-1")).not.toBe(0);
  });
});

describe("hostRow", () => {
  it("splits the allocation bars into one segment per VM, as fractions of allocatable, largest first", () => {
    const vms = [vm("b", "h1", 1, 1024), vm("a", "h1", 2, 4096)];
    const row = hostRow({
      host: host("h1", { allocated: { vcpus: 3, memoryMib: 5120, diskGib: 20 }, usage: { vcpus: 2, memoryMib: 20000, diskGib: 1 } }),
      allocatable: { vcpus: 8, memoryMib: 16384, diskGib: 100 },
      vms,
      incoming: [vm("c", "h2", 4, 2048)],
    });
    expect(row.cpu.segments.map((s) => [s.vm, s.fraction, s.incoming])).toEqual([
      ["c", 0.5, true],
      ["a", 0.25, false],
      ["b", 0.125, false],
    ]);
    expect(row.cpu.allocatedFraction).toBe(3 / 8);
    expect(row.cpu.usedFraction).toBe(2 / 8);
    expect(row.cpu.label).toBe("3 / 8 vCPU");
    // Measured above allocatable is drawn at the end of the bar.
    expect(row.memory.usedFraction).toBe(1);
    expect(row.memory.label).toBe("5 GiB / 16 GiB");
    expect(row.memory.segments[0]).toMatchObject({ vm: "a", amount: 4096, amountText: "4 GiB", fraction: 0.25 });
    expect(row.vmCount).toBe(2);
    expect(row.fill).toBe(3 / 8);
    expect(row.state).toBe("READY");
    expect(row.badges).toEqual([]);
  });

  it("says unmeasured (null) for a host that never reported, over-committed when allocated exceeds allocatable", () => {
    const row = hostRow({ host: host("h1", { allocated: { vcpus: 12, memoryMib: 0, diskGib: 0 } }), allocatable: { vcpus: 8, memoryMib: 0, diskGib: 0 }, vms: [], incoming: [] });
    expect(row.cpu.used).toBeNull();
    expect(row.cpu.usedFraction).toBeNull();
    expect(row.cpu.over).toBe(true);
    expect(row.cpu.allocatedFraction).toBe(1.5);
    expect(row.fill).toBe(1);
    // Nothing allocatable: fractions are 0, not NaN or Infinity.
    expect(row.memory.allocatedFraction).toBe(0);
  });

  it("carries the drain's figures while a drain is recorded", () => {
    const row = hostRow({
      host: host("h1", { cordoned: true, drain: { phase: DrainPhase.DRAIN_PHASE_DRAINING, toMove: 3, moved: 1, inFlight: 1, failed: 0, message: "moving" } }),
      allocatable: { vcpus: 8, memoryMib: 16384, diskGib: 100 },
      vms: [],
      incoming: [],
    });
    expect(row.drain).toEqual({ phase: "DRAINING", toMove: 3, moved: 1, inFlight: 1, failed: 0, message: "moving" });
    expect(hostRow({ host: host("h2"), allocatable: { vcpus: 1, memoryMib: 1, diskGib: 1 }, vms: [], incoming: [] }).drain).toBeNull();
  });
});

describe("badgesOf", () => {
  it("names each state and condition an operator must see", () => {
    expect(labels(host("h"))).toEqual([]);
    expect(labels(host("h", { cordoned: true, cordonReason: "disk swap" }))).toEqual(["CORDONED"]);
    expect(badgesOf(host("h", { cordoned: true, cordonReason: "disk swap" }))[0]!.title).toBe("disk swap");
    expect(labels(host("h", { cordoned: true, drain: { phase: DrainPhase.DRAIN_PHASE_DRAINING } }))).toEqual(["DRAINING", "CORDONED"]);
    expect(labels(host("h", { cordoned: true, drain: { phase: DrainPhase.DRAIN_PHASE_DRAINED } }))).toEqual(["DRAINED", "CORDONED"]);
    expect(labels(host("h", { state: HostState.HOST_STATE_SUSPECT }))).toEqual(["SUSPECT"]);
    // Older versions wrote DISCONNECTED for what SUSPECT means now.
    expect(labels(host("h", { state: HostState.HOST_STATE_DISCONNECTED }))).toEqual(["SUSPECT"]);
    expect(labels(host("h", { state: HostState.HOST_STATE_DOWN }))).toEqual(["DOWN"]);
    expect(labels(host("h", { state: HostState.HOST_STATE_FENCED }))).toEqual(["FENCED"]);
    const hv = badgesOf(host("h", { hypervisor: { available: false, message: "libvirtd is not answering" } }));
    expect(hv).toEqual([{ label: "HYPERVISOR DOWN", tone: "bad", title: "libvirtd is not answering" }]);
    expect(labels(host("h", { hypervisor: { available: true, message: "" } }))).toEqual([]);
  });
});

describe("vmRow and the filter", () => {
  it("matches name, host, phase, group and labels, every word, case folded", () => {
    const row = vmRow(vm("web-1", "host-3", 1, 512, { spec: { name: "web-1", resources: { vcpus: 1, memoryMib: 512, diskGib: 5 }, labels: { tier: "Front" }, group: "web" } }));
    expect(row).toMatchObject({ name: "web-1", hostId: "host-3", phase: "RUNNING", desired: "RUNNING", vcpus: 1, memoryMib: 512 });
    // Sizes as every Berth view prints them (core's formatBytes), so the page restates no rule.
    expect(row).toMatchObject({ resourcesText: "1 vCPU, 512 MiB memory, 5 GiB disk", memoryText: "512 MiB", diskText: "5 GiB" });
    for (const f of ["web-1", "HOST-3", "running", "tier=front", "web host-3", "  "]) expect(vmMatches(row, f)).toBe(true);
    for (const f of ["db", "host-4", "stopped", "web-1 db"]) expect(vmMatches(row, f)).toBe(false);
  });
});

describe("migrations", () => {
  const m = (over: DeepPartial<Migration>): Migration => Migration.fromPartial({ vmName: "v", phase: MigrationPhase.MIGRATION_PHASE_MIGRATING, ...over });
  it("reports progress from processed / total, else from remaining against the estimate, else unknown", () => {
    expect(migrationProgress(m({ progress: { dataTotalBytes: 1000, dataProcessedBytes: 250 } }))).toBe(0.25);
    expect(migrationProgress(m({ dataEstimateBytes: 1000, progress: { dataRemainingBytes: 600, dataProcessedBytes: 1 } }))).toBe(0.4);
    expect(migrationProgress(m({}))).toBeNull();
    expect(migrationProgress(m({ phase: MigrationPhase.MIGRATION_PHASE_COMPLETED }))).toBe(1);
  });

  it("prints its figures in the one size style, as far as the hypervisor told them", () => {
    const gib = 2 ** 30;
    expect(migrationRow(m({ progress: { dataTotalBytes: 4 * gib, dataProcessedBytes: 1.25 * gib, dataRemainingBytes: 2.75 * gib } })).figuresText).toBe("1.2 GiB / 4 GiB, 2.7 GiB left");
    expect(migrationRow(m({ progress: { dataRemainingBytes: 512 * 2 ** 20 } })).figuresText).toBe("512 MiB left");
    expect(migrationRow(m({})).figuresText).toBe("");
  });
});

describe("the VM page", () => {
  it("shows the placement record's scores, runner-up and rejections; null when none was recorded", () => {
    const placed = vm("a", "h1", 1, 512, {
      placement: {
        decidedAtMs: 5,
        cause: "create",
        preset: "spread",
        hostsConsidered: 10,
        hostsFeasible: 7,
        scores: { "least-allocated": 0.8, balance: 0.5 },
        total: 0.7,
        runnerUpHost: "h2",
        runnerUpTotal: 0.6,
        rejectedByFilter: { fits: 2, cordoned: 1 },
        explained: true,
      },
    });
    const d = vmDetail(placed, undefined);
    expect(d.placement).toMatchObject({
      cause: "create",
      hostsConsidered: 10,
      hostsFeasible: 7,
      scores: [
        { weigher: "balance", score: 0.5 },
        { weigher: "least-allocated", score: 0.8 },
      ],
      total: 0.7,
      runnerUpHost: "h2",
      rejectedByFilter: [
        { filter: "fits", hosts: 2 },
        { filter: "cordoned", hosts: 1 },
      ],
    });
    expect(vmDetail(vm("b", "h1", 1, 512), undefined).placement).toBeNull();
    expect(placementView(undefined)).toBeNull();
    // A migration of another VM of that name (deleted and made again) is not this VM's.
    expect(vmDetail(placed, Migration.fromPartial({ vmName: "a", vmId: "other" })).migration).toBeNull();
    expect(vmDetail(placed, Migration.fromPartial({ vmName: "a", vmId: "id-a" })).migration?.vmName).toBe("a");
  });

  it("shows the VM's image, each NIC with the MAC and addresses its host reported, and its volumes", () => {
    const base = vm("n", "h1", 1, 512);
    const usable = {
      ...base,
      spec: { ...base.spec!, image: "jammy", networks: ["default", "lab"], volumes: ["data-1"] },
      status: { ...base.status!, interfaces: [{ network: "default", mac: "52:54:00:00:00:01", ipAddresses: ["10.122.0.5"], addressSource: "lease" }] },
    };
    const d = vmDetail(usable, undefined);
    expect(d.image).toBe("jammy");
    expect(d.nics).toEqual([
      { name: "eth0", network: "default", mac: "52:54:00:00:00:01", addresses: ["10.122.0.5"], source: "lease" },
      { name: "eth1", network: "lab", mac: "", addresses: [], source: "" },
    ]);
    expect(d.volumes).toEqual(["data-1"]);
  });
});

describe("snapshotOf", () => {
  it("sorts hosts and VMs naturally and keeps the newest events first, at most the feed's length", () => {
    const events: ClusterEvent[] = Array.from({ length: FEED_LENGTH + 5 }, (_, i) => ({
      timeMs: i,
      severity: i % 2 ? EventSeverity.EVENT_SEVERITY_WARNING : EventSeverity.EVENT_SEVERITY_NORMAL,
      reason: "R",
      objectKind: "vm",
      objectName: `vm-${i}`,
      hostId: "",
      message: "",
      revision: i,
    }));
    const s = snapshotOf({
      nowMs: 1,
      leader: { controllerId: "c1", leading: true, leaderAddress: "" },
      hosts: ["host-10", "host-9", "host-1"].map((id) => ({ host: host(id), allocatable: { vcpus: 8, memoryMib: 1, diskGib: 1 }, vms: [], incoming: [] })),
      vms: [vm("vm-10", "host-1", 1, 1), vm("vm-2", "host-1", 1, 1)],
      migrations: [],
      scaleGroups: ["web-10", "web-2"].map((name) => info({ name })),
      events,
    });
    expect(s.scaleGroups.map((g) => g.name)).toEqual(["web-2", "web-10"]);
    expect(s.hosts.map((h) => h.id)).toEqual(["host-1", "host-9", "host-10"]);
    expect(s.vms.map((v) => v.name)).toEqual(["vm-2", "vm-10"]);
    expect(s.events).toHaveLength(FEED_LENGTH);
    expect(s.events[0]!.timeMs).toBe(FEED_LENGTH + 4);
    expect(s.events.slice(0, 2).map((e) => e.warning)).toEqual([(FEED_LENGTH + 4) % 2 === 1, (FEED_LENGTH + 3) % 2 === 1]);
    expect(feedOf(events.slice(0, 2)).map((e) => e.timeMs)).toEqual([1, 0]);
  });
});

const decision = (over: Partial<ScaleDecision>): ScaleDecision => ({
  seq: 1,
  decidedAtMs: 1_000,
  reason: "ScaledOut",
  fromSize: 2,
  toSize: 4,
  warmMembers: 2,
  warmingMembers: 0,
  cpuUtilization: 0.95,
  reactiveSize: 4,
  predictedSize: 0,
  predictedCores: 0,
  message: "cpu 95% of 2 warm VMs against 50%: the reactive rule asks 4",
  added: ["web-3", "web-4"],
  removed: [],
  ...over,
});
/** A ScaleGroupInfo as ListScaleGroups answers it: the record and its live figures. */
const info = (group: DeepPartial<ScaleGroup>, live: Partial<Omit<ScaleGroupInfo, "group">> = {}): ScaleGroupInfo => ({
  group: ScaleGroup.fromPartial({ minSize: 1, maxSize: 4, policy: { targetCpu: 0.5 }, ...group }),
  running: 0,
  warm: 0,
  cpuUtilization: 0,
  creating: 0,
  removing: 0,
  lastError: "",
  ...live,
});
const members = (...names: string[]): { name: string; index: number; addedAtMs: number }[] => names.map((name, i) => ({ name, index: i + 1, addedAtMs: 0 }));

describe("scale groups", () => {
  it("a group's row: size from the members listed, bounds, target and CPU now in percent, running/warm, the newest decision", () => {
    const row = scaleGroupRow(
      info(
        {
          name: "web",
          members: members("web-1", "web-2", "web-3", "web-4"),
          template: { group: "spread" },
          decisionCount: 7,
          decisions: [decision({ seq: 6, reason: "ScaledIn", fromSize: 5, toSize: 2 }), decision({ seq: 7, decidedAtMs: 9_000 })],
        },
        { running: 3, warm: 2, cpuUtilization: 0.9544, creating: 1, lastError: "web-4: no host fits" },
      ),
    );
    expect(row).toMatchObject({
      name: "web",
      size: 4,
      minSize: 1,
      maxSize: 4,
      boundsText: "1..4",
      targetCpu: 0.5,
      targetText: "50%",
      cpu: 0.9544,
      cpuText: "95.4%",
      running: 3,
      warm: 2,
      creating: 1,
      removing: 0,
      decisionCount: 7,
      placementGroup: "spread",
      deleting: false,
      lastError: "web-4: no host fits",
    });
    expect(row.lastDecision).toEqual({
      seq: 7,
      decidedAtMs: 9_000,
      reason: "ScaledOut",
      fromSize: 2,
      toSize: 4,
      sizeText: "2 → 4",
      warmMembers: 2,
      warmingMembers: 0,
      cpu: 0.95,
      cpuText: "95%",
      reactiveSize: 4,
      predictedSize: 0,
      predictedCores: 0,
      predictedText: "—",
      message: "cpu 95% of 2 warm VMs against 50%: the reactive rule asks 4",
      added: ["web-3", "web-4"],
      removed: [],
    });
  });

  it("reads CPU as not measured (null, —) while no member is warm, and has no last decision before the first", () => {
    // cpuUtilization 0 with no warm member is "nothing reported", not an idle group.
    const row = scaleGroupRow(info({ name: "cold", members: members("cold-1") }, { running: 1, warm: 0, cpuUtilization: 0 }));
    expect([row.cpu, row.cpuText, row.lastDecision, row.size]).toEqual([null, "—", null, 1]);
    // Idle but measured is 0%.
    expect(scaleGroupRow(info({ name: "idle" }, { warm: 1, cpuUtilization: 0 })).cpuText).toBe("0%");
  });

  it("a decision's inputs: a bound change measured nothing; a prediction shows its size and cores", () => {
    const bounded = scaleDecisionRow(decision({ reason: "SizeBounded", fromSize: 1, toSize: 2, warmMembers: 0, warmingMembers: 1, cpuUtilization: 0, reactiveSize: 0, message: "the bounds are now 2..3", added: ["g-2"] }));
    expect(bounded).toMatchObject({ reason: "SizeBounded", sizeText: "1 → 2", cpu: null, cpuText: "—", warmingMembers: 1, reactiveSize: 0, predictedText: "—", added: ["g-2"] });
    const predicted = scaleDecisionRow(decision({ predictedSize: 5, predictedCores: 3.24, cpuUtilization: 0.725 }));
    expect([predicted.predictedText, predicted.cpuText]).toEqual(["5 (3.2 cores)", "72.5%"]);
  });

  it("a group's page: members oldest first with warm-up left, protection and their VM's phase; decisions newest first; the policy with defaults", () => {
    const now = 1_000_000;
    const group = {
      name: "web",
      minSize: 2,
      maxSize: 3,
      policy: { targetCpu: 0.5, intervalMs: 1000, warmupMs: 60_000, prediction: ScalePrediction.SCALE_PREDICTION_OFF },
      template: { resources: { vcpus: 1, memoryMib: 1024, diskGib: 5 } },
      createdAtMs: 5,
      members: [
        { name: "web-1", index: 1, addedAtMs: now - 120_000 },
        { name: "web-2", index: 2, addedAtMs: now - 30_000 },
        { name: "web-3", index: 3, addedAtMs: now - 1_000 },
      ],
      protectedMembers: ["web-1"],
      decisionCount: 2,
      decisions: [decision({ seq: 1, reason: "SizeBounded", fromSize: 1, toSize: 2 }), decision({ seq: 2, fromSize: 2, toSize: 3 })],
    };
    const label = { "berth.io/scale-group": "web" };
    const vms: Record<string, Vm> = {
      "web-1": vm("web-1", "host-2", 1, 1024, { spec: { name: "web-1", labels: label } }),
      "web-2": vm("web-2", "", 1, 1024, { spec: { name: "web-2", labels: label }, status: { phase: VmPhase.VM_PHASE_PENDING } }),
      // A VM of that name that is no member (no label): the member is not created.
      "web-3": vm("web-3", "host-1", 1, 1024),
    };
    const d = scaleGroupDetail(info(group, { running: 1 }), (n) => vms[n], now);
    expect(d.members.map((m) => [m.name, m.phase, m.hostId, m.protected, m.warmedUp, m.warmupEndsAtMs])).toEqual([
      ["web-1", "RUNNING", "host-2", true, true, now - 60_000],
      ["web-2", "PENDING", "", false, false, now + 30_000],
      ["web-3", "NOT CREATED", "", false, false, now + 59_000],
    ]);
    expect(d.decisions.map((x) => [x.seq, x.reason, x.sizeText])).toEqual([
      [2, "ScaledOut", "2 → 3"],
      [1, "SizeBounded", "1 → 2"],
    ]);
    expect(d.policy).toEqual({
      tolerance: "±10% of the target",
      scaleDownWindow: "5m",
      scaleUpStep: "max(100%, 4 VMs) per 15s",
      warmup: "1m",
      interval: "1s",
      scaleInOrder: "oldest-first",
      prediction: "off",
    });
    expect(d.templateText).toBe("1 vCPU, 1 GiB memory, 5 GiB disk");
    expect(d.group).toMatchObject({ name: "web", size: 3, boundsText: "2..3", running: 1 });
    // A policy the manager refuses (no target): no policy figures, and nobody warming up.
    const refused = scaleGroupDetail(info({ ...group, policy: { targetCpu: 0 } }), () => undefined, now);
    expect(refused.policy).toBeNull();
    expect(refused.members.every((m) => m.warmedUp && m.phase === "NOT CREATED")).toBe(true);
  });

  it("a member VM's row names its group, and the filter finds it by the group's name", () => {
    const row = vmRow(vm("web-3", "host-1", 1, 512, { spec: { name: "web-3", labels: { "berth.io/scale-group": "shop" } } }));
    expect(row.scaleGroup).toBe("shop");
    expect(vmMatches(row, "shop")).toBe(true);
    expect(vmMatches(row, "berth.io/scale-group=shop")).toBe(true);
    expect(vmRow(vm("solo", "host-1", 1, 512)).scaleGroup).toBe("");
  });

  it("prints percents as the CLI does and policy durations in whole units", () => {
    expect([0.6, 0.725, 0.95449, 1].map(percentText)).toEqual(["60%", "72.5%", "95.4%", "100%"]);
    expect([999, 15_000, 90_000, 300_000, 3_600_000, 3_900_000].map(durationText)).toEqual(["0s", "15s", "1m30s", "5m", "1h", "1h5m"]);
  });
});
