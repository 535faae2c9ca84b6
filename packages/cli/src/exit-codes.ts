import { BerthError, ErrorCode } from "@berth/core";

/**
 * The exit status of every `berth` verb. Scripts may rely on these; they are listed in
 * `berth --help` and in the package README.
 */
export const ExitCode = {
  /** The verb did what it was asked. */
  Ok: 0,
  /** Any other error, e.g. an internal error in the controller. */
  Error: 1,
  /**
   * Invalid input: a bad flag or argument, caught locally before any call or by the controller; or
   * a destructive verb (`host confirm-down`, `host orphans delete`) without `--yes` and no terminal.
   */
  Usage: 2,
  /** The VM, host or group does not exist. */
  NotFound: 3,
  /** No host has room for the VM (RESOURCE_EXHAUSTED), or `berth plan`: not placeable. */
  NoCapacity: 4,
  /** No controller answered, none knows a leader, or a call's deadline passed. */
  Unavailable: 5,
  /**
   * The request conflicts with the cluster's state (already exists, failed precondition, lost
   * race); `migration abort --wait`: the migration completed before it could be rolled back.
   */
  Conflict: 6,
  /**
   * `--wait`: the VM reached phase FAILED for good: a permanent failure (not retried until
   * `berth vm retry`), or a failure nothing retries (a crashed domain).
   */
  VmFailed: 7,
  /** `--wait`: the wait timed out before the VM got where it was asked to go. */
  WaitTimeout: 8,
  /**
   * `vm create`, `vm migrate`: the outcome is unknown. A request was delivered (or may have been)
   * and no answer came before `--create-timeout` / `--migrate-timeout`, through every retry: the VM
   * (the migration) may exist. Not the same as 5, where no request was ever taken, so nothing was done.
   */
  OutcomeUnknown: 9,
  /**
   * `--wait`: a migration ended FAILED (`vm migrate`; `rebalance apply`: any of them): rolled back
   * or never started, the VM stays on its source host.
   */
  MigrationFailed: 10,
  /**
   * `host drain --wait`: the drain ended INCOMPLETE (its deadline passed with VMs left on the host,
   * `--on-deadline` applied to them) or was cancelled (`host uncordon`); the host stays cordoned.
   */
  DrainIncomplete: 11,
  /**
   * The controller refused who is asking: the certificate's role may not make the call
   * (PERMISSION_DENIED: a viewer asking to change something), or no accepted certificate was
   * presented (UNAUTHENTICATED). Nothing was changed.
   */
  Denied: 12,
} as const;
/** One of the values of {@link ExitCode}. */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The exit codes as shown at the end of `berth --help`. */
export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  any other error (e.g. an internal error in the controller)
  2  invalid input: a bad flag or argument, caught before any call or rejected by the
     controller (INVALID_ARGUMENT); a destructive verb without --yes and no terminal
  3  not found (NOT_FOUND)
  4  no host has room for the VM (RESOURCE_EXHAUSTED); berth plan: not placeable
  5  no controller reachable, no leader known, or a call's deadline passed
     (UNAVAILABLE, DEADLINE_EXCEEDED)
  6  conflicts with the cluster's state (ALREADY_EXISTS, FAILED_PRECONDITION, CONFLICT),
     e.g. deleting a group that has members; migration abort --wait: the migration
     completed before it could be rolled back
  7  --wait: the VM (with --count: any of them) failed for good: a permanent failure
     (retry it with berth vm retry NAME) or one nothing retries; a failure the controller
     retries is not final (progress is shown, the wait goes on)
  8  --wait: timed out waiting
  9  vm create, vm migrate: outcome unknown: a request was sent and no answer came
     before --create-timeout / --migrate-timeout (retried with the same request id); the VM
     (the migration) may exist: check with berth vm show NAME / berth migration show NAME
 10  --wait: a migration failed (vm migrate; rebalance apply: any of them); the VM stays
     on its source host
 11  host drain --wait: the drain ended INCOMPLETE (deadline passed with VMs left) or was
     cancelled; the host stays cordoned
 12  not allowed: this certificate's role may not do that (PERMISSION_DENIED; a viewer
     changing something), or no accepted certificate (UNAUTHENTICATED); nothing changed`;

/** An error the CLI reports as `error: <message>` on stderr before exiting with `exitCode`. */
export class CliError extends Error {
  readonly exitCode: ExitCode;

  constructor(message: string, exitCode: ExitCode, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

/** Bad local input, rejected before any call is made (exit code 2). */
export function usageError(message: string): CliError {
  return new CliError(message, ExitCode.Usage);
}

const exitCodeOfBerth: Record<ErrorCode, ExitCode> = {
  INVALID_ARGUMENT: ExitCode.Usage,
  NOT_FOUND: ExitCode.NotFound,
  ALREADY_EXISTS: ExitCode.Conflict,
  FAILED_PRECONDITION: ExitCode.Conflict,
  CONFLICT: ExitCode.Conflict,
  RESOURCE_EXHAUSTED: ExitCode.NoCapacity,
  NOT_LEADER: ExitCode.Unavailable,
  UNAVAILABLE: ExitCode.Unavailable,
  BUSY: ExitCode.Unavailable,
  DEADLINE_EXCEEDED: ExitCode.Unavailable,
  HYPERVISOR_UNAVAILABLE: ExitCode.Error,
  PERMISSION_DENIED: ExitCode.Denied,
  UNAUTHENTICATED: ExitCode.Denied,
  INTERNAL: ExitCode.Error,
};

/** The exit code for any error a verb may end with. */
export function exitCodeOf(error: unknown): ExitCode {
  if (error instanceof CliError) return error.exitCode;
  if (error instanceof BerthError) return exitCodeOfBerth[error.code] ?? ExitCode.Error;
  return ExitCode.Error;
}
