import { quote, RESOURCE_FIELD, RESOURCE_NAMES, RESOURCE_UNIT } from "@berth/core";
import { allocatableOf } from "./options.js";
import { FILTER_FAIL, filterFail, FILTER_PASS, membersOn, type Filter } from "./stage.js";

/** Lists at most `max` items, then how many more. */
function listSome(items: readonly string[], max = 3): string {
  const shown = items.slice(0, max).join(", ");
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}

/** Only hosts whose agent is Ready and that no operator has cordoned take new VMs. */
export const readyFilter: Filter = {
  name: "ready",
  filter(host, { explain }) {
    if (host.ready && !host.cordoned) return FILTER_PASS;
    if (explain === false) return FILTER_FAIL;
    if (!host.ready) return filterFail("host is not Ready");
    if (host.cordoned) return filterFail("host is cordoned");
    return FILTER_PASS;
  },
};

/** When the request pins hosts (non-empty `pinnedHosts`), only those pass: `not pinned (pinned: a, b)`. */
export const pinnedFilter: Filter = {
  name: "pinned",
  filter(host, { request, pinned, explain }) {
    if (pinned === undefined || pinned.has(host.id)) return FILTER_PASS;
    if (explain === false) return FILTER_FAIL;
    return filterFail(`not pinned (pinned: ${listSome([...(request.pinnedHosts ?? [])])})`);
  },
  candidates: ({ pinned }) => pinned,
};

/**
 * Required labels: the host has each `key=value`; forbidden labels: the host does not have
 * `key=value` (value `*`: does not have the key at all). The reason names the label, e.g.
 * `requires label zone=eu-1 (host has zone=us-2)`, `forbids label gpu (host has gpu=a100)`.
 */
export const labelsFilter: Filter = {
  name: "labels",
  filter(host, { request, explain }) {
    if (request.requiredLabels === undefined && request.forbiddenLabels === undefined) return FILTER_PASS;
    const labels = host.labels;
    const quiet = explain === false;
    const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(labels, k);
    for (const [k, v] of Object.entries(request.requiredLabels ?? {})) {
      if (quiet && (!has(k) || labels[k] !== v)) return FILTER_FAIL;
      if (!has(k)) return filterFail(`requires label ${k}=${v} (host has no ${k})`);
      if (labels[k] !== v) return filterFail(`requires label ${k}=${v} (host has ${k}=${String(labels[k])})`);
    }
    for (const [k, v] of Object.entries(request.forbiddenLabels ?? {})) {
      if (!has(k)) continue;
      if (quiet && (v === "*" || labels[k] === v)) return FILTER_FAIL;
      if (v === "*") return filterFail(`forbids label ${k} (host has ${k}=${String(labels[k])})`);
      if (labels[k] === v) return filterFail(`forbids label ${k}=${v}`);
    }
    return FILTER_PASS;
  },
};

/** At most this many names in a reason of the `networks` and `volumes` filters, then how many more. */
const MAX_NAMES_LISTED = 8;

/** `"name"`, at most 64 characters of it (names come from agents' reports and specs). */
const quoted = (name: string): string => `"${quote(name)}"`;

/** Code-unit order, stable across locales (as host ids are ordered). */
const compareNames = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Every network the request's NICs are on (`request.networks`) must be one the host offers
 * (`host.networks`; absent: none). The reason names what is missing and what the host offers, at
 * most 8 of each (names cut at 64 characters), the offers in name order: `lacks network "lab"
 * (offers: br0, default)`, `lacks networks "lab", "san" (offers none)`. Its verdict depends on the host's networks alone, not on allocation.
 */
export const networksFilter: Filter = {
  name: "networks",
  filter(host, { request, explain }) {
    const wanted = request.networks;
    if (wanted === undefined || wanted.length === 0) return FILTER_PASS;
    const offered = host.networks;
    let missing: string[] | undefined;
    for (const n of wanted) {
      if (offered?.has(n) === true) continue;
      if (explain === false) return FILTER_FAIL;
      missing ??= [];
      if (!missing.includes(n)) missing.push(n);
    }
    if (missing === undefined) return FILTER_PASS;
    const what = `lacks network${missing.length === 1 ? "" : "s"} ${listSome(missing.map(quoted), MAX_NAMES_LISTED)}`;
    const offers = offered === undefined || offered.size === 0 ? "offers none" : `offers: ${listSome([...offered].sort(compareNames).map((n) => quote(n)), MAX_NAMES_LISTED)}`;
    return filterFail(`${what} (${offers})`);
  },
};

