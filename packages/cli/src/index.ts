// berth: the operator CLI and `berth dev`. The bin is ./main.ts; this index serves tests and tools.
export { buildProgram, run } from "./program.js";
export { CliContext, processIo, type Io, type GlobalOptions, type OutputFormat } from "./context.js";
export {
  ControllerClient,
  NoAnswerError,
  isUnanswered,
  CONTROLLER_ENV,
  DEFAULT_CONTROLLER,
  DEFAULT_TIMEOUT_MS,
  type CallOverrides,
  type ControllerClientOptions,
} from "./client.js";
export { CliError, EXIT_CODES_HELP, ExitCode, exitCodeOf, usageError } from "./exit-codes.js";
export {
  devBanner,
  devChildren,
  devHostId,
  parseDevOptions,
  runDev,
  DEFAULT_DEV_LISTEN,
  DEFAULT_DEV_STATE_DIR,
  DEFAULT_DEV_ETCD_STATE_DIR,
  notReadyReport,
  type DevFlags,
  type DevOptions,
  type DevRuntime,
  type EntryPoints,
} from "./commands/dev.js";
export { Supervisor, type ChildExit, type ChildSpec, type SupervisorOptions } from "./supervisor.js";
export { waitForVm, type VmObservation, type WaitOptions, type WaitResult } from "./wait.js";
export { backoffMs, isRetryable, retryUntilAnswered, type RetryOptions, type RetryOutcome } from "./retry.js";
export { confirmOrRefuse } from "./confirm.js";
