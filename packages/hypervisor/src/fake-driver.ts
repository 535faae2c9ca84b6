import { mkdirSync, readdirSync, readFileSync, unlinkSync } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { domainStateFromJSON, domainStateToJSON, DomainState, type Domain, type Resources } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, notFound, RESOURCE_FIELD, RESOURCE_NAMES } from "@berth/core";
import type { DomainSpec, HostFacts, HypervisorDriver } from "./driver.js";

/** Name of the state file inside `stateDir`. */
export const FAKE_STATE_FILE = "fake-hypervisor.json";

/** Format tag written into the state file; a file with another tag is refused. */
export const FAKE_STATE_FORMAT = "berth-fake-hypervisor/v1";

/** Physical capacity the fake host offers when none is configured: 16 vCPU, 64 GiB memory, 1 TiB disk. */
export const DEFAULT_FAKE_CAPACITY: Readonly<Resources> = Object.freeze({ vcpus: 16, memoryMib: 65536, diskGib: 1024 });

/** Configuration of a {@link FakeDriver}. */
export interface FakeDriverOptions {
  /** Directory holding the state file; created (with parents) if missing. One driver per directory. */
  stateDir: string;
  /** Physical capacity reported by `hostFacts()`; missing fields take {@link DEFAULT_FAKE_CAPACITY}. */
  capacity?: Partial<Resources>;
}

/** {@link FakeDriverOptions} with every default applied and every value checked. */
export interface ResolvedFakeDriverOptions {
  readonly stateDir: string;
  readonly capacity: Readonly<Resources>;
}

/**
 * Applies defaults and validates. Throws BerthError INVALID_ARGUMENT naming the option at fault
 * (`fake_driver.capacity.memory_mib: must be ...`). Pure: no file system access.
 */
export function resolveFakeDriverOptions(options: FakeDriverOptions): ResolvedFakeDriverOptions {
  const stateDir: unknown = options.stateDir;
  if (typeof stateDir !== "string" || stateDir.trim().length === 0) {
    throw invalidArgument("fake_driver.state_dir", "is required (a directory for the fake hypervisor's state file)");
  }
  const capacity = { ...DEFAULT_FAKE_CAPACITY };
  const given: Partial<Resources> = options.capacity ?? {};
  for (const key of Object.keys(given)) {
    if (!(RESOURCE_NAMES as readonly string[]).includes(key)) {
      throw invalidArgument(`fake_driver.capacity.${key}`, `unknown resource (known: ${RESOURCE_NAMES.join(", ")})`);
    }
  }
  for (const key of RESOURCE_NAMES) {
    const value: unknown = given[key];
    if (value === undefined) continue;
    const min = key === "diskGib" ? 0 : 1;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      throw invalidArgument(
        `fake_driver.capacity.${RESOURCE_FIELD[key]}`,
        `must be a whole number ≥ ${min} (got ${String(value)})`,
      );
    }
    capacity[key] = value;
  }
  return Object.freeze({ stateDir: path.resolve(stateDir), capacity: Object.freeze(capacity) });
}

/**
 * How many times each state-changing operation took effect on one domain. A call that found the
 * domain already in the asked-for state (or, for delete, absent) is a no-op and is not counted.
 * Counters outlive the domain: after a delete they stay in the file under the vmId.
 */
export interface FakeOperationCounts {
  define: number;
  start: number;
  stop: number;
  delete: number;
}

/** What the state file holds, as {@link readFakeHypervisorState} returns it. */
export interface FakeHypervisorState {
  /** Domains currently defined, sorted by vmId. */
  domains: Domain[];
  /** Operation counters by vmId, including vmIds whose domain has since been deleted. */
  operations: Record<string, FakeOperationCounts>;
}

/** Path of the state file for a state directory. */
export function fakeStateFile(stateDir: string): string {
  return path.join(path.resolve(stateDir), FAKE_STATE_FILE);
}

/**
 * Reads the fake hypervisor's state file in `stateDir`, synchronously, without a driver: meant for
 * another process (an end-to-end test) inspecting what an agent's driver did. A missing file (or
 * directory) reads as the empty state. Throws BerthError HYPERVISOR_UNAVAILABLE if the file is
 * unreadable or not a state file. The file is replaced atomically, so a read never sees a torn file.
 */
