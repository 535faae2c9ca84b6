import { ImageInfo } from "@berth/api";
import { IMAGE_FORMATS } from "@berth/core";
import { Option, type Command } from "commander";
import { confirmOrRefuse } from "../confirm.js";
import type { CliContext } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { sortByName } from "../format.js";
import { render } from "../output.js";
import { imageFromFlags } from "../parse.js";
import { imageDetailView, imageListView, imageView } from "../storage-format.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

function requiredImage(info: ImageInfo | undefined, what: string): ImageInfo {
  if (!info?.image) throw new CliError(`the controller's answer to ${what} has no image`, ExitCode.Error);
  return info;
}

/** Adds `berth image create|list|show|delete`. */
export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program
    .command("image")
    .description("The cluster's catalog of base images that VM disks start from (vm create --image)")
    .addHelpText(
      "after",
      `
Example:
  berth image create jammy --source https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img`,
    );

  image
    .command("create")
    .description("Add a base image to the catalog; hosts fetch it from its source when a VM there first needs it")
    .argument("<name>", "image name: 1-63 lower-case letters, digits or '-', unique in the cluster")
    .requiredOption("--source <url|path>", "where every host fetches it: an http(s):// URL, or an absolute path (or file:// URL) each host can read")
    .addOption(new Option("--format <format>", "how the image is stored (default: qcow2)").choices([...IMAGE_FORMATS]))
    .option("--sha256 <hex>", "the SHA-256 the fetched file must have (sha256sum); a host refuses a copy that differs")
    .addHelpText(
      "after",
      `
Nothing is fetched now: each host fetches the image the first time a VM placed there uses it,
keeps one copy, and every VM disk there is a copy-on-write layer over it (so a VM's --disk must
be at least the image's virtual size; berth image show NAME has it once a host holds it).

--source is read by each host, not by this command, so it must mean the same on every host: an
http:// or https:// URL, or an absolute path every host can read (a shared mount, or a file://
URL). A relative path is refused rather than made absolute: it would name a file on this
machine, which the hosts cannot see; copy the file to a shared mount or serve it over HTTP.
Already exists: exit code 6. Admin only. ${EXIT_CODES_SEE}

Examples:
  berth image create jammy --source https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img
  berth image create alpine --source /srv/images/alpine-3.19.qcow2 \\
      --sha256 "$(sha256sum /srv/images/alpine-3.19.qcow2 | cut -d' ' -f1)"
  berth image create scratch --source file:///mnt/images/scratch.raw --format raw -o json`,
    )
    .action(async (name: string, flags: { source: string; format?: string; sha256?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const created = (await ctx.client(g).createImage({ image: imageFromFlags(name, flags) })).image;
      if (!created) throw new CliError("the controller's answer to CreateImage has no image", ExitCode.Error);
      // A new image: no host holds it yet, no VM names it.
      const info = ImageInfo.fromPartial({ image: created, hosts: [], vms: 0 });
      ctx.io.stdout(render(g.output, imageView(info, ctx.io.now())));
    });

  image
    .command("list")
    .description("List the catalog's images, sorted by name: format, source, how many hosts hold each and VMs use it")
    .addHelpText(
      "after",
      `
Columns: NAME, FORMAT, SOURCE (shortened; -o wide shows all of it), HOSTS (how many hold a copy;
-o wide: which), VMS (whose spec names it), SIZE (what a copy takes on a host's disk, once one
holds it), AGE; -o wide adds VIRTUAL SIZE (the smallest --disk over it) and ID. -o json / -o yaml:
the images with their hosts; -o name: their names. ${EXIT_CODES_SEE}

Examples:
  berth image list
  berth image list -o wide`,
    )
    .action(async (_flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const { images } = await ctx.client(g).listImages({});
      const sorted = sortByName(images, (i) => i.image?.name ?? "");
      ctx.io.stdout(render(g.output, imageListView(sorted, ctx.io.now())));
    });

  image
    .command("show")
    .description("Show one image: source, format, checksum, sizes, the VMs using it and the hosts holding it")
    .argument("<name>", "image name")
    .addHelpText("after", `\nNo such image: exit code 3. ${EXIT_CODES_SEE}\n\nExample:\n  berth image show jammy`)
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const info = requiredImage((await ctx.client(g).getImage({ name })).image, "GetImage");
      ctx.io.stdout(render(g.output, imageDetailView(info, ctx.io.now())));
    });

  image
    .command("delete")
    .description("Remove an image from the catalog (refused while a VM uses it); hosts drop their copies once unused")
    .argument("<name>", "image name")
    .option("--yes", "do not ask for confirmation (required without a terminal)")
    .addHelpText(
      "after",
      `
Refused while any VM's spec names the image (FAILED_PRECONDITION, exit 6): delete those VMs
first. VMs already made from it keep running; each host keeps its copy until no domain there
uses it. An image made again under the same name is a new image (a new id): hosts fetch it anew.
On a terminal it asks first; without one it requires --yes (else exit 2). No such image: exit 3.
${EXIT_CODES_SEE}

Examples:
  berth image delete jammy
  berth image delete jammy --yes`,
    )
    .action(async (name: string, flags: { yes?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      let what = `image ${name}`;
      if (!flags.yes && ctx.io.interactive) {
        // Best effort: say what is about to go.
        const info = await client
          .getImage({ name })
          .then((r) => r.image)
          .catch(() => undefined);
        if (info?.image) what += ` (${info.image.source}; held by ${info.hosts.length} host${info.hosts.length === 1 ? "" : "s"}, used by ${info.vms} VM${info.vms === 1 ? "" : "s"})`;
      }
      await confirmOrRefuse(ctx.io, {
        yes: flags.yes,
        verb: "image delete",
        consequences: `This removes ${what} from the catalog: no new VM can start from it. Hosts drop their copies once no VM there uses them.`,
      });
      await client.deleteImage({ name });
      ctx.io.stdout(render(g.output, { data: () => ({ name, deleted: true }), table: () => `image ${name} deleted\n`, names: () => [name] }));
    });
}
