import { describe, expect, it } from "vitest";
import { ProgressLine } from "./progress.js";
import { recordingIo } from "./stub-server.testkit.js";

describe("ProgressLine", () => {
  it("on a terminal: redraws the line in place when it changes, ends it with a newline", () => {
    const io = recordingIo({}, 0, { stderrIsTerminal: true });
    const line = new ProgressLine(io);
    line.update("a 10%", "a");
    line.update("a 10%", "a");
    line.update("a 11%", "a");
    line.end();
    expect(io.err).toBe("\r\u001b[2Ka 10%\r\u001b[2Ka 11%\n");
  });

  it("elsewhere: a plain line when the step changes, nothing to end", () => {
    const io = recordingIo({}, 0, { stderrIsTerminal: false });
    const line = new ProgressLine(io);
    line.update("a 10%", "a");
    line.update("a 11%", "a");
    line.update("b 12%", "b");
    line.end();
    expect(io.err).toBe("a 10%\nb 12%\n");
  });

  it("elsewhere, with plainIntervalMs: at most a line per interval; the last one held is written at the end", () => {
    const io = recordingIo({}, 0, { stderrIsTerminal: false });
    let now = 0;
    io.now = () => now;
    const line = new ProgressLine(io, { plainIntervalMs: 2000 });
    line.update("1/50 RUNNING");
    now = 500;
    line.update("2/50 RUNNING"); // held: too soon
    line.update("3/50 RUNNING"); // held, replacing 2/50
    now = 2500;
    line.update("4/50 RUNNING"); // written: the interval has passed
    now = 2600;
    line.update("5/50 RUNNING");
    line.end();
    expect(io.err).toBe("1/50 RUNNING\n4/50 RUNNING\n5/50 RUNNING\n");
  });

  it("ends nothing when nothing was drawn", () => {
    const io = recordingIo({}, 0, { stderrIsTerminal: true });
    new ProgressLine(io).end();
    expect(io.err).toBe("");
  });
});
