// The wire contract of Berth, generated from proto/berth/v1 by `npm run gen`. No hand-written code
// lives here but this index, wire.ts (the strict check of incoming bytes against gen/wire-schema.ts)
// and descriptor.ts (the protos as a descriptor set, for server reflection).
export * from "./gen/berth/v1/resources.js";
export * from "./gen/berth/v1/vm.js";
export * from "./gen/berth/v1/host.js";
export * from "./gen/berth/v1/group.js";
export * from "./gen/berth/v1/config.js";
export * from "./gen/berth/v1/agent.js";
export * from "./gen/berth/v1/cluster.js";
export * from "./gen/berth/v1/identity.js";
export * from "./gen/berth/v1/migration.js";
export * from "./gen/berth/v1/event.js";
export * from "./gen/berth/v1/scalegroup.js";
export * from "./gen/berth/v1/storage.js";
// Every generated file declares these helpers; one copy is the public one.
export { type DeepPartial, type MessageFns, protobufPackage, protobufFileName } from "./gen/berth/v1/resources.js";
export { checkWire, hardenService, malformedOf, MAX_WIRE_DEPTH, wireMessages, wireMethods, type WireFault, type WireField, type WireFieldType } from "./wire.js";
export { berthFileDescriptorSet, loadBerthPackageDefinition } from "./descriptor.js";
