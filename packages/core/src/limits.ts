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
  /** NICs of one VM (VmSpec.networks), and interfaces one domain may report. */
  maxNicsPerVm: 8,
  /** Characters of a network's name (libvirt network and bridge names). */
  maxNetworkNameLength: 64,
  /** IP addresses one reported interface may carry. */
  maxAddressesPerNic: 16,
  /** SSH keys in one VM's cloud-init, and bytes of each (one line). */
  maxSshKeys: 32,
  maxSshKeyBytes: 8 * 1024,
  /** Bytes of one VM's cloud-init user-data. */
  maxUserDataBytes: 64 * 1024,
  /**
   * Bytes of cloud-init data (keys and user-data) in one gang: its VMs are one etcd transaction,
   * which must stay under etcd's 1.5 MiB request limit.
   */
  maxGangCloudInitBytes: 1024 * 1024,
  /** Data volumes attached to one VM (VmSpec.volumes, Domain.volume_ids). */
  maxVolumesPerVm: 16,
  /** Characters of an image's source (URL or path). */
  maxImageSourceLength: 2048,
  /** Characters of an id an agent reports (image, volume, VM ids: UUIDs, with room). */
  maxReportedIdLength: 128,
} as const;
