// Placement: a snapshot of the hosts in, a decision out. Pure and synchronous — no I/O, no clock,
// no randomness — so it can be benchmarked and property-tested alone.
export * from "./types.js";
export * from "./options.js";
export * from "./stage.js";
export * from "./filters.js";
export * from "./weighers.js";
export * from "./pipeline.js";
export * from "./place.js";
export * from "./gang.js";
export * from "./engine.js";
export * from "./rebalance.js";
