// The networks a host offers NICs, and the addresses its domains' NICs have: learnt from the
// libvirt networks' DHCP leases and, for bridges, from the host's neighbour table, in one pass for
// every domain, reused for a few seconds so that `list()` costs no more calls than before.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { HostNetwork, NetworkInterface } from "@berth/api";
import type { LibvirtNetwork } from "./options.js";
import { parseDhcpLeases, parseNetList, parseProcNetArp, type ListedNetwork } from "./parse.js";
import type { Virsh } from "./virsh.js";

/** Where the kernel lists network interfaces (a bridge has a `bridge` directory in its entry). */
export const SYS_CLASS_NET = "/sys/class/net";
/** The kernel's IPv4 neighbour table. */
export const PROC_NET_ARP = "/proc/net/arp";

const PLAIN_ARG_RE = /^[A-Za-z0-9._:/=+,-]+$/;

/**
 * The networks offered, sorted by name: with `configured` empty, every libvirt network
 * (`listed`); else exactly the configured ones — a libvirt network with its state from `listed`
 * (inactive when libvirt has no such network), a bridge active when the kernel has a bridge of
 * that name (`isBridge`). Pure but for `isBridge`.
 */
export function offeredNetworks(configured: readonly LibvirtNetwork[], listed: readonly ListedNetwork[], isBridge: (name: string) => boolean): HostNetwork[] {
  const networks: HostNetwork[] =
    configured.length === 0
      ? listed.map((n) => ({ name: n.name, kind: "network", active: n.active }))
      : configured.map((c) =>
          c.type === "bridge"
            ? { name: c.source, kind: "bridge", active: isBridge(c.source) }
            : { name: c.source, kind: "network", active: listed.find((n) => n.name === c.source)?.active ?? false },
        );
  return networks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Whether `name` is a bridge on this host (`<sysClassNet>/<name>/bridge` exists). */
export function hostHasBridge(name: string, sysClassNet = SYS_CLASS_NET): boolean {
  if (name.includes("/") || name === "." || name === "..") return false;
  return existsSync(path.join(sysClassNet, name, "bridge"));
}

/** The networks libvirt has (`virsh net-list --all`). */
export async function listLibvirtNetworks(virsh: Virsh): Promise<ListedNetwork[]> {
  return parseNetList(await virsh.run(["net-list", "--all"]));
}

/** A NIC of a domain as its XML says: which network (libvirt's or a bridge), and its MAC. */
export interface NicOfDomain {
  kind: "network" | "bridge";
  network: string;
  mac: string;
}

/** Addresses by MAC, and where they were learnt. */
interface Learnt {
  ips: string[];
  source: "lease" | "arp";
}

/**
 * Addresses of NICs, read in one pass for every domain and reused for `refreshMs`: one
 * `net-dhcp-leases` per libvirt network in use (all in one virsh call), and one read of the
 * neighbour table when a NIC is on a bridge. A failed read keeps what was known.
 */
export class AddressBook {
  private learnt = new Map<string, Learnt>();
  private readAt = -Infinity;
  /** The networks and bridges the last pass covered. */
  private covered = new Set<string>();
  private reading: Promise<void> | undefined;

  constructor(
    private readonly virsh: Virsh,
    private readonly refreshMs: number,
    private readonly procNetArp = PROC_NET_ARP,
  ) {}

  /**
   * Reads the addresses again when they are older than `refreshMs`, or when a NIC of an active
   * domain is on a network the last pass did not cover: one pass for all of `domains`. Never throws
   * (a failed read keeps what was known).
   */
  async refresh(domains: readonly { nics: readonly NicOfDomain[]; active: boolean }[]): Promise<void> {
    const used = new Map<string, "network" | "bridge">();
    for (const d of domains) if (d.active) for (const n of d.nics) used.set(`${n.kind}:${n.network}`, n.kind);
    if (used.size === 0) return;
    const stale = performance.now() - this.readAt >= this.refreshMs || [...used.keys()].some((k) => !this.covered.has(k));
    if (stale) await this.read(used);
  }

  /**
   * `Domain.interfaces` of a domain's NICs with the addresses last learnt; none for a domain that
   * is not `active` (a lease outlives the guest that took it).
   */
  known(nics: readonly NicOfDomain[], active: boolean): NetworkInterface[] {
    return nics.map((n) => {
      const found = active ? this.learnt.get(n.mac) : undefined;
      return { network: n.network, mac: n.mac, ipAddresses: found ? [...found.ips] : [], addressSource: found ? found.source : "" };
    });
  }

  /** One pass over what `used` names; concurrent callers share it. */
  private read(used: Map<string, "network" | "bridge">): Promise<void> {
    this.reading ??= this.readOnce(used).finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async readOnce(used: Map<string, "network" | "bridge">): Promise<void> {
    const learnt = new Map<string, Learnt>();
    const networks = [...used].filter(([, kind]) => kind === "network").map(([k]) => k.slice("network:".length));
    const bridges = new Set([...used].filter(([, kind]) => kind === "bridge").map(([k]) => k.slice("bridge:".length)));
    try {
      const texts: string[] = [];
      const plain = networks.filter((n) => PLAIN_ARG_RE.test(n));
      if (plain.length > 0) {
        const { sections } = await this.virsh.batch(plain.map((n, i) => ({ tag: `n${i}`, args: ["net-dhcp-leases", n] })));
        plain.forEach((_, i) => texts.push(sections.get(`n${i}`) ?? ""));
      }
      for (const n of networks.filter((x) => !PLAIN_ARG_RE.test(x))) {
        const r = await this.virsh.exec(["net-dhcp-leases", n]);
        if (r.exitCode === 0) texts.push(r.stdout);
      }
      for (const text of texts) {
        for (const [mac, ips] of parseDhcpLeases(text)) learnt.set(mac, { ips, source: "lease" });
      }
      if (bridges.size > 0) {
        const arp = await readFile(this.procNetArp, "utf8").catch(() => "");
        for (const e of parseProcNetArp(arp)) {
          if (!bridges.has(e.device) || learnt.has(e.mac)) continue;
          learnt.set(e.mac, { ips: [e.ip], source: "arp" });
        }
        // A MAC on several bridge rows (two addresses): gather them all.
        for (const e of parseProcNetArp(arp)) {
          const l = learnt.get(e.mac);
          if (l?.source === "arp" && bridges.has(e.device) && !l.ips.includes(e.ip)) l.ips.push(e.ip);
        }
      }
    } catch {
      // libvirtd went away meanwhile: keep what was known; the next call tries again.
      return;
    }
    this.learnt = learnt;
    this.covered = new Set(used.keys());
    this.readAt = performance.now();
  }
}

/** The NICs of a parsed domain on a libvirt network or a bridge (others are not Berth's). */
export function nicsOfDomain(parsed: { interfaces: readonly { type: string; source: string; mac: string }[] }): NicOfDomain[] {
  return parsed.interfaces
    .filter((i) => (i.type === "network" || i.type === "bridge") && i.source !== "")
    .map((i) => ({ kind: i.type as "network" | "bridge", network: i.source, mac: i.mac }));
}