/**
 * A VM whose data volumes are bound to a host (`request.volumes`) may only go to that host: the
 * volumes' data is in its pool. `volumes data-1, data-2 are on hv-2`, `volume data-1 is on hv-2`
 * (at most 8 names). It
 * names its only candidate, so the engine asks no other host.
 */
export const volumesFilter: Filter = {
  name: "volumes",
  filter(host, { request, explain }) {
    const v = request.volumes;
    if (v === undefined || v.hostId === host.id) return FILTER_PASS;
    if (explain === false) return FILTER_FAIL;
    const one = v.names.length === 1;
    return filterFail(`volume${one ? "" : "s"} ${listSome(v.names.map((n) => quote(n)), MAX_NAMES_LISTED)} ${one ? "is" : "are"} on ${quote(v.hostId)}`);
  },
  candidates: ({ request }) => (request.volumes === undefined ? undefined : [request.volumes.hostId]),
};

/** At most `maxVmsPerHost` VMs on a host (0: unlimited): `max_vms: 32 VMs, limit 32`. */
export const maxVmsFilter: Filter = {
  name: "maxVms",
  filter(host, { options, explain }) {
    const limit = options.maxVmsPerHost ?? 0;
    if (limit === 0 || host.vmCount < limit) return FILTER_PASS;
    if (explain === false) return FILTER_FAIL;
    return filterFail(`max_vms: ${host.vmCount} VM${host.vmCount === 1 ? "" : "s"}, limit ${limit}`);
  },
};

/**
 * Hard group policies. `anti-affinity`: a host with ≥ 1 member of the group fails
 * (`group 'web': anti-affinity: 1 member already here`). `affinity`: when the group has members on
 * some hosts, only those pass (`group 'db': affinity: members are on other hosts (h-1, h-2)`); the
 * first member may go anywhere. Soft policies are the `groupAffinity` weigher's business.
 */
export const groupsFilter: Filter = {
  name: "groups",
  filter(host, { request, groupHosts, explain }) {
    const group = request.group;
    if (group === undefined) return FILTER_PASS;
    if (group.policy === "anti-affinity") {
      const n = membersOn(host, group.name);
      if (n > 0 && explain === false) return FILTER_FAIL;
      if (n > 0) return filterFail(`group '${group.name}': anti-affinity: ${n} member${n === 1 ? "" : "s"} already here`);
    } else if (group.policy === "affinity") {
      if (groupHosts.length > 0 && membersOn(host, group.name) === 0) {
        if (explain === false) return FILTER_FAIL;
        return filterFail(`group '${group.name}': affinity: members are on other hosts (${listSome(groupHosts)})`);
      }
    }
    return FILTER_PASS;
  },
  candidates: ({ request, groupHosts }) => (request.group?.policy === "affinity" && groupHosts.length > 0 ? groupHosts : undefined),
};

/**
 * The request must fit in the free allocatable capacity on every resource:
 * `allocated + request ≤ allocatable`, with the host's own ratio and reserve when it has them. The
 * reason lists each resource that does not fit, e.g.
 * `memory_mib: needs 4096 MiB, 2048 MiB free of 65536 allocatable`.
 */
export const capacityFilter: Filter = {
  name: "capacity",
  scope: "allocation",
  filter(host, { request, options, explain }) {
    const short: string[] = [];
    for (const key of RESOURCE_NAMES) {
      const need = request.resources[key];
      const total = allocatableOf(host, key, options);
      const free = total - host.allocated[key];
      if (need > free) {
        if (explain === false) return FILTER_FAIL;
        const unit = RESOURCE_UNIT[key];
        short.push(`${RESOURCE_FIELD[key]}: needs ${need} ${unit}, ${Math.max(0, free)} ${unit} free of ${total} allocatable`);
      }
    }
    return short.length === 0 ? FILTER_PASS : filterFail(short.join("; "));
  },
};
