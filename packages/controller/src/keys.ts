import { ClusterConfig, Group, Host, Image, Migration, ScaleGroup, Vm, Volume } from "@berth/api";

/** Where Berth keeps its state in the store. One prefix per kind; values are protobuf bytes. */
export const Keys = {
  root: "/berth/v1/",
  leader: "/berth/v1/leader",
  hosts: "/berth/v1/hosts/",
  vms: "/berth/v1/vms/",
  host: (id: string): string => `/berth/v1/hosts/${id}`,
  /** VMs are keyed by name, so a name is unique by construction (create-if-absent). */
  vm: (name: string): string => `/berth/v1/vms/${name}`,
  groups: "/berth/v1/groups/",
  group: (name: string): string => `/berth/v1/groups/${name}`,
  config: "/berth/v1/config",
  /** One live migration per VM (in flight, or the last one finished), keyed by the VM's name. */
  migrations: "/berth/v1/migrations/",
  migration: (vmName: string): string => `/berth/v1/migrations/${vmName}`,
  /** The cluster's identity (ClusterInfo), made once. */
  cluster: "/berth/v1/cluster",
  /** The image catalog, keyed by image name (the id inside tells an image made again apart). */
  images: "/berth/v1/images/",
  image: (name: string): string => `/berth/v1/images/${name}`,
  /** Data volumes, keyed by volume name. */
  volumes: "/berth/v1/volumes/",
  volume: (name: string): string => `/berth/v1/volumes/${name}`,
  /** Scale groups, keyed by group name (their members are VM records named <group>-<index>). */
  scaleGroups: "/berth/v1/scalegroups/",
  scaleGroup: (name: string): string => `/berth/v1/scalegroups/${name}`,
} as const;

export const encodeVm = (vm: Vm): Uint8Array => Vm.encode(vm).finish();
export const decodeVm = (bytes: Uint8Array): Vm => Vm.decode(bytes);
export const encodeHost = (host: Host): Uint8Array => Host.encode(host).finish();
export const decodeHost = (bytes: Uint8Array): Host => Host.decode(bytes);
export const encodeGroup = (group: Group): Uint8Array => Group.encode(group).finish();
export const decodeGroup = (bytes: Uint8Array): Group => Group.decode(bytes);
export const encodeConfig = (config: ClusterConfig): Uint8Array => ClusterConfig.encode(config).finish();
export const decodeConfig = (bytes: Uint8Array): ClusterConfig => ClusterConfig.decode(bytes);
export const encodeMigration = (m: Migration): Uint8Array => Migration.encode(m).finish();
export const decodeMigration = (bytes: Uint8Array): Migration => Migration.decode(bytes);
export const encodeImage = (image: Image): Uint8Array => Image.encode(image).finish();
export const decodeImage = (bytes: Uint8Array): Image => Image.decode(bytes);
export const encodeVolume = (volume: Volume): Uint8Array => Volume.encode(volume).finish();
export const decodeVolume = (bytes: Uint8Array): Volume => Volume.decode(bytes);
export const encodeScaleGroup = (group: ScaleGroup): Uint8Array => ScaleGroup.encode(group).finish();
export const decodeScaleGroup = (bytes: Uint8Array): ScaleGroup => ScaleGroup.decode(bytes);
