import { BERTH_VERSION, BerthError } from "@berth/core";
import { Command, CommanderError, Option } from "commander";
import { CONTROLLER_ENV, DEFAULT_CONTROLLER, DEFAULT_TIMEOUT_MS } from "./client.js";
import { registerCertsCommands } from "./commands/certs.js";
import { registerClusterCommands } from "./commands/cluster.js";
import { registerConsoleCommand } from "./commands/console.js";
import { registerConfigCommands } from "./commands/config.js";
import { registerDevCommand } from "./commands/dev.js";
import { registerEventsCommand } from "./commands/events.js";
import { registerGroupCommands } from "./commands/group.js";
import { registerHostCommands } from "./commands/host.js";
import { registerImageCommands } from "./commands/image.js";
import { registerMigrationCommands } from "./commands/migration.js";
import { registerPlanCommand } from "./commands/plan.js";
import { registerRebalanceCommands } from "./commands/rebalance.js";
import { registerScaleGroupCommands } from "./commands/scalegroup.js";
import { registerVmCommands } from "./commands/vm.js";
import { registerVolumeCommands } from "./commands/volume.js";
import { CliContext, processIo, type Io } from "./context.js";
import { CliError, EXIT_CODES_HELP, ExitCode, exitCodeOf } from "./exit-codes.js";
import { registerCompletionCommand } from "./completion.js";
import { OUTPUT_FORMATS } from "./output.js";

/**
 * The `berth` command tree, writing through `ctx.io`. Commander never exits the process: errors
 * are thrown to {@link run}, which maps them to exit codes.
 */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command("berth")
    .description("Operate a Berth cluster: place VMs on hosts, inspect them, move them, run a local cluster.")
    .addOption(
      new Option(
        "--controller <host:port>",
        `controller address; a comma-separated list is tried in order, following the leader ` +
          `(default: $${CONTROLLER_ENV}, else ${DEFAULT_CONTROLLER})`,
      ),
    )
    .addOption(new Option("--timeout <seconds>", `deadline of each call (default: ${DEFAULT_TIMEOUT_MS / 1000})`))
    .addOption(
      new Option("-o, --output <format>", "output format: table, wide (more columns), json, yaml (the same object as json), name (one name a line)")
        .choices(OUTPUT_FORMATS)
        .default("table"),
    )
    .addOption(new Option("--tls-ca <file>", "the cluster's CA certificate (default: $BERTH_TLS_CA)"))
    .addOption(new Option("--tls-cert <file>", "your operator certificate, admin or viewer (default: $BERTH_TLS_CERT; 'berth certs issue operator')"))
    .addOption(new Option("--tls-key <file>", "its private key (default: $BERTH_TLS_KEY)"))
    .addOption(new Option("--insecure", "plaintext, for a controller run with --insecure (no identity is checked)"))
    .version(`berth ${BERTH_VERSION}`, "-V, --version", "print the version")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.io.stdout(s),
      writeErr: (s) => ctx.io.stderr(s),
    })
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError("(add --help for usage)")
    .addHelpText(
      "after",
      `
Examples:
  berth dev --agents 3                                   # a local cluster, in another terminal
  berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB --wait
  berth vm create web --count 3 --group web --vcpus 2 --memory 4GiB --disk 20GiB --wait
  berth image create jammy --source https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img
  berth vm create app-1 --vcpus 2 --memory 2GiB --disk 20GiB --image jammy --network default \\
      --ssh-key ~/.ssh/id_ed25519.pub --wait             # then: berth vm show app-1 (its address)
  berth volume create db-data --size 100GiB && berth volume attach db-data app-1
  berth vm retry web-1                                   # after fixing a permanent failure
  berth vm migrate web-1 --to host-3 --wait              # live-migrate it
  berth host drain host-1 --deadline 30m --wait          # move every running VM off host-1
  berth rebalance plan                                   # what would even out the hosts
  berth plan --vcpus 8 --memory 32GiB --disk 100GiB --all  # where would it go, and why
  berth group create web --policy anti-affinity
  berth config set --preset pack --cpu-ratio 4
  berth vm list -o json
  berth host orphans host-1
  berth cluster show
  berth events --follow                                  # what happens, as it happens
  berth --controller 10.0.0.1:7400,10.0.0.2:7400 host list
  berth certs init --dir ./pki                           # the CA and the controller's certificate

${EXIT_CODES_HELP}`,
    );
  registerVmCommands(program, ctx);
  registerConsoleCommand(program, ctx);
  registerPlanCommand(program, ctx);
  registerGroupCommands(program, ctx);
  registerImageCommands(program, ctx);
  registerVolumeCommands(program, ctx);
  registerScaleGroupCommands(program, ctx);
  registerHostCommands(program, ctx);
  registerMigrationCommands(program, ctx);
  registerRebalanceCommands(program, ctx);
  registerConfigCommands(program, ctx);
  registerClusterCommands(program, ctx);
  registerEventsCommand(program, ctx);
  registerDevCommand(program, ctx);
  registerCertsCommands(program, ctx);
  registerCompletionCommand(program, ctx);
  return program;
}

/**
 * Runs `berth` with `argv` (the arguments after the program name) and returns the exit code;
 * never calls `process.exit`. Errors are printed as `error: <message>` on stderr.
 */
export async function run(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const ctx = new CliContext(io);
  const program = buildProgram(ctx);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander printed its message (or the help) already.
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" ? ExitCode.Ok : ExitCode.Usage;
    }
    const message = e instanceof Error ? e.message : String(e);
    io.stderr(`error: ${message}\n`);
    // An error the CLI did not expect: BERTH_DEBUG=1 shows where it came from.
    const expected = e instanceof BerthError || e instanceof CliError;
    if (!expected && e instanceof Error && e.stack && io.env["BERTH_DEBUG"]) io.stderr(`${e.stack}\n`);
    return exitCodeOf(e);
  } finally {
    ctx.close();
  }
}
