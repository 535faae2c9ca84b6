import { EventType, Host, Vm } from "@berth/api";
import type { CliContext, GlobalOptions } from "../context.js";
import { hostTable, vmTable } from "../format.js";
import { watchTable } from "../list-watch.js";

// The `--watch` of `vm list` and `host list`: what each list takes from the WatchEvents stream.

/** `vm list --watch [--host ID]`: the VMs from the stream, as `vm list` prints them. */
export async function watchVmList(ctx: CliContext, g: GlobalOptions, hostId: string | undefined): Promise<void> {
  await watchTable<Vm>(ctx, ctx.client(g), g.output, {
    request: { vms: true, hosts: false, migrations: false, events: false },
    itemOf: (e) => (e.object?.$case === "vm" ? { key: e.object.value.spec?.name ?? e.object.value.id, value: e.object.value } : undefined),
    ...(hostId ? { keep: (vm: Vm) => vm.hostId === hostId } : {}),
    table: (vms, wide) => vmTable(vms, ctx.io.now(), wide),
    toJSON: (vm) => Vm.toJSON(vm),
  });
}

/**
 * `host list --watch`: the hosts from the stream, which sends them as ListHosts answers them. What
 * changes without a host record changing (what is allocated there when its VMs change; usage, last
 * heard, hypervisor, orphans) is read again with GetHost for a host whose VMs changed — a read the
 * stream asks for, not a poll — and with one ListHosts after each stream's initial state.
 */
export async function watchHostList(ctx: CliContext, g: GlobalOptions): Promise<void> {
  const client = ctx.client(g);
  // Where each VM was and what it asked for: a change of either moves a host's allocation.
  const placed = new Map<string, string>();
  const live = (record: Host, previous: Host | undefined): Host =>
    previous
      ? {
          ...record,
          allocated: previous.allocated,
          usage: previous.usage ?? record.usage,
          lastSeenMs: Math.max(previous.lastSeenMs, record.lastSeenMs),
          hypervisor: previous.hypervisor ?? record.hypervisor,
          orphans: previous.orphans,
        }
      : record;
  await watchTable<Host>(ctx, client, g.output, {
    request: { vms: true, hosts: true, migrations: false, events: false },
    itemOf: (e, previous) => {
      if (e.object?.$case !== "host") return undefined;
      const record = e.object.value;
      return { key: record.id, value: live(record, previous(record.id)) };
    },
    staleKeys: (e) => {
      if (e.object?.$case !== "vm") return [];
      const vm = e.object.value;
      const name = vm.spec?.name ?? vm.id;
      const was = placed.get(name);
      const now = `${vm.hostId}|${vm.desiredState}|${vm.generation}`;
      if (was === now) return [];
      if (e.type === EventType.EVENT_TYPE_DELETED) placed.delete(name);
      else placed.set(name, now);
      return [...new Set([was?.split("|")[0], vm.hostId].filter((h): h is string => !!h))];
    },
    refresh: async (items, keys) => {
      if (keys === "all") {
        for (const h of (await client.listHosts({})).hosts) if (items.has(h.id)) items.set(h.id, h);
        return;
      }
      await Promise.all(
        [...keys].map(async (id) => {
          const h = (await client.getHost({ id }).catch(() => undefined))?.host;
          if (h && items.has(id)) items.set(id, h);
        }),
      );
    },
    table: (hosts, wide) => hostTable(hosts, ctx.io.now(), wide),
    toJSON: (h) => Host.toJSON(h),
  });
}
