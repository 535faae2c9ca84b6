import { AttachVolumeResponse, DetachVolumeResponse, Volume, VolumeInfo } from "@berth/api";
import type { Command } from "commander";
import { confirmOrRefuse } from "../confirm.js";
import type { CliContext } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { formatGib, sortByName } from "../format.js";
import { render } from "../output.js";
import { parseName, volumeFromFlags } from "../parse.js";
import { volumeDetailView, volumeListView } from "../storage-format.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

function requiredVolume(volume: Volume | undefined, what: string): Volume {
  if (!volume) throw new CliError(`the controller's answer to ${what} has no volume`, ExitCode.Error);
  return volume;
}

/** Where a volume is, in words: `on host-2`, or unbound and where it will go. */
const whereText = (v: Volume): string => (v.hostId ? `on ${v.hostId}` : "unbound: it goes to the host of the first VM it is attached to");

/** Adds `berth volume create|list|show|delete|attach|detach`. */
export function registerVolumeCommands(program: Command, ctx: CliContext): void {
  const volume = program
    .command("volume")
    .description("Data volumes: disks that outlive a VM, kept in one host's storage and attached to one VM at a time")
    .addHelpText("after", "\nExamples:\n  berth volume create db-data --size 100GiB\n  berth volume attach db-data db-1");

  volume
    .command("create")
    .description("Create a data volume, on --host or on the host of the first VM it is attached to")
    .argument("<name>", "volume name: 1-63 lower-case letters, digits or '-', unique in the cluster")
    .requiredOption("--size <size>", "its size, in whole GiB as --disk: 10GiB, 1TiB (a bare number is GiB)")
    .option("--host <host>", "the host whose storage holds it (default: the host of the first VM it is attached to)")
    .addHelpText(
      "after",
      `
A volume lives in one host's storage pool and counts in that host's allocated disk from the
moment it is bound: at once with --host (the host makes it), else when it is first attached to
a VM (as Kubernetes' WaitForFirstConsumer: it goes where that VM is). A VM with volumes is placed
on and kept to their host; a live migration carries them along. Sizes round up to a whole GiB.
Already exists: exit code 6; no room on --host: exit 4. Admin only. ${EXIT_CODES_SEE}

Examples:
  berth volume create db-data --size 100GiB
  berth volume create logs --size 20 --host host-2`,
    )
    .action(async (name: string, flags: { size: string; host?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const created = requiredVolume((await ctx.client(g).createVolume({ volume: volumeFromFlags(name, flags) })).volume, "CreateVolume");
      // A new volume's phase, as ListVolumes names it: bound ones are made by their host next.
      const info = VolumeInfo.fromPartial({ volume: created, phase: created.hostId ? "creating" : "unbound" });
      ctx.io.stdout(render(g.output, { ...volumeListView([info], ctx.io.now()), data: () => VolumeInfo.toJSON(info) }));
    });

  volume
    .command("list")
    .description("List data volumes, sorted by name: size, host, the VM attached, phase")
    .option("--host <host>", "only the volumes on this host")
    .addHelpText(
      "after",
      `
Columns: NAME, SIZE, HOST (<unbound> until it is bound), ATTACHED TO (a VM), PHASE (unbound,
creating, available, attaching, attached, detaching, deleting), AGE; -o wide adds ID and
GENERATION. -o json / -o yaml: the volumes with their phases; -o name: their names.
${EXIT_CODES_SEE}

Examples:
  berth volume list
  berth volume list --host host-2 -o wide`,
    )
    .action(async (flags: { host?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const hostId = flags.host === undefined ? "" : parseName(flags.host, "--host");
      const { volumes } = await ctx.client(g).listVolumes({ hostId });
      const sorted = sortByName(volumes, (v) => v.volume?.name ?? "");
      ctx.io.stdout(render(g.output, volumeListView(sorted, ctx.io.now())));
    });

  volume
    .command("show")
    .description("Show one data volume: size, host, the VM attached, phase, generation")
    .argument("<name>", "volume name")
    .addHelpText("after", `\nNo such volume: exit code 3. ${EXIT_CODES_SEE}\n\nExample:\n  berth volume show db-data`)
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const info = (await ctx.client(g).getVolume({ name })).volume;
      if (!info?.volume) throw new CliError("the controller's answer to GetVolume has no volume", ExitCode.Error);
      ctx.io.stdout(render(g.output, volumeDetailView(info, ctx.io.now())));
    });

  volume
    .command("delete")
    .description("Delete a detached data volume and its data (it cannot be undone)")
    .argument("<name>", "volume name")
    .option("--yes", "do not ask for confirmation (required without a terminal)")
    .addHelpText(
      "after",
      `
Refused while the volume is attached (FAILED_PRECONDITION, exit 6): berth volume detach NAME
first. The volume's host removes it with its data, then the record goes (PHASE deleting until
then). On a terminal it asks first; without one it requires --yes (else exit 2). No such volume:
exit 3. Admin only. ${EXIT_CODES_SEE}

Examples:
  berth volume delete scratch
  berth volume delete scratch --yes`,
    )
    .action(async (name: string, flags: { yes?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      let what = `volume ${name}`;
      if (!flags.yes && ctx.io.interactive) {
        // Best effort: say what is about to go.
        const found = await client
          .getVolume({ name })
          .then((r) => r.volume?.volume)
          .catch(() => undefined);
        if (found) what += ` (${formatGib(found.sizeGib)}, ${whereText(found)}${found.attachedTo ? `, attached to ${found.attachedTo}` : ""})`;
      }
      await confirmOrRefuse(ctx.io, {
        yes: flags.yes,
        verb: "volume delete",
        consequences: `This deletes ${what} and its data: it cannot be undone.`,
      });
      const deleted = (await client.deleteVolume({ name })).volume;
      const table = (): string =>
        deleted?.deleting && deleted.hostId
          ? `volume ${name} deleting: ${deleted.hostId} removes it and its data, then the record goes\n`
          : `volume ${name} deleted\n`;
      ctx.io.stdout(render(g.output, { data: () => (deleted ? Volume.toJSON(deleted) : { name, deleted: true }), table, names: () => [name] }));
    });

  volume
    .command("attach")
    .description("Attach a data volume to a VM (hot-plugged if it runs); an unbound volume is bound to the VM's host")
    .argument("<name>", "volume name")
    .argument("<vm>", "the VM's name")
    .addHelpText(
      "after",
      `
The volume must be on the VM's host, or unbound: it is then bound there, if the host's disk has
room (else exit 4). A volume is attached to one VM at a time (attached elsewhere: exit 6). The
VM's spec lists it (berth vm show NAME, Volumes) and its generation goes up: the host attaches
it, live if the VM runs. From then on the VM stays on the volume's host (migrations carry it).
Admin only. ${EXIT_CODES_SEE}

Example:
  berth volume attach db-data db-1`,
    )
    .action(async (name: string, vmName: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      parseName(vmName, "VM");
      const response = await ctx.client(g).attachVolume({ volume: name, vm: vmName });
      const attached = requiredVolume(response.volume, "AttachVolume");
      const table = (): string =>
        `volume ${name} attached to vm ${vmName}${attached.hostId ? ` on ${attached.hostId}` : ""}` +
        `${response.vm ? ` (vm generation ${response.vm.generation}: its host attaches it, live if the VM runs)` : ""}\n`;
      ctx.io.stdout(render(g.output, { data: () => AttachVolumeResponse.toJSON(response), table, names: () => [name] }));
    });

  volume
    .command("detach")
    .description("Detach a data volume from its VM; the volume and its data stay on its host")
    .argument("<name>", "volume name")
    .addHelpText(
      "after",
      `
The VM's spec drops it and its generation goes up: the host detaches it (live if the VM runs;
the guest should have unmounted it). The volume stays bound to its host, ready to attach again
or to delete. Not attached: exit 6. Admin only. ${EXIT_CODES_SEE}

Example:
  berth volume detach db-data`,
    )
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const response = await ctx.client(g).detachVolume({ volume: name });
      const detached = requiredVolume(response.volume, "DetachVolume");
      const from = response.vm?.spec?.name;
      const table = (): string =>
        `volume ${name} detached${from ? ` from vm ${from}` : ""}; it and its data stay ${detached.hostId ? `on ${detached.hostId}` : "in the cluster"}\n`;
      ctx.io.stdout(render(g.output, { data: () => DetachVolumeResponse.toJSON(response), table, names: () => [name] }));
    });
}
