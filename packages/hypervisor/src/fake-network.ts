/**
 * The fake hypervisor's networks and its guests' addresses: the networks a fake host offers NICs
 * (libvirt networks and bridges, as `FakeDriverOptions.networks` describes them) and the address a
 * NIC's DHCP lease gives, derived from its MAC within the network's cidr. Pure.
 */
import { invalidArgument, quote } from "@berth/core";
import { isObject } from "./fake-state.js";

/** A network as `FakeDriverOptions.networks` gives it. */
export interface FakeNetworkOption {
  /** What a VM's NICs name (`NicSpec.network`). */
  name: string;
  /** A libvirt network (default) or a host bridge. */
  kind?: "network" | "bridge";
  /**
   * IPv4 `a.b.c.d/prefix` (prefix 8–30) the network's DHCP hands addresses out of; none: its
   * guests never get an address (a bridge to a LAN the fake knows nothing of).
   */
  cidr?: string;
  /** false: defined but not started (libvirt `net-start` not done): VMs cannot use it. Default true. */
  active?: boolean;
}

/** A network with its defaults applied. */
export interface FakeNetwork {
  readonly name: string;
  readonly kind: "network" | "bridge";
  /** Normalized to the network address (`10.122.0.0/16`); empty when none. */
  readonly cidr: string;
  readonly active: boolean;
}

/** The networks of a fake host configured with none: libvirt's customary NAT network `default`. */
export const DEFAULT_FAKE_NETWORKS: readonly FakeNetwork[] = Object.freeze([
  Object.freeze({ name: "default", kind: "network" as const, cidr: "10.122.0.0/16", active: true }),
]);

/** A MAC address as NICs carry it: six lower-case hex octets separated by colons. */
export const MAC_ADDRESS = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

/**
 * Validates `FakeDriverOptions.networks` and applies the defaults (none given: {@link
 * DEFAULT_FAKE_NETWORKS}; an empty list: a host without networks). Sorted by name. Throws
 * INVALID_ARGUMENT naming the entry (`fake_driver.networks[1].cidr: ...`).
 */
export function resolveFakeNetworks(given: unknown, field = "fake_driver.networks"): FakeNetwork[] {
  if (given === undefined) return DEFAULT_FAKE_NETWORKS.map((n) => ({ ...n }));
  if (!Array.isArray(given)) throw invalidArgument(field, "must be a list of {name, kind?, cidr?, active?}");
  const seen = new Set<string>();
  const out = given.map((n: unknown, i): FakeNetwork => {
    const f = `${field}[${i}]`;
    if (!isObject(n)) throw invalidArgument(f, "must be an object {name, kind?, cidr?, active?}");
    for (const key of Object.keys(n)) {
      if (!["name", "kind", "cidr", "active"].includes(key)) throw invalidArgument(`${f}.${quote(key, 32)}`, "unknown field (known: name, kind, cidr, active)");
    }
    const { name, kind, cidr, active } = n;
    if (typeof name !== "string" || !NAME.test(name)) {
      throw invalidArgument(`${f}.name`, `must be 1-64 letters, digits, '_', '.', ':' or '-' (got ${quote(JSON.stringify(name))})`);
    }
    if (seen.has(name)) throw invalidArgument(`${f}.name`, `${quote(name)} is named twice`);
    seen.add(name);
    if (kind !== undefined && kind !== "network" && kind !== "bridge") throw invalidArgument(`${f}.kind`, `must be "network" or "bridge" (got ${quote(JSON.stringify(kind))})`);
    if (active !== undefined && typeof active !== "boolean") throw invalidArgument(`${f}.active`, "must be a boolean");
    let normalized = "";
    if (cidr !== undefined) {
      const parsed = typeof cidr === "string" ? parseCidr(cidr) : undefined;
      if (!parsed) throw invalidArgument(`${f}.cidr`, `must be an IPv4 a.b.c.d/prefix with a prefix of 8 to 30 (got ${quote(JSON.stringify(cidr))})`);
      normalized = `${formatIpv4(parsed.network)}/${parsed.prefix}`;
    }
    return { name, kind: kind ?? "network", cidr: normalized, active: active ?? true };
  });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The address the DHCP of the network `cidr` gives the NIC with `mac`: fixed by the MAC (its last
 * four octets, which `nicMacAddress` takes from a hash of the VM's id), so every fake host gives a
 * VM the same address on a network of the same cidr, and a VM keeps it across a redefinition or a
 * migration. Never the network address, the first host address (the host's own on a libvirt
 * network, the guests' gateway) nor the broadcast address. Two MACs may meet on one address (as
 * their low 32 bits modulo the network's size: about 1 % among 40 NICs on a /24); the fake does
 * not resolve that. Empty for an empty `cidr`. Pure; `mac` and `cidr` must be valid.
 */
export function fakeAddressFor(mac: string, cidr: string): string {
  if (cidr === "") return "";
  const parsed = parseCidr(cidr);
  if (!parsed || !MAC_ADDRESS.test(mac)) throw new Error(`fakeAddressFor: bad MAC ${mac} or cidr ${cidr}`);
  const octets = mac.split(":").map((o) => parseInt(o, 16));
  const low = ((octets[2]! << 24) >>> 0) + (octets[3]! << 16) + (octets[4]! << 8) + octets[5]!;
  const size = 2 ** (32 - parsed.prefix);
  // Offsets 0 (network), 1 (gateway) and size - 1 (broadcast) are never handed out.
  return formatIpv4(parsed.network + 2 + (low % (size - 3)));
}

/** `a.b.c.d/prefix` → the network address (host bits cleared) and the prefix; undefined when malformed. */
function parseCidr(cidr: string): { network: number; prefix: number } | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  if (octets.some((o) => o > 255) || prefix < 8 || prefix > 30) return undefined;
  const address = ((octets[0]! << 24) >>> 0) + (octets[1]! << 16) + (octets[2]! << 8) + octets[3]!;
  const size = 2 ** (32 - prefix);
  return { network: address - (address % size), prefix };
}

function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}
