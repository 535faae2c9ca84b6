import { DesiredState, HostState } from "@berth/api";
import { isBerthError, ErrorCode } from "@berth/core";
import type { Txn } from "@berth/store";
import type { Logger } from "pino";
import type { AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import { encodeGroup, encodeVm } from "./keys.js";
import { observedStatus, planHostCommands, sameStatus } from "./reconcile.js";

export interface ReconcilerDeps {
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  writer: FencedWriter;
  commandResendMs: number;
  log: Logger;
  now: () => number;
}

/**
 * Level-triggered reconciliation, one host at a time: commands come from the difference between
 * the VM records placed on a host and the inventory the host reports, and VM statuses from what the
 * host reports. Anything that may change that difference marks the host dirty; a periodic resync
 * marks them all, so a lost event or command costs a delay, never correctness.
 */
export class Reconciler {
  private readonly dirty = new Set<string>();
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly deps: ReconcilerDeps) {}

  markDirty(hostId: string): void {
    if (this.stopped || hostId === "") return;
    this.dirty.add(hostId);
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      if (this.dirty.size > 0) this.markDirty([...this.dirty][0]!);
    });
  }

  /** Every host with a session or with VMs placed on it. */
  markAll(): void {
    for (const id of this.deps.sessions.keys()) this.markDirty(id);
    for (const id of this.deps.state.hostIdsWithVms()) this.markDirty(id);
  }

  /** Stops scheduling passes and waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.dirty.clear();
    await this.running;
  }

  private async drain(): Promise<void> {
    // Yield once so a burst of events coalesces into one pass per host.
    await new Promise((r) => setImmediate(r));
    while (this.dirty.size > 0 && !this.stopped) {
      const hosts = [...this.dirty];
      this.dirty.clear();
      await Promise.all(hosts.map((h) => this.reconcileHost(h)));
    }
  }

  private async reconcileHost(hostId: string): Promise<void> {
    const { state, sessions, writer, log } = this.deps;
    const now = this.deps.now();
    const session = sessions.get(hostId);
    // A session that is not welcomed yet counts as absent: it is still registering.
    const connected = session?.isLive === true;
    const vms = state.vmsOnHost(hostId);
    if (!connected && state.host(hostId)?.state === HostState.HOST_STATE_READY) {
      // Recorded ready but no stream here (yet): a new leader gives hosts a grace period to
      // reconnect, and a lost stream is recorded as disconnected first. Judge VMs after that.
      return;
    }

    if (connected) {
      for (const planned of planHostCommands(vms, session.inventory)) {
        session.sendCommand(planned, writer.epoch, now, this.deps.commandResendMs);
      }
    }

    const writes: Txn[] = [];
    for (const vm of vms) {
      const kv = state.vmKv(vm.spec?.name ?? "");
      if (!kv) continue;
      const guard = [{ key: kv.key, target: "modRevision" as const, equals: kv.modRevision }];
      const domain = connected ? session.inventory.get(vm.id) : undefined;
      if (connected && vm.desiredState === DesiredState.DESIRED_STATE_DELETED && !domain) {
        // The host confirms the domain is gone: the record can go too, and with it the membership.
        const txn: Txn = { compare: guard, ops: [{ type: "delete", key: kv.key }] };
        const groupKv = vm.spec?.group ? state.groupKv(vm.spec.group) : undefined;
        const group = vm.spec?.group ? state.group(vm.spec.group) : undefined;
        if (groupKv && group) {
          txn.compare.push({ key: groupKv.key, target: "modRevision", equals: groupKv.modRevision });
          txn.ops.push({ type: "put", key: groupKv.key, value: encodeGroup({ ...group, members: group.members.filter((m) => m !== vm.spec!.name) }) });
        }
        writes.push(txn);
        continue;
      }
      const status = observedStatus(vm, connected, domain, session?.failures.get(vm.id), now);
      if (!sameStatus(vm.status, status)) {
        writes.push({ compare: guard, ops: [{ type: "put", key: kv.key, value: encodeVm({ ...vm, status }) }] });
      }
    }
    // Concurrent writes let the store batch them into one transaction (group commit).
    await Promise.all(
      writes.map(async (txn) => {
        try {
          const result = await writer.commit(txn);
          // A lost guard means the record changed meanwhile; its watch event marks the host again.
          if (!result.succeeded) log.debug({ hostId, key: txn.ops[0]?.key }, "status write raced a change");
        } catch (e) {
          if (!isBerthError(e, ErrorCode.NotLeader)) log.warn({ err: e, hostId }, "status write failed");
          this.markDirtyLater(hostId);
        }
      }),
    );
  }

  private markDirtyLater(hostId: string): void {
    setTimeout(() => this.markDirty(hostId), 1_000).unref();
  }
}
