// A stand-in for berth-agent in the `berth dev` tests: logs a pino line and a plain stderr line,
// writes its pid into --state-dir, runs until SIGTERM (or ignores it with BERTH_TEST_STUBBORN=1).
// With BERTH_TEST_REJECT=1 it logs what the real agent logs when the controller refuses it.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const arg = (name) => process.argv[process.argv.indexOf(name) + 1];
writeFileSync(join(arg("--state-dir"), "agent.pid"), String(process.pid));
process.stdout.write(
  JSON.stringify({ level: 30, time: Date.now(), pid: process.pid, hostname: "h", msg: "agent connected", hostId: arg("--host-id") }) + "\n",
);
process.stderr.write("plain stderr line\n");
if (process.env.BERTH_TEST_REJECT === "1") {
  process.stdout.write(
    JSON.stringify({
      level: 50,
      time: Date.now(),
      pid: process.pid,
      hostname: "h",
      controller: arg("--controller"),
      reason: "REJECT_REASON_FOREIGN_CLUSTER",
      message: "this agent belongs to cluster 1111; this is cluster 2222",
      msg: "controller rejected this agent",
    }) + "\n",
  );
}
setInterval(() => {}, 1000);
process.on("SIGTERM", () => {
  if (process.env.BERTH_TEST_STUBBORN !== "1") process.exit(0);
});