export function readFakeHypervisorState(stateDir: string): FakeHypervisorState {
  const file = fakeStateFile(stateDir);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { domains: [], operations: {} };
    throw unavailable(`cannot read ${file}`, e);
  }
  return parseState(text, file);
}

const ZERO_COUNTS: Readonly<FakeOperationCounts> = Object.freeze({ define: 0, start: 0, stop: 0, delete: 0 });
type CountedOperation = keyof FakeOperationCounts;

/**
 * A hypervisor simulated in process, with durable state: the driver of tests and `berth dev`.
 *
 * It keeps libvirt's domain model — a domain is defined (SHUTOFF), RUNNING, PAUSED or CRASHED,
 * keyed by vmId and carrying its name, resources and the generation last applied — and persists it
 * in `<stateDir>/fake-hypervisor.json`. Every change is written atomically (temp file, fsync,
 * rename, fsync of the directory) before the operation's promise resolves, so an agent killed with
 * SIGKILL and restarted on the same `stateDir` finds its domains exactly as a real hypervisor
 * would have kept them. The file also counts, per vmId, the operations that took effect (see
 * {@link FakeOperationCounts}); {@link readFakeHypervisorState} reads both from another process.
 *
 * Construction reads the state file synchronously (creating `stateDir` if missing and removing
 * temp files a killed writer left behind); `FakeDriver.open()` is the same as a promise.
 * Operations may be called concurrently: state changes apply in call order and file writes are
 * serialized, never torn or reordered; a no-op (and `list`) resolves only once the changes it
 * reflects are on disk. One driver per `stateDir` at a time. If a write fails, the call rejects
 * with HYPERVISOR_UNAVAILABLE; its change stays in memory and goes to disk with the next write.
 *
 * Capacity is reported by `hostFacts()` but not enforced: the controller places within capacity.
 * Beyond the driver contract it offers `pause`, `resume` and `crash`, to put domains in the states
 * a real hypervisor can show on its own.
 */
export class FakeDriver implements HypervisorDriver {
  readonly kind = "fake";
  readonly options: ResolvedFakeDriverOptions;
  /** Absolute path of the state file. */
  readonly stateFile: string;

  private readonly domains = new Map<string, Domain>();
  private readonly counts = new Map<string, FakeOperationCounts>();
  private closed = false;
  /** Tail of the serialized writes; never rejects. */
  private writeChain: Promise<void> = Promise.resolve();
  /** A write queued behind the chain that has not started yet: later changes ride along with it. */
  private queuedWrite: Promise<void> | undefined;
  private tempSeq = 0;

  /** Reads (or creates) the state in `options.stateDir`. Throws INVALID_ARGUMENT or HYPERVISOR_UNAVAILABLE. */
  constructor(options: FakeDriverOptions) {
    this.options = resolveFakeDriverOptions(options);
    this.stateFile = fakeStateFile(this.options.stateDir);
    try {
      mkdirSync(this.options.stateDir, { recursive: true });
    } catch (e) {
      throw unavailable(`cannot create state directory ${this.options.stateDir}`, e);
    }
    removeStaleTempFiles(this.options.stateDir);
    const state = readFakeHypervisorState(this.options.stateDir);
    for (const d of state.domains) this.domains.set(d.vmId, d);
    for (const [vmId, c] of Object.entries(state.operations)) this.counts.set(vmId, c);
  }

  /** The constructor as a promise, for callers that prefer an async factory. */
  static async open(options: FakeDriverOptions): Promise<FakeDriver> {
    return new FakeDriver(options);
  }

  async hostFacts(): Promise<HostFacts> {
    this.ensureOpen();
    return { capacity: { ...this.options.capacity }, driver: this.kind };
  }

  /** The domains as they are now, sorted by vmId; resolves once every change it reflects is on disk. */
  async list(): Promise<Domain[]> {
    this.ensureOpen();
    const domains = [...this.domains.values()].sort(byVmId).map(copyDomain);
    await this.writeChain;
    return domains;
  }

