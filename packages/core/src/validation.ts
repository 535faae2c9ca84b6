import { HostFailurePolicy, type Hello, type HypervisorStatus, type Report, type Resources, type VmSpec } from "@berth/api";
import { invalidArgument, quote } from "./errors.js";
import { Limits } from "./limits.js";

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;

/** A DNS label: lower-case letters, digits and '-', 1..63 characters. Throws INVALID_ARGUMENT. */
export function validateName(name: string, field: string): void {
  if (name.length === 0) throw invalidArgument(field, "is required");
  if (!DNS_LABEL.test(name)) {
    throw invalidArgument(
      field,
      `'${name.slice(0, 80)}' must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit`,
    );
  }
}

/** Host ids follow the same rule as VM names (they appear in keys and domain names). */
export const validateHostId = (id: string, field = "host_id"): void => validateName(id, field);

export function validateLabels(labels: Record<string, string>, field: string): void {
  const entries = Object.entries(labels);
  if (entries.length > Limits.maxLabels) throw invalidArgument(field, `at most ${Limits.maxLabels} labels`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) {
      throw invalidArgument(`${field}[${k.slice(0, 80)}]`, "key must be 1-63 letters, digits, '.', '_', '/' or '-'");
    }
    if (v.length > Limits.maxLabelValueLength) {
      throw invalidArgument(`${field}[${k}]`, `value longer than ${Limits.maxLabelValueLength} characters`);
    }
    if (/[\u0000-\u001f\u007f]/.test(v)) throw invalidArgument(`${field}[${k}]`, "value must not contain control characters (NUL, newlines, ...)");
  }
}

function checkInteger(value: number, field: string, min: number, max: number, unit: string): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw invalidArgument(field, `must be a whole number from ${min} to ${max} ${unit} (got ${value})`);
  }
}

/**
 * Checks a VM spec against Berth's rules and limits. Throws INVALID_ARGUMENT naming the first field
 * at fault (`spec.resources.memory_mib: must be ...`). Pure; never changes `spec`.
 */
export function validateVmSpec(spec: VmSpec | undefined, field = "spec"): asserts spec is VmSpec & { resources: Resources } {
  if (!spec) throw invalidArgument(field, "is required");
  validateName(spec.name, `${field}.name`);
  const r = spec.resources;
  if (!r) throw invalidArgument(`${field}.resources`, "is required");
  checkInteger(r.vcpus, `${field}.resources.vcpus`, 1, Limits.maxVcpus, "vCPUs");
  checkInteger(r.memoryMib, `${field}.resources.memory_mib`, Limits.minMemoryMib, Limits.maxMemoryMib, "MiB");
  checkInteger(r.diskGib, `${field}.resources.disk_gib`, 0, Limits.maxDiskGib, "GiB");
  validateLabels(spec.labels, `${field}.labels`);
  if (spec.group !== "") validateName(spec.group, `${field}.group`);
  validateLabels(spec.requiredHostLabels, `${field}.required_host_labels`);
  validateLabels(spec.forbiddenHostLabels, `${field}.forbidden_host_labels`);
  if (spec.pinnedHosts.length > Limits.maxPinnedHosts) {
    throw invalidArgument(`${field}.pinned_hosts`, `at most ${Limits.maxPinnedHosts} hosts`);
  }
  spec.pinnedHosts.forEach((h, i) => validateHostId(h, `${field}.pinned_hosts[${i}]`));
  const policy = spec.onHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED;
  if (!Object.values(HostFailurePolicy).includes(policy)) {
    throw invalidArgument(`${field}.on_host_failure`, `must be KEEP or RESTART (got ${String(policy).slice(0, 16)})`);
  }
}

/** Checks the specs of a gang (CreateVms, PlanPlacement): count, each spec, distinct names. */
export function validateVmSpecs(specs: readonly VmSpec[], field = "specs"): void {
  if (specs.length === 0) throw invalidArgument(field, "at least one spec is required");
  if (specs.length > Limits.maxGangSize) throw invalidArgument(field, `at most ${Limits.maxGangSize} VMs at once (got ${specs.length})`);
  const names = new Set<string>();
  specs.forEach((spec, i) => {
    validateVmSpec(spec, `${field}[${i}]`);
    if (names.has(spec.name)) throw invalidArgument(`${field}[${i}].name`, `'${spec.name}' appears twice`);
    names.add(spec.name);
  });
}

