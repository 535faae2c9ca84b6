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

  it("ends nothing when nothing was drawn", () => {
    const io = recordingIo({}, 0, { stderrIsTerminal: true });
    new ProgressLine(io).end();
    expect(io.err).toBe("");
  });
});
