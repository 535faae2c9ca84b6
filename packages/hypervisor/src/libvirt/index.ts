export { LibvirtDriver, LIBVIRT_DRIVER_KIND, DEFAULT_PROGRESS_INTERVAL_MS, MIGRATION_ABORT_TIMEOUT_MS, type LibvirtDriverInternals } from "./libvirt-driver.js";
export { formatMigrationTargetUri, parseDomJobInfo, parseMigrationTargetUri, type LibvirtMigrationAddress } from "./migration.js";
export {
  resolveLibvirtDriverOptions,
  DEFAULT_LIBVIRT_URI,
  DEFAULT_STORAGE_POOL,
  DEFAULT_NAME_PREFIX,
  DEFAULT_STOP_TIMEOUT_MS,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_MIGRATION_TIMEOUT_MS,
  DEFAULT_MAX_IMAGE_BYTES,
  DEFAULT_IMAGE_FETCH_TIMEOUT_MS,
  DEFAULT_ADDRESS_REFRESH_MS,
  type LibvirtDriverOptions,
  type LibvirtNetwork,
  type ResolvedLibvirtDriverOptions,
} from "./options.js";
export { execFileRunner, mapVirshError, type CommandResult, type CommandRunner, type RunOptions } from "./virsh.js";
export { BERTH_XMLNS, volumeName, imageVolumeName, dataVolumeName, seedVolumeName, dataVolumeSerial } from "./domain-xml.js";
export { LIBVIRT_WATCHDOG_FORMAT, readWatchdogStateFile, type PersistedWatchdog } from "./watchdog.js";
