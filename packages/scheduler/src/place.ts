import type { Resources } from "@berth/api";
import { addResources, BerthError, ErrorCode, formatResources, invalidArgument, RESOURCE_FIELD, RESOURCE_NAMES } from "@berth/core";
import type { ResolvedSchedulerOptions } from "./options.js";
import { DEFAULT_PIPELINE, type Pipeline } from "./pipeline.js";
import type { PlacementContext } from "./stage.js";
import type { HostSnapshot, HostVerdict, PlacementDecision, PlacementRequest } from "./types.js";

/** Scores and totals are rounded to this many decimals, so that equal hosts tie exactly. */
const SCORE_DECIMALS = 9;
const round = (x: number): number => {
  const f = 10 ** SCORE_DECIMALS;
  return Math.round(x * f) / f;
};

/**
 * Chooses a host for one VM. Pure and synchronous: the same hosts (in any order), request and
 * options always give the same decision.
 *
 * Every host goes through the pipeline's filters in order until one fails. Each weigher scores the
 * hosts that passed; its raw scores are normalised to [0, 1] across them (all 1 when they are
 * equal) and a host's total is Σ wᵢ·gᵢ with the weights from `options`. The highest total wins;
 * ties go to the smallest host id. Scores and totals are rounded to 9 decimals, so equal hosts tie
 * exactly. `explanation` has a verdict for every host, sorted by host id.
 * When no host passes, `reasons` has one line per host: `<host-id>: <filter>: <reason>`.
 *
 * Throws BerthError INVALID_ARGUMENT for a request whose resources are not whole numbers ≥ 0, or
 * for duplicate host ids in `hosts`.
 */
export function placeVm(
  hosts: readonly HostSnapshot[],
  request: PlacementRequest,
  options: ResolvedSchedulerOptions,
  pipeline: Pipeline = DEFAULT_PIPELINE,
): PlacementDecision {
  checkRequest(request);
  const sorted = [...hosts].sort((a, b) => compareIds(a.id, b.id));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.id === sorted[i - 1]!.id) throw invalidArgument("hosts", `duplicate host id '${sorted[i]!.id}'`);
  }
  const ctx: PlacementContext = { request, options };

  // Filters: the first failure decides a host's verdict.
  const verdicts: HostVerdict[] = [];
  const candidates: HostSnapshot[] = [];
  for (const host of sorted) {
    let failed: HostVerdict | undefined;
    for (const f of pipeline.filters) {
      const r = f.filter(host, ctx);
      if (!r.pass) {
        failed = { hostId: host.id, passed: false, filter: f.name, reason: r.reason };
        break;
      }
    }
    if (failed) verdicts.push(failed);
    else candidates.push(host);
  }

  // Weighers: raw scores, normalised per weigher across the candidates, then weighted.
  const scores = candidates.map(() => ({}) as Record<string, number>);
  for (const w of pipeline.weighers) {
    const raw = candidates.map((h) => w.weigh(h, ctx));
    const normal = normalise(raw);
    normal.forEach((g, i) => (scores[i]![w.name] = round(g)));
  }
  let best: { hostId: string; total: number } | undefined;
  candidates.forEach((host, i) => {
    const s = scores[i]!;
    let total = 0;
    for (const w of pipeline.weighers) total += (options.weights[w.name] ?? 0) * (s[w.name] ?? 0);
    total = round(total);
    verdicts.push({ hostId: host.id, passed: true, scores: s, total });
    // Candidates are in id order, so a strict > keeps the smallest id among equal totals.
    if (!best || total > best.total) best = { hostId: host.id, total };
  });

  verdicts.sort((a, b) => compareIds(a.hostId, b.hostId));
  if (best) return { placed: true, hostId: best.hostId, score: best.total, explanation: verdicts };
  const reasons = verdicts.map((v) => (v.passed ? `${v.hostId}: passed` : `${v.hostId}: ${v.filter}: ${v.reason}`));
  return { placed: false, reasons, explanation: verdicts };
}

/**
 * One line for an unplaced decision, for logs and error messages:
 * `no host can take 'web-1' (2 vCPU, 4096 MiB, 20 GiB): 3 hosts rejected (capacity: 2, ready: 1)`.
 */
export function summarizeUnplaced(request: PlacementRequest, decision: PlacementDecision): string {
  const what = `no host can take '${request.name}' (${formatResources(request.resources)})`;
  if (decision.explanation.length === 0) return `${what}: there are no hosts`;
  const byFilter = new Map<string, number>();
  for (const v of decision.explanation) if (!v.passed) byFilter.set(v.filter, (byFilter.get(v.filter) ?? 0) + 1);
  const counts = [...byFilter]
    .sort(([a, m], [b, n]) => n - m || compareIds(a, b))
    .map(([f, n]) => `${f}: ${n}`)
    .join(", ");
  const n = decision.explanation.length;
  return `${what}: ${n} host${n === 1 ? "" : "s"} rejected (${counts})`;
}

/** The RESOURCE_EXHAUSTED error the API answers for an unplaced VM: the summary plus one reason per host. */
export function unplacedError(request: PlacementRequest, decision: PlacementDecision & { placed: false }): BerthError {
  return new BerthError(ErrorCode.ResourceExhausted, summarizeUnplaced(request, decision), { reasons: decision.reasons });
}

/** The snapshot of `host` after placing a VM of `resources` on it (a new object; `host` is unchanged). */
export function withPlacement(host: HostSnapshot, resources: Resources): HostSnapshot {
  return { ...host, allocated: addResources(host.allocated, resources), vmCount: host.vmCount + 1 };
}

/** Min-max normalisation to [0, 1]; all 1 when the values are (nearly) equal. */
function normalise(raw: readonly number[]): number[] {
  let min = Infinity;
  let max = -Infinity;
  for (const x of raw) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  const range = max - min;
  if (!(range > 1e-12)) return raw.map(() => 1);
  return raw.map((x) => (x - min) / range);
}

/** Code-unit order: stable across locales, unlike localeCompare. */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function checkRequest(request: PlacementRequest): void {
  const r = request.resources;
  for (const key of RESOURCE_NAMES) {
    const v: unknown = r?.[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw invalidArgument(`request.resources.${RESOURCE_FIELD[key]}`, `must be a whole number ≥ 0 (got ${String(v)})`);
    }
  }
}