  async define(spec: DomainSpec): Promise<Domain> {
    this.ensureOpen();
    validateSpec(spec);
    const existing = this.domains.get(spec.vmId);
    if (existing) return this.unchanged(existing);
    const domain: Domain = {
      vmId: spec.vmId,
      name: spec.name,
      state: DomainState.DOMAIN_STATE_SHUTOFF,
      generation: spec.generation,
      resources: { vcpus: spec.resources.vcpus, memoryMib: spec.resources.memoryMib, diskGib: spec.resources.diskGib },
    };
    this.domains.set(spec.vmId, domain);
    return this.commit(domain, "define");
  }

  /** From SHUTOFF, PAUSED or CRASHED to RUNNING (counted as a start); RUNNING is a no-op. */
  async start(vmId: string): Promise<Domain> {
    this.ensureOpen();
    const domain = this.get(vmId);
    if (domain.state === DomainState.DOMAIN_STATE_RUNNING) return this.unchanged(domain);
    domain.state = DomainState.DOMAIN_STATE_RUNNING;
    return this.commit(domain, "start");
  }

  /** From any other state to SHUTOFF (counted as a stop); SHUTOFF is a no-op. Graceful and forced stops are alike here. */
  async stop(vmId: string, _options: { force: boolean }): Promise<Domain> {
    this.ensureOpen();
    const domain = this.get(vmId);
    if (domain.state === DomainState.DOMAIN_STATE_SHUTOFF) return this.unchanged(domain);
    domain.state = DomainState.DOMAIN_STATE_SHUTOFF;
    return this.commit(domain, "stop");
  }

  /** Destroys (if active) and undefines in one step, counted as one delete; an absent domain is a no-op. */
  async delete(vmId: string): Promise<void> {
    this.ensureOpen();
    if (!this.domains.delete(vmId)) return this.writeChain;
    this.count(vmId, "delete");
    await this.persist();
  }

  /** Records `generation` on the domain; the same generation again writes nothing. Not counted. */
  async setGeneration(vmId: string, generation: number): Promise<Domain> {
    this.ensureOpen();
    checkGeneration(generation, "generation");
    const domain = this.get(vmId);
    if (domain.generation === generation) return this.unchanged(domain);
    domain.generation = generation;
    return this.commit(domain);
  }

  /** Pauses a running domain (libvirt `suspend`); PAUSED is a no-op; other states: FAILED_PRECONDITION. */
  async pause(vmId: string): Promise<Domain> {
    return this.transition(vmId, DomainState.DOMAIN_STATE_PAUSED, [DomainState.DOMAIN_STATE_RUNNING]);
  }

  /** Resumes a paused domain; RUNNING is a no-op; other states: FAILED_PRECONDITION. */
  async resume(vmId: string): Promise<Domain> {
    return this.transition(vmId, DomainState.DOMAIN_STATE_RUNNING, [DomainState.DOMAIN_STATE_PAUSED]);
  }

  /** Simulates a guest crash of a running or paused domain; CRASHED is a no-op; SHUTOFF: FAILED_PRECONDITION. */
  async crash(vmId: string): Promise<Domain> {
    return this.transition(vmId, DomainState.DOMAIN_STATE_CRASHED, [
      DomainState.DOMAIN_STATE_RUNNING,
      DomainState.DOMAIN_STATE_PAUSED,
    ]);
  }

  /** Operation counters of one vmId (zeros if it was never touched), from memory. */
  operationCounts(vmId: string): FakeOperationCounts {
    return { ...(this.counts.get(vmId) ?? ZERO_COUNTS) };
  }

