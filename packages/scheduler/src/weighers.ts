import { RESOURCE_NAMES } from "@berth/core";
import { allocatableOf } from "./options.js";
import type { Weigher } from "./stage.js";

/**
 * Spread: prefers the host with the most room left. Raw score: the free fraction of allocatable
 * capacity after placing the request, averaged over the resources the host has any of.
 */
export const leastAllocatedWeigher: Weigher = {
  name: "leastAllocated",
  weigh(host, { request, options }) {
    let sum = 0;
    let n = 0;
    for (const key of RESOURCE_NAMES) {
      const total = allocatableOf(host, key, options);
      if (total <= 0) continue;
      sum += (total - host.allocated[key] - request.resources[key]) / total;
      n += 1;
    }
    return n === 0 ? 0 : sum / n;
  },
};
