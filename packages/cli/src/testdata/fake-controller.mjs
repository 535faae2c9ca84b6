// A stand-in for berth-controller in the `berth dev` tests: serves ClusterService.ListHosts
// (host-1..host-8, all READY; none with BERTH_TEST_NO_HOSTS=1) on --listen, logs a pino line,
// stops on SIGTERM. Writes its arguments next to its pid.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";

const listen = process.argv[process.argv.indexOf("--listen") + 1];
const pidDir = process.env.BERTH_TEST_PID_DIR;
if (pidDir) {
  writeFileSync(join(pidDir, "controller.pid"), String(process.pid));
  writeFileSync(join(pidDir, "controller.args"), JSON.stringify(process.argv.slice(2)));
}

// ListHostsResponse { hosts: [Host { id: "host-N", state: READY }] }, encoded by hand.
const host = (id) => Buffer.concat([Buffer.from([0x0a, id.length]), Buffer.from(id), Buffer.from([0x20, 0x01])]);
const hosts = Array.from({ length: 8 }, (_, i) => host(`host-${i + 1}`));
const response =
  process.env.BERTH_TEST_NO_HOSTS === "1"
    ? Buffer.alloc(0)
    : Buffer.concat(hosts.map((h) => Buffer.concat([Buffer.from([0x0a, h.length]), h])));
const identity = (b) => b;

const server = new Server();
server.addService(
  {
    listHosts: {
      path: "/berth.v1.ClusterService/ListHosts",
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  },
  { listHosts: (_call, callback) => callback(null, response) },
);
server.bindAsync(listen, ServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`cannot listen: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify({ level: 30, time: Date.now(), pid: process.pid, hostname: "h", msg: "controller serving", listen }) + "\n");
});
process.on("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});
