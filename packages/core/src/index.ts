export * from "./errors.js";
export * from "./resources.js";
export * from "./limits.js";
export * from "./validation.js";
export * from "./grpc.js";
export * from "./parse.js";
export * from "./process.js";
export * from "./retry.js";
