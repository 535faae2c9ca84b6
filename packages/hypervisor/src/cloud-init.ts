import type { CloudInitSeed } from "@berth/api";
import { stringify } from "yaml";

/** The files of a NoCloud seed, as cloud-init reads them from a volume labelled "cidata". */
export interface NoCloudSeedFiles {
  "meta-data": string;
  "user-data": string;
}

/** The volume label cloud-init's NoCloud datasource looks for. */
export const NOCLOUD_VOLUME_LABEL = "cidata";

/**
 * Renders a seed into NoCloud's files: meta-data carries the instance id (the VM's id: a new id is
 * a new instance to cloud-init, so a VM recreated elsewhere runs its first-boot modules again), the
 * local hostname (the VM's name) and the SSH keys (`public-keys`); user-data is the operator's as
 * given, or else a #cloud-config setting the hostname and the keys. One definition for both
 * drivers, so the fake's seed is byte for byte the one libvirt attaches. Pure.
 */
export function renderNoCloudSeed(seed: CloudInitSeed): NoCloudSeedFiles {
  const metaData: Record<string, unknown> = { "instance-id": seed.instanceId, "local-hostname": seed.hostname };
  if (seed.sshAuthorizedKeys.length > 0) metaData["public-keys"] = [...seed.sshAuthorizedKeys];
  let userData = seed.userData;
  if (userData === "") {
    const config: Record<string, unknown> = { hostname: seed.hostname };
    if (seed.sshAuthorizedKeys.length > 0) config["ssh_authorized_keys"] = [...seed.sshAuthorizedKeys];
    userData = `#cloud-config\n${stringify(config, { lineWidth: 0 })}`;
  }
  return { "meta-data": stringify(metaData, { lineWidth: 0 }), "user-data": userData };
}
