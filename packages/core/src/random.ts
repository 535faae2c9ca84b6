/**
 * mulberry32: a small, fast, well-mixed 32-bit pseudo-random generator, seeded, returning floats
 * in [0, 1). Deterministic: the same seed always gives the same sequence, on any machine — what
 * the scheduler's gang search, the seeded tests and the benchmarks' workloads need (never for
 * anything secret).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