  /** Waits for pending writes, then refuses further calls with HYPERVISOR_UNAVAILABLE. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await this.writeChain;
  }

  private ensureOpen(): void {
    if (this.closed) throw new BerthError(ErrorCode.HypervisorUnavailable, "fake hypervisor driver is closed");
  }

  private get(vmId: string): Domain {
    const domain = this.domains.get(vmId);
    if (!domain) throw notFound(`domain ${vmId}`);
    return domain;
  }

  private async transition(vmId: string, to: DomainState, from: readonly DomainState[]): Promise<Domain> {
    this.ensureOpen();
    const domain = this.get(vmId);
    if (domain.state === to) return this.unchanged(domain);
    if (!from.includes(domain.state)) {
      throw new BerthError(
        ErrorCode.FailedPrecondition,
        `domain ${vmId} is ${domainStateToJSON(domain.state)}; cannot go to ${domainStateToJSON(to)}`,
      );
    }
    domain.state = to;
    return this.commit(domain);
  }

  private count(vmId: string, op: CountedOperation): void {
    const c = this.counts.get(vmId) ?? { ...ZERO_COUNTS };
    c[op] += 1;
    this.counts.set(vmId, c);
  }

  /**
   * The answer of a no-op: the domain as it is, once every earlier change is on disk (or its write
   * has failed, which the call that made it reported). So a repeated call never confirms a state
   * that a SIGKILL could still lose.
   */
  private async unchanged(domain: Domain): Promise<Domain> {
    const result = copyDomain(domain);
    await this.writeChain;
    return result;
  }

  /** Counts `op` (if given), then persists; resolves to the domain as this operation left it. */
  private async commit(domain: Domain, op?: CountedOperation): Promise<Domain> {
    if (op) this.count(domain.vmId, op);
    const result = copyDomain(domain);
    await this.persist();
    return result;
  }

  /**
   * Schedules a write of the whole state after the writes already scheduled. The state is
   * serialized when the write starts, so it includes every change made before; changes made while
   * a write waits in the queue share that write.
   */
  private persist(): Promise<void> {
    if (this.queuedWrite) return this.queuedWrite;
    const write = this.writeChain.then(() => {
      this.queuedWrite = undefined;
      return this.writeNow(serializeState(this.snapshot()));
    });
    this.queuedWrite = write;
    this.writeChain = write.catch(() => undefined);
    return write;
  }

  private snapshot(): FakeHypervisorState {
    const operations: Record<string, FakeOperationCounts> = {};
    for (const vmId of [...this.counts.keys()].sort()) operations[vmId] = { ...this.counts.get(vmId)! };
    return { domains: [...this.domains.values()].sort(byVmId), operations };
  }

  private async writeNow(text: string): Promise<void> {
    const temp = `${this.stateFile}.${process.pid}.${++this.tempSeq}.tmp`;
    try {
      const handle = await open(temp, "w", 0o644);
      try {
        await handle.writeFile(text, "utf8");
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, this.stateFile);
    } catch (e) {
      await unlink(temp).catch(() => undefined);
      throw unavailable(`cannot write ${this.stateFile}`, e);
    }
    await syncDirectory(this.options.stateDir);
  }
}

// ---- file format -------------------------------------------------------------------------------

interface StoredDomain {
  vmId: string;
  name: string;
  state: string;
  generation: number;
  resources: Resources;
}

function serializeState(state: FakeHypervisorState): string {
  const domains: StoredDomain[] = state.domains.map((d) => ({
    vmId: d.vmId,
    name: d.name,
    state: domainStateToJSON(d.state),
    generation: d.generation,
    resources: { vcpus: d.resources?.vcpus ?? 0, memoryMib: d.resources?.memoryMib ?? 0, diskGib: d.resources?.diskGib ?? 0 },
  }));
  return `${JSON.stringify({ format: FAKE_STATE_FORMAT, domains, operations: state.operations }, null, 2)}\n`;
}

