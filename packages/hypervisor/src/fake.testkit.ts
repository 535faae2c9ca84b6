// What the fake driver's focused test files share (fake-console, fake-images, fake-network,
// fake-volumes): opening a driver on a manual clock, and the typed error a call rejects with.
import { BerthError } from "@berth/core";
import { FakeDriver, type FakeDriverOptions } from "./fake-driver.js";
import { ManualClock } from "./fake-clock.js";

/**
 * Opens a fake driver in `stateDir` on a ManualClock (the options' own clock if one is given, else
 * one at 1,000,000 ms), and adds it to `opened` for the test's afterEach to close.
 */
export function openFakeOn(opened: FakeDriver[], stateDir: string, options: Partial<FakeDriverOptions> = {}): { d: FakeDriver; clock: ManualClock } {
  const clock = (options.clock as ManualClock | undefined) ?? new ManualClock(1_000_000);
  const d = new FakeDriver({ stateDir, ...options, clock });
  opened.push(d);
  return { d, clock };
}

/** The BerthError `p` rejects with; fails the test when it resolves or rejects with anything else. */
export async function failure(p: Promise<unknown>): Promise<BerthError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BerthError) return e;
    throw e;
  }
  throw new Error("expected a BerthError");
}
