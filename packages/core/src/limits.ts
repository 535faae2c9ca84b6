/**
 * Bounds on every input Berth accepts. They keep one bad client from exhausting a controller and
 * keep every message well under gRPC's 4 MiB receive limit and etcd's 1.5 MiB request limit.
 */
export const Limits = {
  /** Largest gRPC message either side accepts. */
  maxMessageBytes: 4 * 1024 * 1024,
  maxNameLength: 63,
  maxLabels: 64,
  maxLabelKeyLength: 63,
  maxLabelValueLength: 253,
  /** Largest VM one spec may ask for. */
  maxVcpus: 1024,
  minMemoryMib: 16,
  maxMemoryMib: 16 * 1024 * 1024,
  maxDiskGib: 1024 * 1024,
  /** Domains one host may report; more is treated as a bad Hello/Report. */
  maxDomainsPerHost: 4096,
  /** VMs in one ListVms page: the default, and the most a client may ask for. */
  defaultPageSize: 500,
  maxPageSize: 5000,
  /** VMs placed at once by CreateVms / PlanPlacement (one etcd transaction holds them all). */
  maxGangSize: 100,
  maxPinnedHosts: 64,
  /** Members of one placement group (its record lists them). */
  maxGroupMembers: 1000,
  /** Bound on the commands queued for one agent stream. */
  maxQueuedCommandsPerHost: 1024,
  /** Free-text facts and status messages from agents (CPU model, hypervisor version, why down). */
  maxFactLength: 256,
  maxNumaCells: 64,
  /** What one host reports of its images, networks and data volumes (Hello, Report). */
  maxHostImages: 1024,
  maxHostNetworks: 64,
  maxHostVolumes: 4096,
} as const;
