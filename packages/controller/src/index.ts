import { fileURLToPath } from "node:url";

/** Path of the berth-controller entry point, for tools that start it as a process. */
export const CONTROLLER_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

export { Controller } from "./controller.js";
export { resolveControllerOptions, type ControllerOptions, type ResolvedControllerOptions } from "./options.js";
export { Keys } from "./keys.js";
