import { describe, expect, it } from "vitest";
import { BerthError } from "@berth/core";
import { resolveLibvirtDriverOptions, type LibvirtDriverOptions } from "./options.js";

function fails(options: LibvirtDriverOptions): BerthError {
  try {
    resolveLibvirtDriverOptions(options);
  } catch (e) {
    expect(e).toBeInstanceOf(BerthError);
    return e as BerthError;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("resolveLibvirtDriverOptions", () => {
  it("applies the defaults", () => {
    const o = resolveLibvirtDriverOptions();
    expect(o).toMatchObject({
      uri: "qemu:///system",
      storagePool: "default",
      networks: [],
      domainType: undefined,
      hostReserveMib: 0,
      namePrefix: "berth-",
      stopTimeoutMs: 30_000,
      commandTimeoutMs: 60_000,
      migrationUri: "qemu:///system",
      virshPath: "virsh",
    });
    expect(Object.isFrozen(o)).toBe(true);
  });

  it("keeps given values; the migration URI follows the URI", () => {
    const o = resolveLibvirtDriverOptions({
      uri: "qemu+ssh://h1/system",
      storagePool: "vms",
      networks: [{ type: "bridge", source: "br0" }, { type: "network", source: "default" }],
      domainType: "qemu",
      hostReserveMib: 2048,
      namePrefix: "",
      stopTimeoutMs: 0,
    });
    expect(o.migrationUri).toBe("qemu+ssh://h1/system");
    expect(o.networks).toEqual([{ type: "bridge", source: "br0" }, { type: "network", source: "default" }]);
    expect(o.namePrefix).toBe("");
    expect(o.domainType).toBe("qemu");
  });

  it("takes the watchdog device and state file as absolute paths; neither by default", () => {
    expect(resolveLibvirtDriverOptions()).toMatchObject({ watchdogDevice: undefined, watchdogStateFile: undefined });
    const o = resolveLibvirtDriverOptions({ watchdogDevice: "/dev/watchdog", watchdogStateFile: "/var/lib/berth-agent/./watchdog.json" });
    expect(o).toMatchObject({ watchdogDevice: "/dev/watchdog", watchdogStateFile: "/var/lib/berth-agent/watchdog.json" });
  });

  it("takes a migration data URI (tcp:// or rdma://, with a port or not); none by default", () => {
    expect(resolveLibvirtDriverOptions().migrationDataUri).toBeUndefined();
    expect(resolveLibvirtDriverOptions({ migrationDataUri: "tcp://10.0.0.5:49152" }).migrationDataUri).toBe("tcp://10.0.0.5:49152");
    expect(resolveLibvirtDriverOptions({ migrationDataUri: "tcp://[fd00::5]" }).migrationDataUri).toBe("tcp://[fd00::5]");
  });

  it.each<[LibvirtDriverOptions, string]>([
    [{ migrationDataUri: "10.0.0.5" }, "libvirt.migration_data_uri"],
    [{ migrationDataUri: "unix:///run/x.sock" }, "libvirt.migration_data_uri"],
    [{ migrationDataUri: "tcp://h/p?x=1" }, "libvirt.migration_data_uri"],
    [{ migrationUri: "qemu+tls://h/system#frag" }, "libvirt.migration_uri"],
    [{ uri: "" }, "libvirt.uri"],
    [{ uri: "system" }, "libvirt.uri"],
    [{ storagePool: "a/b" }, "libvirt.storage_pool"],
    [{ storagePool: " " }, "libvirt.storage_pool"],
    [{ networks: [{ type: "nat" as "network", source: "x" }] }, "libvirt.networks[0].type"],
    [{ networks: [{ type: "bridge", source: "br0" }, { type: "bridge", source: "b'r" }] }, "libvirt.networks[1].source"],
    [{ domainType: "xen" as "kvm" }, "libvirt.domain_type"],
    [{ hostReserveMib: -1 }, "libvirt.host_reserve_mib"],
    [{ hostReserveMib: 1.5 }, "libvirt.host_reserve_mib"],
    [{ namePrefix: "a/" }, "libvirt.name_prefix"],
    [{ stopTimeoutMs: -5 }, "libvirt.stop_timeout_ms"],
    [{ commandTimeoutMs: 0 }, "libvirt.command_timeout_ms"],
    [{ virshPath: "" }, "libvirt.virsh_path"],
    [{ watchdogDevice: "dev/watchdog" }, "libvirt.watchdog_device"],
    [{ watchdogDevice: "" }, "libvirt.watchdog_device"],
    [{ watchdogStateFile: "watchdog.json" }, "libvirt.watchdog_state_file"],
    [{ watchdogDevice: "/dev/watchdog", watchdogStateFile: "/dev/watchdog" }, "libvirt.watchdog_state_file"],
  ])("refuses %j naming %s", (options, field) => {
    const e = fails(options);
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.field).toBe(field);
    expect(e.message.startsWith(`${field}: `)).toBe(true);
  });
});
