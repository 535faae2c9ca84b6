import { RESOURCE_FIELD, RESOURCE_NAMES, RESOURCE_UNIT } from "@berth/core";
import { allocatableOf } from "./options.js";
import { filterFail, FILTER_PASS, type Filter } from "./stage.js";

/** Only hosts whose agent is Ready and that no operator has cordoned take new VMs. */
export const readyFilter: Filter = {
  name: "ready",
  filter(host) {
    if (!host.ready) return filterFail("host is not Ready");
    if (host.cordoned) return filterFail("host is cordoned");
    return FILTER_PASS;
  },
};

/**
 * The request must fit in the free allocatable capacity on every resource:
 * `allocated + request ≤ allocatable`. The reason lists each resource that does not fit, e.g.
 * `memory_mib: needs 4096 MiB, 2048 MiB free of 65536 allocatable`.
 */
export const capacityFilter: Filter = {
  name: "capacity",
  filter(host, { request, options }) {
    const short: string[] = [];
    for (const key of RESOURCE_NAMES) {
      const need = request.resources[key];
      const total = allocatableOf(host, key, options);
      const free = total - host.allocated[key];
      if (need > free) {
        const unit = RESOURCE_UNIT[key];
        short.push(`${RESOURCE_FIELD[key]}: needs ${need} ${unit}, ${Math.max(0, free)} ${unit} free of ${total} allocatable`);
      }
    }
    return short.length === 0 ? FILTER_PASS : filterFail(short.join("; "));
  },
};