/** Checks an agent's Hello. Throws INVALID_ARGUMENT naming the field. */
export function validateHello(hello: Hello): void {
  validateHostId(hello.hostId, "hello.host_id");
  if (hello.bootId.length === 0 || hello.bootId.length > 128) {
    throw invalidArgument("hello.boot_id", "must be 1-128 characters");
  }
  // The agent's --join-cluster bound (a cluster id is a UUID; the rule leaves room).
  if (hello.clusterId.length > 128 || !/^[\x21-\x7e]*$/.test(hello.clusterId)) {
    throw invalidArgument("hello.cluster_id", `must be at most 128 printable characters without spaces (got ${quote(hello.clusterId)})`);
  }
  const c = hello.capacity;
  if (!c) throw invalidArgument("hello.capacity", "is required");
  checkInteger(c.vcpus, "hello.capacity.vcpus", 1, 1 << 20, "vCPUs");
  checkInteger(c.memoryMib, "hello.capacity.memory_mib", 1, Number.MAX_SAFE_INTEGER, "MiB");
  checkInteger(c.diskGib, "hello.capacity.disk_gib", 0, Number.MAX_SAFE_INTEGER, "GiB");
  validateLabels(hello.labels, "hello.labels");
  const ratio = hello.allocationRatio;
  if (ratio) {
    for (const [k, v] of [["vcpus", ratio.vcpus], ["memory", ratio.memory], ["disk", ratio.disk]] as const) {
      if (!Number.isFinite(v) || v < 0 || v > 100) throw invalidArgument(`hello.allocation_ratio.${k}`, `must be from 0 (unset) to 100 (got ${v})`);
    }
  }
  const reserved = hello.reserved;
  if (reserved) {
    checkInteger(reserved.vcpus, "hello.reserved.vcpus", 0, c.vcpus, "vCPUs");
    checkInteger(reserved.memoryMib, "hello.reserved.memory_mib", 0, c.memoryMib, "MiB");
    checkInteger(reserved.diskGib, "hello.reserved.disk_gib", 0, c.diskGib, "GiB");
  }
  const n = hello.inventory?.domains.length ?? 0;
  if (n > Limits.maxDomainsPerHost) {
    throw invalidArgument("hello.inventory.domains", `at most ${Limits.maxDomainsPerHost} domains (got ${n})`);
  }
  const facts = hello.facts;
  if (facts) {
    checkFact(facts.cpuModel, "hello.facts.cpu_model");
    checkFact(facts.hypervisorVersion, "hello.facts.hypervisor_version");
    if (facts.numaCells.length > Limits.maxNumaCells) {
      throw invalidArgument("hello.facts.numa_cells", `at most ${Limits.maxNumaCells} cells (got ${facts.numaCells.length})`);
    }
  }
  if (hello.hypervisor) validateHypervisorStatus(hello.hypervisor, "hello.hypervisor");
}

/**
 * Checks an agent's Report before anything of it is applied: usage within bounds (whole numbers, at
 * most the largest host Hello accepts), the hypervisor status, and at most maxDomainsPerHost
 * domains and per-VM usage entries. Throws INVALID_ARGUMENT naming the field.
 */
export function validateReport(report: Report, field = "report"): void {
  const u = report.usage;
  if (u) {
    checkInteger(u.vcpus, `${field}.usage.vcpus`, 0, 1 << 20, "vCPUs");
    checkInteger(u.memoryMib, `${field}.usage.memory_mib`, 0, Number.MAX_SAFE_INTEGER, "MiB");
    checkInteger(u.diskGib, `${field}.usage.disk_gib`, 0, Number.MAX_SAFE_INTEGER, "GiB");
  }
  if (report.hypervisor) validateHypervisorStatus(report.hypervisor, `${field}.hypervisor`);
  if (report.vmUsage.length > Limits.maxDomainsPerHost) {
    throw invalidArgument(`${field}.vm_usage`, `at most ${Limits.maxDomainsPerHost} entries (got ${report.vmUsage.length})`);
  }
  const n = report.inventory?.domains.length ?? 0;
  if (n > Limits.maxDomainsPerHost) throw invalidArgument(`${field}.inventory.domains`, `at most ${Limits.maxDomainsPerHost} domains (got ${n})`);
}

/** Bounds a hypervisor status from an agent. Throws INVALID_ARGUMENT naming `field`. */
export function validateHypervisorStatus(status: HypervisorStatus, field: string): void {
  checkFact(status.message, `${field}.message`);
}

function checkFact(text: string, field: string): void {
  if (text.length > Limits.maxFactLength) throw invalidArgument(field, `at most ${Limits.maxFactLength} characters (got ${text.length})`);
}
