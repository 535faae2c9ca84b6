// The NoCloud seed of a domain as an ISO9660 image: the files `renderNoCloudSeed` makes, on a
// volume labelled "cidata", which cloud-init's NoCloud datasource finds on any block device.
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { CloudInitSeed } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, quote } from "@berth/core";
import { NOCLOUD_VOLUME_LABEL, renderNoCloudSeed } from "../cloud-init.js";
import type { CommandRunner } from "./virsh.js";

/** Largest user-data taken (an ISO holds more, but a seed this large is a mistake). */
export const MAX_USER_DATA_BYTES = 1024 * 1024;

/** A seed ISO on disk, in its own temporary directory (`remove()` deletes both). */
export interface SeedIso {
  file: string;
  bytes: number;
  remove(): Promise<void>;
}

/** INVALID_ARGUMENT naming the field of a seed that cannot be rendered. */
export function validateSeed(seed: CloudInitSeed): void {
  if (typeof seed !== "object" || seed === null) throw invalidArgument("cloud_init", "must be a seed");
  for (const key of ["instanceId", "hostname", "userData"] as const) {
    if (typeof seed[key] !== "string") throw invalidArgument(`cloud_init.${key === "instanceId" ? "instance_id" : key === "userData" ? "user_data" : key}`, "must be a string");
  }
  if (!Array.isArray(seed.sshAuthorizedKeys) || seed.sshAuthorizedKeys.some((k) => typeof k !== "string")) {
    throw invalidArgument("cloud_init.ssh_authorized_keys", "must be a list of strings");
  }
  if (Buffer.byteLength(seed.userData) > MAX_USER_DATA_BYTES) {
    throw invalidArgument("cloud_init.user_data", `must be at most ${MAX_USER_DATA_BYTES} bytes (got ${Buffer.byteLength(seed.userData)})`);
  }
}

/**
 * Renders the seed (`renderNoCloudSeed`) and writes it as an ISO9660 image with Joliet and Rock
 * Ridge names, volume id "cidata": `genisoimage -output seed.iso -volid cidata -joliet -rock
 * user-data meta-data`, in a fresh directory under `dir` (default: the system's temporary one).
 * FAILED_PRECONDITION naming `libvirt.genisoimage_path` when genisoimage cannot be run.
 */
export async function buildSeedIso(
  seed: CloudInitSeed,
  options: { genisoimagePath: string; runner: CommandRunner; timeoutMs: number; dir?: string | undefined },
): Promise<SeedIso> {
  validateSeed(seed);
  const files = renderNoCloudSeed(seed);
  const root = options.dir ?? tmpdir();
  await mkdir(root, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(path.join(root, "berth-seed-"));
  const remove = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    const userData = path.join(dir, "user-data");
    const metaData = path.join(dir, "meta-data");
    await writeFile(userData, files["user-data"], { mode: 0o600 });
    await writeFile(metaData, files["meta-data"], { mode: 0o600 });
    const file = path.join(dir, "seed.iso");
    // Files given by path land at the image's root under their own names.
    const args = ["-quiet", "-output", file, "-volid", NOCLOUD_VOLUME_LABEL, "-joliet", "-rock", userData, metaData];
    const r = await options.runner(options.genisoimagePath, args, { timeoutMs: options.timeoutMs });
    if (r.exitCode !== 0) {
      if (r.spawnError !== undefined) {
        throw new BerthError(
          ErrorCode.FailedPrecondition,
          `libvirt.genisoimage_path: cannot run ${quote(options.genisoimagePath)} (${r.spawnError}); it makes the cloud-init seed ISO (Debian: apt install genisoimage)`,
          { field: "libvirt.genisoimage_path" },
        );
      }
      throw new BerthError(ErrorCode.Internal, `genisoimage failed making the seed ISO: ${quote(r.stderr.trim() || `exit code ${String(r.exitCode)}`, 256)}`);
    }
    return { file, bytes: (await stat(file)).size, remove };
  } catch (e) {
    await remove();
    throw e;
  }
}
