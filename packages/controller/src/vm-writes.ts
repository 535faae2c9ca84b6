import { DesiredState, type Vm } from "@berth/api";
import { BerthError, ErrorCode, notFound, validateName } from "@berth/core";
import type { ClusterStore } from "@berth/store";
import type { FencedWriter } from "./fenced-writer.js";
import { decodeVm, encodeVm, Keys } from "./keys.js";

/**
 * Sets a VM's desired state, bumping its generation: a guarded read-modify-write, retried when a
 * status update raced it. Idempotent: asking for the state it already wants changes nothing.
 */
export async function setDesiredState(
  store: ClusterStore,
  writer: FencedWriter,
  name: string,
  desired: DesiredState,
  forceStop: boolean,
): Promise<Vm> {
  validateName(name, "name");
  for (let attempt = 0; attempt < 8; attempt++) {
    const kv = await store.get(Keys.vm(name));
    if (!kv) throw notFound(`vm '${name}'`);
    const vm = decodeVm(kv.value);
    if (vm.desiredState === desired && vm.forceStop === forceStop) return vm;
    if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) {
      throw new BerthError(ErrorCode.FailedPrecondition, `vm '${name}' is being deleted`);
    }
    const next: Vm = { ...vm, desiredState: desired, forceStop: desired === DesiredState.DESIRED_STATE_STOPPED && forceStop, generation: vm.generation + 1 };
    const result = await writer.commit({
      compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }],
      ops: [{ type: "put", key: kv.key, value: encodeVm(next) }],
    });
    if (result.succeeded) return next;
  }
  throw new BerthError(ErrorCode.Conflict, `vm '${name}' kept changing; retry`);
}

