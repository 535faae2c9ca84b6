import { HostFailurePolicy, type VmSpec } from "@berth/api";
import type { Command } from "commander";
import {
  MAX_COUNT,
  parseCount,
  parseDiskGib,
  parseForbiddenHostLabels,
  parseHostList,
  parseLabels,
  parseMemoryMib,
  parseName,
  parseVcpus,
  validateSpecFromFlags,
} from "../parse.js";

/** `--on-host-failure` (and `config set --default-on-host-failure`) values and what they send. */
export const ON_HOST_FAILURE_OF_FLAG: Readonly<Record<string, HostFailurePolicy>> = {
  keep: HostFailurePolicy.HOST_FAILURE_POLICY_KEEP,
  restart: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART,
};

/** Appends a repeated flag's value to the ones before it. */
export const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** The flags that make a VM spec, as commander hands them over (`vm create`, `plan`). */
export interface SpecFlags {
  vcpus: string;
  memory: string;
  disk: string;
  label?: string[];
  group?: string;
  count?: string;
  requireHostLabel?: string[];
  forbidHostLabel?: string[];
  pin?: string[];
}

/** Adds `--vcpus --memory --disk --label --group --count --require-host-label --forbid-host-label --pin`. */
export function addSpecOptions(cmd: Command, countWhat: string): Command {
  return cmd
    .requiredOption("--vcpus <n>", "virtual CPUs")
    .requiredOption("--memory <size>", "memory, with a unit: 512MiB, 4GiB (a bare number is MiB)")
    .requiredOption("--disk <size>", "disk, with a unit: 20GiB, 1TiB (a bare number is GiB)")
    .option("--label <key=value>", "a label on the VM; repeat for more", collect)
    .option("--group <group>", "the placement group the VM joins (see berth group)")
    .option("--count <n>", `${countWhat} (1-${MAX_COUNT}): NAME-1 ... NAME-N, all placed or none`)
    .option("--require-host-label <key=value>", "only hosts with this label; repeat for more", collect)
    .option(
      "--forbid-host-label <key=value|key>",
      "no host with this label (a bare key: with the key at all); repeat for more",
      collect,
    )
    .option("--pin <host[,host...]>", "only these hosts may take the VM; repeat or comma-separate", collect);
}

/**
 * The specs the flags ask for: one named `name`, or with `--count N` the N specs `name-1` ...
 * `name-N`. Every flag is checked first (exit code 2, naming the flag); nothing is sent.
 */
export function specsFromFlags(name: string, flags: SpecFlags): VmSpec[] {
  const count = flags.count !== undefined ? parseCount(flags.count) : undefined;
  const template: VmSpec = {
    name,
    resources: {
      vcpus: parseVcpus(flags.vcpus),
      memoryMib: parseMemoryMib(flags.memory),
      diskGib: parseDiskGib(flags.disk),
    },
    labels: parseLabels(flags.label ?? []),
    group: flags.group === undefined ? "" : parseName(flags.group, "--group"),
    requiredHostLabels: parseLabels(flags.requireHostLabel ?? [], "--require-host-label"),
    forbiddenHostLabels: parseForbiddenHostLabels(flags.forbidHostLabel ?? []),
    onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED,
    pinnedHosts: parseHostList(flags.pin ?? []),
    image: "",
    networks: [],
    volumes: [],
  };
  const names = count === undefined ? [name] : Array.from({ length: count }, (_, i) => `${name}-${i + 1}`);
  return names.map((n) => {
    const spec: VmSpec = {
      ...template,
      name: n,
      labels: { ...template.labels },
      requiredHostLabels: { ...template.requiredHostLabels },
      forbiddenHostLabels: { ...template.forbiddenHostLabels },
      pinnedHosts: [...template.pinnedHosts],
    };
    validateSpecFromFlags(spec);
    return spec;
  });
}
