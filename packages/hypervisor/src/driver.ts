import type { Domain, Resources } from "@berth/api";

/** What a hypervisor says of its host. */
export interface HostFacts {
  /** Physical capacity offered to VMs (before allocation ratios and reserves). */
  capacity: Resources;
  /** The driver's kind, e.g. "fake" or "libvirt". */
  driver: string;
}

/** The spec of a domain to define, derived from the VM spec by the agent. */
export interface DomainSpec {
  /** The VM's id (UUID): the domain's identity on the hypervisor. */
  vmId: string;
  name: string;
  resources: Resources;
  /** The generation of the command that defines it, recorded with the domain. */
  generation: number;
}

/**
 * A hypervisor as the agent drives it. Every operation is idempotent: asking for the state a domain
 * is already in succeeds and changes nothing. Errors are `BerthError`s from @berth/core:
 * NOT_FOUND (no such domain), HYPERVISOR_UNAVAILABLE, RESOURCE_EXHAUSTED.
 */
export interface HypervisorDriver {
  readonly kind: string;
  hostFacts(): Promise<HostFacts>;
  /** Every domain Berth manages on this host, with its state and recorded generation. */
  list(): Promise<Domain[]>;
  /** Defines the domain (shut off). Idempotent: an existing domain with this vmId is returned as is. */
  define(spec: DomainSpec): Promise<Domain>;
  /** Starts the domain. Idempotent: a running domain is left running. NOT_FOUND if undefined. */
  start(vmId: string): Promise<Domain>;
  /** Stops the domain (force: power off at once). Idempotent: a shut-off domain stays so. NOT_FOUND if undefined. */
  stop(vmId: string, options: { force: boolean }): Promise<Domain>;
  /** Destroys and undefines the domain. Idempotent: an absent domain is success. */
  delete(vmId: string): Promise<void>;
  /** Records the generation last applied to the domain (libvirt: domain metadata). NOT_FOUND if undefined. */
  setGeneration(vmId: string, generation: number): Promise<Domain>;
  /** Releases resources (files, connections). Idempotent. */
  close(): Promise<void>;
}
