/**
 * The fake hypervisor's model of a live migration's transfer (pre-copy, as QEMU does it): pure
 * arithmetic, no clock, no files.
 *
 * Pass 1 copies the memory in use at the bandwidth; while a pass runs, the guest dirties memory at
 * its dirty rate (never more than the memory in use), and the next pass copies what the previous
 * one left dirty. Once what is dirty fits the downtime budget (bandwidth × max downtime), the guest
 * is paused and the remainder sent: the switchover. A dirty rate at or above the bandwidth never
 * converges, whatever the size — what is dirty never shrinks; a real QEMU would still switch over a
 * guest small enough to fit the budget whole, the fake does not, so that a test can stall any
 * migration with its dirty rate: passes go on until a timeout or an abort.
 */
import type { MigrationProgress } from "./driver.js";

const MIB = 1024 * 1024;

/**
 * Passes beyond which a migration still not converging is treated as never converging (a dirty
 * rate just under the bandwidth converges in theory after very many passes).
 */
export const FAKE_MIGRATION_MAX_PASSES = 100_000;

/** The inputs of a fake migration, fixed when it starts. */
export interface FakeMigrationModel {
  /** Memory to copy: the domain's memory in use when the migration starts, MiB (> 0). */
  totalMib: number;
  /** MiB/s (> 0). */
  bandwidthMibPerS: number;
  /** MiB/s the guest dirties (≥ 0). */
  dirtyRateMibPerS: number;
  /** How long the guest may be paused for the switchover, ms (≥ 0). */
  maxDowntimeMs: number;
}

/** One pre-copy pass. */
export interface FakeMigrationPass {
  /** 1 for the first full copy. */
  iteration: number;
  /** Since the migration started, ms. */
  startMs: number;
  durationMs: number;
  /** What the pass copies, MiB. */
  copyMib: number;
}

/** The schedule of a migration: its passes and, if it converges, its switchover. */
export interface FakeMigrationPlan {
  readonly model: FakeMigrationModel;
  /** The passes, in order; when it does not converge, the first passes (the last one repeats). */
  readonly passes: readonly FakeMigrationPass[];
  /** Whether it converges: then the switchover starts when the last pass ends. */
  readonly converges: boolean;
  /** Pre-copy's end (switchover's start), ms since the start; Infinity when it does not converge. */
  readonly switchoverAtMs: number;
  /** What the switchover sends with the guest paused, MiB (≤ the downtime budget). */
  readonly switchoverMib: number;
  /** When the transfer is complete, ms since the start; Infinity when it does not converge. */
  readonly completeAtMs: number;
}

/** The schedule of a migration. Pure; the inputs are assumed valid (the driver checks its options). */
export function planFakeMigration(model: FakeMigrationModel): FakeMigrationPlan {
  const { totalMib: total, bandwidthMibPerS: bw, dirtyRateMibPerS: dirty, maxDowntimeMs } = model;
  const budget = (bw * maxDowntimeMs) / 1000;
  const passes: FakeMigrationPass[] = [];
  let copy = total;
  let at = 0;
  for (let iteration = 1; iteration <= FAKE_MIGRATION_MAX_PASSES; iteration++) {
    const durationMs = (copy / bw) * 1000;
    passes.push({ iteration, startMs: at, durationMs, copyMib: copy });
    at += durationMs;
    const left = Math.min(total, (dirty * durationMs) / 1000);
    if (left <= budget && dirty < bw) {
      return { model, passes, converges: true, switchoverAtMs: at, switchoverMib: left, completeAtMs: at + (left / bw) * 1000 };
    }
    // What is dirty no longer shrinks: every later pass is this one again.
    if (left >= copy) break;
    copy = left;
  }
  return { model, passes, converges: false, switchoverAtMs: Infinity, switchoverMib: 0, completeAtMs: Infinity };
}

/** The pass running at `elapsedMs` (the last one repeats when the plan does not converge); undefined during the switchover. */
export function passAt(plan: FakeMigrationPlan, elapsedMs: number): FakeMigrationPass | undefined {
  const { passes } = plan;
  const last = passes[passes.length - 1]!;
  if (elapsedMs < last.startMs + last.durationMs) {
    // Few passes in practice; the plan's are ordered.
    for (const p of passes) if (elapsedMs < p.startMs + p.durationMs) return p;
  }
  if (plan.converges) return undefined;
  // The last pass repeats, each copying as much, forever.
  const n = last.durationMs > 0 ? Math.floor((elapsedMs - last.startMs) / last.durationMs) : 0;
  return { iteration: last.iteration + n, startMs: last.startMs + n * last.durationMs, durationMs: last.durationMs, copyMib: last.copyMib };
}

/**
 * The progress at `elapsedMs` since the start, as libvirt's job info tells it: total = memory to
 * copy; processed = everything sent so far (it exceeds the total once passes resend dirty memory);
 * remaining = what is still dirty (the rest of the current pass plus what the guest dirtied since
 * it began, at most the total); the iteration of the current pass. Pure.
 */
export function fakeMigrationProgress(plan: FakeMigrationPlan, elapsedMs: number): MigrationProgress {
  const { totalMib: total, bandwidthMibPerS: bw, dirtyRateMibPerS: dirty } = plan.model;
  const t = Math.max(0, elapsedMs);
  const bytes = (mib: number): number => Math.round(mib * MIB);
  const result = (processedMib: number, remainingMib: number, iteration: number): MigrationProgress => ({
    dataTotalBytes: bytes(total),
    dataProcessedBytes: bytes(processedMib),
    dataRemainingBytes: bytes(Math.max(0, remainingMib)),
    dirtyRateBytesPerS: bytes(dirty),
    iteration,
  });
  const pass = passAt(plan, t);
  if (pass) {
    const into = Math.min(t - pass.startMs, pass.durationMs) / 1000;
    const sentBefore = sentBeforePass(plan, pass);
    const remaining = Math.min(total, pass.copyMib - bw * into + dirty * into);
    return result(sentBefore + bw * into, remaining, pass.iteration);
  }
  const last = plan.passes[plan.passes.length - 1]!;
  const precopy = plan.passes.reduce((sum, p) => sum + p.copyMib, 0);
  const into = Math.min(t - plan.switchoverAtMs, plan.completeAtMs - plan.switchoverAtMs) / 1000;
  const sent = Math.min(plan.switchoverMib, bw * into);
  return result(precopy + sent, plan.switchoverMib - sent, last.iteration);
}

/**
 * When the transfer has sent `fraction` × the memory to copy (ms since the start): where a kill
 * "during the transfer" strikes. Infinity if the transfer completes before (a fraction it never
 * reaches). Pure.
 */
export function fakeMigrationTimeToSend(plan: FakeMigrationPlan, fraction: number): number {
  const { totalMib: total, bandwidthMibPerS: bw } = plan.model;
  const ms = ((fraction * total) / bw) * 1000;
  // Data flows at the bandwidth from start to completion, switchover included.
  return ms <= plan.completeAtMs ? ms : Infinity;
}

function sentBeforePass(plan: FakeMigrationPlan, pass: FakeMigrationPass): number {
  let sum = 0;
  for (const p of plan.passes) {
    if (p.iteration >= pass.iteration) return sum;
    sum += p.copyMib;
  }
  // A repetition of the last pass: every pass of the plan, then the repetitions before this one.
  const last = plan.passes[plan.passes.length - 1]!;
  return sum + (pass.iteration - last.iteration - 1) * last.copyMib;
}