function parseState(text: string, file: string): FakeHypervisorState {
  const corrupt = (why: string): BerthError => unavailable(`${file} is not a fake hypervisor state file: ${why}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw unavailable(`${file} is not valid JSON`, e);
  }
  if (!isObject(raw)) throw corrupt("not an object");
  if (raw["format"] !== FAKE_STATE_FORMAT) throw corrupt(`format is ${JSON.stringify(raw["format"])}, expected ${FAKE_STATE_FORMAT}`);
  const rawDomains = raw["domains"];
  const rawOps = raw["operations"];
  if (!Array.isArray(rawDomains)) throw corrupt("domains is not a list");
  if (!isObject(rawOps)) throw corrupt("operations is not an object");

  const domains: Domain[] = [];
  const seen = new Set<string>();
  for (const [i, d] of rawDomains.entries()) {
    if (!isObject(d)) throw corrupt(`domains[${i}] is not an object`);
    const { vmId, name, state, generation, resources } = d;
    if (typeof vmId !== "string" || vmId === "") throw corrupt(`domains[${i}].vmId is missing`);
    if (seen.has(vmId)) throw corrupt(`domain ${vmId} appears twice`);
    seen.add(vmId);
    if (typeof name !== "string") throw corrupt(`domains[${i}].name is missing`);
    if (!isCount(generation)) throw corrupt(`domains[${i}].generation is not a whole number`);
    let parsedState: DomainState;
    try {
      parsedState = domainStateFromJSON(state);
    } catch {
      throw corrupt(`domains[${i}].state ${JSON.stringify(state)} is not a domain state`);
    }
    if (!isObject(resources) || !RESOURCE_NAMES.every((k) => isCount(resources[k]))) {
      throw corrupt(`domains[${i}].resources is not a resource vector`);
    }
    domains.push({
      vmId,
      name,
      state: parsedState,
      generation,
      resources: { vcpus: resources["vcpus"] as number, memoryMib: resources["memoryMib"] as number, diskGib: resources["diskGib"] as number },
    });
  }
  domains.sort(byVmId);

  const operations: Record<string, FakeOperationCounts> = {};
  for (const [vmId, c] of Object.entries(rawOps)) {
    if (!isObject(c)) throw corrupt(`operations[${vmId}] is not an object`);
    const counts = { ...ZERO_COUNTS };
    for (const op of Object.keys(ZERO_COUNTS) as CountedOperation[]) {
      const n = c[op] ?? 0;
      if (!isCount(n)) throw corrupt(`operations[${vmId}].${op} is not a whole number`);
      counts[op] = n;
    }
    operations[vmId] = counts;
  }
  return { domains, operations };
}

// ---- helpers -----------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function byVmId(a: Domain, b: Domain): number {
  return a.vmId < b.vmId ? -1 : a.vmId > b.vmId ? 1 : 0;
}

function copyDomain(d: Domain): Domain {
  return { ...d, resources: d.resources ? { ...d.resources } : undefined };
}

function unavailable(message: string, cause?: unknown): BerthError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new BerthError(ErrorCode.HypervisorUnavailable, `fake hypervisor: ${message}${detail}`, { cause });
}

function checkGeneration(generation: unknown, field: string): void {
  if (!isCount(generation)) {
    throw invalidArgument(field, `must be a whole number ≥ 0 (got ${String(generation)})`);
  }
}

function validateSpec(spec: DomainSpec): void {
  if (typeof spec.vmId !== "string" || spec.vmId.length === 0) throw invalidArgument("domain.vm_id", "is required");
  if (typeof spec.name !== "string") throw invalidArgument("domain.name", "is required");
  checkGeneration(spec.generation, "domain.generation");
  const r: unknown = spec.resources;
  if (!isObject(r)) throw invalidArgument("domain.resources", "is required");
  for (const k of RESOURCE_NAMES) {
    if (!isCount(r[k])) {
      throw invalidArgument(`domain.resources.${RESOURCE_FIELD[k]}`, `must be a whole number ≥ 0 (got ${String(r[k])})`);
    }
  }
}

/** Removes `fake-hypervisor.json.*.tmp` left by a writer killed between write and rename. */
function removeStaleTempFiles(stateDir: string): void {
  let names: string[];
  try {
    names = readdirSync(stateDir);
  } catch (e) {
    throw unavailable(`cannot read state directory ${stateDir}`, e);
  }
  for (const name of names) {
    if (name.startsWith(`${FAKE_STATE_FILE}.`) && name.endsWith(".tmp")) {
      try {
        unlinkSync(path.join(stateDir, name));
      } catch {
        // Already gone, or not ours to remove: harmless either way.
      }
    }
  }
}

/** Makes the rename durable. Best effort: some platforms cannot open a directory for sync. */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // The rename itself is atomic; only its durability across a power loss depends on this.
  }
}
