import { HostFailurePolicy, type CloudInit, type VmSpec } from "@berth/api";
import type { Command } from "commander";
import { readCloudInit, type CloudInitFlags } from "../cloud-init-flags.js";
import type { Io } from "../context.js";
import { usageError } from "../exit-codes.js";
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
export interface SpecFlags extends CloudInitFlags {
  vcpus: string;
  memory: string;
  /** Required; optional to commander so that its absence is explained (with --image: how big). */
  disk?: string;
  label?: string[];
  group?: string;
  count?: string;
  requireHostLabel?: string[];
  forbidHostLabel?: string[];
  pin?: string[];
  image?: string;
  network?: string[];
  volume?: string[];
}

/**
 * Adds `--vcpus --memory --disk --image --network --ssh-key --user-data --volume --label --group
 * --count --require-host-label --forbid-host-label --pin`.
 */
export function addSpecOptions(cmd: Command, countWhat: string): Command {
  return cmd
    .requiredOption("--vcpus <n>", "virtual CPUs")
    .requiredOption("--memory <size>", "memory, with a unit: 512MiB, 4GiB (a bare number is MiB)")
    .option("--disk <size>", "disk, with a unit: 20GiB, 1TiB (a bare number is GiB); required; with --image at least the image's virtual size")
    .option("--image <image>", "the base image the disk starts from (berth image list); without it, a blank disk")
    .option("--network <network>", "a NIC on this network (a libvirt network or bridge the host offers; berth host show); repeat for more NICs, in order", collect)
    .option("--ssh-key <key|@file|file>", "an SSH public key for the guest's default user: the key itself, or a file of keys (one a line); repeat for more", collect)
    .option("--user-data <file>", "cloud-init user-data (#cloud-config, a script...; at most 64 KiB) from this file; - reads standard input")
    .option("--volume <volume>", "attach this data volume (berth volume create); repeat for more, in order; not with --count", collect)
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
 * `name-N`, each with `cloudInit` (read from `--ssh-key` / `--user-data` by
 * {@link readSpecsFromFlags}; `undefined`: no seed). Every flag is checked first (exit code 2,
 * naming the flag); nothing is sent.
 */
export function specsFromFlags(name: string, flags: SpecFlags, cloudInit?: CloudInit): VmSpec[] {
  const count = flags.count !== undefined ? parseCount(flags.count) : undefined;
  const image = flags.image === undefined ? "" : parseName(flags.image, "--image");
  if (flags.disk === undefined) {
    throw usageError(
      image
        ? `--disk: required: the VM's disk is a layer over image ${image}, so give --disk at least the image's virtual size (berth image show ${image})`
        : "--disk: required: the VM's disk size, e.g. 20GiB",
    );
  }
  const volumes = (flags.volume ?? []).map((v) => parseName(v, "--volume"));
  if (count !== undefined && volumes.length > 0) {
    throw usageError("--volume: not with --count: a volume is attached to one VM at a time (attach one to each VM: berth volume attach)");
  }
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
    image,
    networks: [...(flags.network ?? [])],
    volumes,
    ...(cloudInit ? { cloudInit } : {}),
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
      networks: [...template.networks],
      volumes: [...template.volumes],
      ...(cloudInit ? { cloudInit: { ...cloudInit, sshAuthorizedKeys: [...cloudInit.sshAuthorizedKeys] } } : {}),
    };
    validateSpecFromFlags(spec);
    return spec;
  });
}

/**
 * {@link specsFromFlags} with `--ssh-key` and `--user-data` read from their files (or standard
 * input): every other flag is checked before any file is read, so a typo never waits on stdin.
 * With `--image` and neither cloud-init flag, a note on stderr (`note` true: human output) says the
 * guest gets no seed, so no key to log in with.
 */
export async function readSpecsFromFlags(io: Io, name: string, flags: SpecFlags, note = true): Promise<VmSpec[]> {
  specsFromFlags(name, flags);
  const cloudInit = await readCloudInit(io, flags);
  if (note && flags.image !== undefined && cloudInit === undefined) {
    io.stderr("note: no --ssh-key or --user-data: the guest gets no cloud-init seed, so a cloud image has no key or password to log in with\n");
  }
  return specsFromFlags(name, flags, cloudInit);
}
