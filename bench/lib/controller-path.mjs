// The create path the controller runs, in process, without gRPC and etcd: the controller's own
// ClusterState (informers) and Placer over the in-memory store. Each placement is Placer.create for
// one VM spec, as CreateVm calls it: validation, the incremental engine kept current from the cache
// (PlacementView), the reservation, one commit transaction (VM record create-if-absent, host
// compare, group record rewritten under a compare), and the wait until the cache has the record.
import { ClusterConfig, GroupPolicy, Host, HostState, VmSpec } from "../../packages/api/dist/index.js";
import { ClusterState } from "../../packages/controller/dist/cluster-state.js";
import { encodeConfig, encodeGroup, encodeHost, Keys } from "../../packages/controller/dist/keys.js";
import { Placer } from "../../packages/controller/dist/placement.js";
import { MemoryStore } from "../../packages/store/dist/index.js";

/**
 * A controller's create path on `hosts` (scheduler snapshots: id, capacity, labels), under the
 * cluster config `scheduler` (a SchedulerConfig: preset, allocationRatio {vcpus, memory, disk},
 * reserved). Returns `place(request)` → Promise of the chosen host's index in `hosts` (−1 when
 * RESOURCE_EXHAUSTED), and `close()`.
 */
export async function controllerPath(hosts, scheduler) {
  const store = new MemoryStore();
  const now = () => Date.now();
  await store.txn({
    compare: [],
    ops: [
      { type: "put", key: Keys.config, value: encodeConfig(ClusterConfig.fromPartial({ scheduler })) },
    ],
  });
  // Host records in batches (a transaction holds a bounded number of writes).
  for (let i = 0; i < hosts.length; i += 100) {
    const ops = hosts.slice(i, i + 100).map((h) => ({
      type: "put",
      key: Keys.host(h.id),
      value: encodeHost(Host.fromPartial({ id: h.id, capacity: h.capacity, labels: h.labels ?? {}, state: HostState.HOST_STATE_READY, cordoned: false })),
    }));
    await store.txn({ compare: [], ops });
  }
  const state = new ClusterState(store);
  await state.start();
  const placer = new Placer(store, state, () => true, now);
  const writer = { commit: (txn) => store.txn(txn) };
  const index = new Map(hosts.map((h, i) => [h.id, i]));
  const groups = new Set();
  let n = 0;
  return {
    placer,
    /** Creates the group records the requests name before they are placed (an operator's CreateGroup, not timed). */
    async prepareGroups(requests) {
      const ops = [];
      for (const r of requests) {
        const g = r.group?.name;
        if (!g || groups.has(g)) continue;
        groups.add(g);
        const policy = r.group.policy === "anti-affinity" ? GroupPolicy.GROUP_POLICY_ANTI_AFFINITY : GroupPolicy.GROUP_POLICY_AFFINITY;
        ops.push({ type: "put", key: Keys.group(g), value: encodeGroup({ name: g, policy, members: [], createdAtMs: now() }) });
      }
      let revision = 0;
      for (let i = 0; i < ops.length; i += 100) revision = (await store.txn({ compare: [], ops: ops.slice(i, i + 100) })).revision;
      if (revision > 0) await state.groups.waitForRevision(revision);
    },
    /** Placer.create for one VM of `request`; resolves to the VM record it made. */
    async create(request) {
      const spec = VmSpec.fromPartial({ name: `vm-${n++}`, resources: request.resources, group: request.group?.name ?? "" });
      const [vm] = await placer.create([spec], writer, "spec");
      return vm;
    },
    async place(request) {
      try {
        const vm = await this.create(request);
        return index.get(vm.hostId);
      } catch (e) {
        if (e?.code === "RESOURCE_EXHAUSTED" || /no host can take/.test(String(e?.message))) return -1;
        throw e;
      }
    },
    async close() {
      await state.stop();
    },
  };
}
