import { randomUUID } from "node:crypto";
import { credentials, type ClientDuplexStream } from "@grpc/grpc-js";
import {
  AgentServiceClient,
  DomainState,
  RejectReason,
  type AgentMessage,
  type Command,
  type ControllerMessage,
  type Domain,
  type Hello,
  type Inventory,
} from "@berth/api";
import { deadlineIn, grpcClientOptions, Limits, ZERO, addResources } from "@berth/core";
import type { HypervisorDriver } from "@berth/hypervisor";
import type { Logger } from "pino";
import { saveAgentState } from "./agent-state.js";
import { CommandExecutor } from "./executor.js";
import type { ResolvedAgentOptions } from "./options.js";
import { StreamWriter } from "./stream-writer.js";
import { UsageMeter } from "./usage.js";

export const AGENT_VERSION = "0.1.0";

/** How a session with one controller ended, and what to do next. */
type SessionEnd =
  | { kind: "ended"; why: string; lastedMs: number; silent?: boolean }
  | { kind: "not-leader"; leader: string }
  | { kind: "rejected"; reason: RejectReason; message: string };

/** How long to wait for the channel to connect and for the controller's answer to Hello. */
const CONNECT_TIMEOUT_MS = 5_000;
const HELLO_ANSWER_TIMEOUT_MS = 5_000;
/**
 * A controller that went silent on us is not followed when a follower names it as leader for this
 * long: the follower's view lags until the silent leader's lease expires, and following it back
 * would cost a whole Hello timeout. Retrying the list with backoff finds the new leader sooner.
 */
const SILENT_CONTROLLER_SUSPICION_MS = 30_000;
/** How long after a hypervisor event the agent reports (events in between share the report). */
const EVENT_REPORT_DELAY_MS = 50;

/**
 * berth-agent's main loop: keep one stream open to the leading controller, say Hello with the full
 * inventory on every (re)connect (reconnect = full resync), report periodically, and execute the
 * commands that arrive. Reconnects back off exponentially with jitter and follow NotLeader.
 */
export class Agent {
  readonly bootId = randomUUID();
  private readonly executor: CommandExecutor;
  private readonly usage = new UsageMeter();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly options: ResolvedAgentOptions,
    private readonly driver: HypervisorDriver,
    initialEpoch: number,
    private readonly log: Logger,
  ) {
    this.executor = new CommandExecutor(driver, initialEpoch, (epoch) => {
      saveAgentState(options.stateDir, { lastLeaderEpoch: epoch }).catch((e: unknown) =>
        log.error({ err: e }, "could not save the leader epoch"),
      );
    });
  }

  /** Runs until `signal` aborts. Never throws for connection trouble; it retries. */
  async run(signal: AbortSignal): Promise<void> {
    let index = 0;
    let target = this.options.controllers[0]!;
    let failures = 0;
    const wentSilent = new Map<string, number>();
    while (!signal.aborted) {
      const end = await this.session(target, signal).catch(
        (e: unknown): SessionEnd => ({ kind: "ended", why: (e as Error).message, lastedMs: 0 }),
      );
      if (signal.aborted) break;
      if (end.kind === "ended" && end.silent) wentSilent.set(target, Date.now());
      if (end.kind === "not-leader" && end.leader && end.leader !== target) {
        const silentAgoMs = Date.now() - (wentSilent.get(end.leader) ?? -Infinity);
        if (silentAgoMs >= SILENT_CONTROLLER_SUSPICION_MS) {
          this.log.info({ from: target, to: end.leader }, "following the leader");
          target = end.leader;
          continue;
        }
        this.log.info({ from: target, named: end.leader, silentAgoMs }, "not following a leader that just went silent; retrying");
      }
      if (end.kind === "rejected") {
        this.log.error({ controller: target, reason: RejectReason[end.reason], message: end.message }, "controller rejected this agent");
        if (end.reason === RejectReason.REJECT_REASON_INVALID_HELLO) throw new Error(`controller rejected the agent: ${end.message}`);
      } else if (end.kind === "ended") {
        this.log.warn({ controller: target, why: end.why }, "stream to controller ended");
        if (end.lastedMs > 30_000) failures = 0;
      }
      failures++;
      // The next controller in the list, passing over those that just went silent while others remain.
      const list = this.options.controllers;
      const suspect = (a: string): boolean => Date.now() - (wentSilent.get(a) ?? -Infinity) < SILENT_CONTROLLER_SUSPICION_MS;
      for (let step = 1; step <= list.length; step++) {
        index = (index + 1) % list.length;
        if (!suspect(list[index]!) || step === list.length) break;
      }
      target = list[index]!;
      const cap = Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** Math.min(failures, 16));
      const waitMs = cap / 2 + Math.random() * (cap / 2);
      await sleep(waitMs, signal);
    }
  }

  private async session(address: string, signal: AbortSignal): Promise<SessionEnd> {
    const client = new AgentServiceClient(address, credentials.createInsecure(), grpcClientOptions());
    try {
      // grpc-js has no handshake timeout: bound the connect ourselves.
      await new Promise<void>((resolve, reject) =>
        client.waitForReady(deadlineIn(CONNECT_TIMEOUT_MS), (e) => (e ? reject(new Error(`cannot reach ${address}: ${e.message}`)) : resolve())),
      );
      return await this.stream(client.connect(), address, signal);
    } finally {
      client.close();
    }
  }

  private stream(call: ClientDuplexStream<AgentMessage, ControllerMessage>, address: string, signal: AbortSignal): Promise<SessionEnd> {
    const startedAt = Date.now();
    const writer = new StreamWriter(call);
    let reportTimer: NodeJS.Timeout | undefined;
    let welcomed = false;
    let lastInventory = "";

    return new Promise<SessionEnd>((resolve) => {
      let settled = false;
      const finish = (end: SessionEnd): void => {
        if (settled) return;
        settled = true;
        clearTimeout(answerTimer);
        clearInterval(reportTimer);
        clearTimeout(eventReport);
        unsubscribe();
        signal.removeEventListener("abort", onAbort);
        writer.close();
        call.cancel();
        resolve(end);
      };
      const onAbort = (): void => finish({ kind: "ended", why: "agent stopping", lastedMs: Date.now() - startedAt });
      signal.addEventListener("abort", onAbort);
      const answerTimer = setTimeout(() => finish({ kind: "ended", why: "no answer to Hello", lastedMs: 0 }), HELLO_ANSWER_TIMEOUT_MS);

      // A stream can end by error, end, or close; all mean "gone" and cleanup is idempotent.
      call.on("error", (e) => finish({ kind: "ended", why: e.message, lastedMs: Date.now() - startedAt }));
      call.on("end", () => finish({ kind: "ended", why: "controller ended the stream", lastedMs: Date.now() - startedAt }));
      call.on("close", () => finish({ kind: "ended", why: "stream closed", lastedMs: Date.now() - startedAt }));

      // The controller answers every Report with a Heartbeat; silence means a dead or frozen
      // controller behind a live connection, which keepalive alone would notice only much later.
      let lastHeardMs = Date.now();
      let silenceLimitMs = Infinity;
      let resultsSent = 0;
      // One report at a time (periodic and event-driven ones would otherwise cross, an older read
      // arriving after a newer one); a report asked for meanwhile runs once the current one ends.
      let reporting = false;
      let reportAgain = false;
      const reportOnce = (): void => {
        if (reporting) {
          reportAgain = true;
          return;
        }
        reporting = true;
        void report()
          .catch((e: unknown) => this.log.warn({ err: e }, "could not read the hypervisor for a report"))
          .finally(() => {
            reporting = false;
            if (reportAgain && !settled) {
              reportAgain = false;
              reportOnce();
            }
          });
      };
      const report = async (): Promise<void> => {
        let seen = resultsSent;
        // The inventory read is the health check too; the probe is asked only when it fails, for
        // why. An unreadable hypervisor is reported as such, never as an empty inventory: the
        // controller would take that for domains that vanished.
        let domains: Domain[] | undefined;
        let listError: unknown;
        try {
          domains = await this.driver.list();
        } catch (e) {
          listError = e;
        }
        if (!domains) {
          const health = await this.driver.health();
          const message = health.available ? `the hypervisor answers but its domains cannot be listed: ${listError instanceof Error ? listError.message : String(listError)}` : health.message;
          if (!settled) writer.write({ msg: { $case: "report", value: { usage: undefined, inventory: undefined, hypervisor: { available: false, message: message.slice(0, Limits.maxFactLength) } } } });
          return;
        }
        const hypervisor = { available: true, message: "" };
        // Usage from the hypervisor's counters; without them, what the running domains were given.
        const stats = await this.driver.statsAll().catch(() => undefined);
        // A command result sent while we read may be newer than what we read, and an inventory
        // arriving after it would set the controller back (a VM just started shown stopped until
        // the next report): read again, and if results keep coming, send no inventory this time.
        for (let attempt = 0; resultsSent !== seen && attempt < 2 && domains; attempt++) {
          seen = resultsSent;
          domains = await this.driver.list().catch(() => undefined);
        }
        if (settled) return;
        if (!domains || resultsSent !== seen) {
          writer.write({ msg: { $case: "report", value: { usage: undefined, inventory: undefined, hypervisor } } });
          return;
        }
        const usage = stats ? this.usage.observe(domains, stats, Date.now()) : usageOf(domains);
        const signature = inventorySignature(domains);
        const inventory: Inventory | undefined = signature === lastInventory ? undefined : { domains };
        lastInventory = signature;
        writer.write({ msg: { $case: "report", value: { usage, inventory, hypervisor } } });
      };
      // Reports are periodic, and also prompt after the hypervisor's own events (a crash, a
      // libvirtd restart), coalesced so that a burst of events costs one report.
      let eventReport: NodeJS.Timeout | undefined;
      const reportSoon = (): void => {
        if (!welcomed || eventReport || settled) return;
        eventReport = setTimeout(() => {
          eventReport = undefined;
          reportOnce();
        }, EVENT_REPORT_DELAY_MS);
      };
      const unsubscribe = this.driver.subscribe((event) => {
        if (event.type === "health") {
          this.log[event.health.available ? "info" : "warn"]({ available: event.health.available, message: event.health.message || undefined }, "hypervisor availability changed");
        } else {
          this.log.debug({ vmId: event.vmId, kind: event.kind }, "domain event");
        }
        reportSoon();
      });

      call.on("data", (message: ControllerMessage) => {
        lastHeardMs = Date.now();
        const msg = message.msg;
        if (!msg) return;
        switch (msg.$case) {
          case "welcome": {
            clearTimeout(answerTimer);
            welcomed = true;
            this.executor.observeEpoch(msg.value.leaderEpoch);
            const interval = Math.max(100, msg.value.reportIntervalMs || 2_000);
            silenceLimitMs = interval * 3 + 1_000;
            this.log.info({ controller: address, epoch: msg.value.leaderEpoch, controllerId: msg.value.controllerId }, "connected");
            reportTimer = setInterval(() => {
              // Checked here, not in the report: a report stuck on a slow hypervisor must not
              // keep the agent on a dead controller.
              if (Date.now() - lastHeardMs > silenceLimitMs) {
                finish({ kind: "ended", why: `controller silent for ${Date.now() - lastHeardMs} ms`, lastedMs: Date.now() - startedAt, silent: true });
                return;
              }
              reportOnce();
            }, interval);
            break;
          }
          case "notLeader":
            finish({ kind: "not-leader", leader: msg.value.leaderAddress });
            break;
          case "reject":
            finish({ kind: "rejected", reason: msg.value.reason, message: msg.value.message });
            break;
          case "heartbeat":
            break;
          case "command":
            if (!welcomed) return;
            void this.limit(() => this.handleCommand(msg.value)).then((result) => {
              if (settled) return;
              resultsSent++;
              writer.write({ msg: { $case: "result", value: result } });
            });
            break;
        }
      });

      void this.hello().then(
        (hello) => {
          lastInventory = inventorySignature(hello.inventory?.domains ?? []);
          writer.write({ msg: { $case: "hello", value: hello } });
        },
        (e: unknown) => finish({ kind: "ended", why: `hypervisor unreadable: ${(e as Error).message}`, lastedMs: 0 }),
      );
    });
  }

  private async hello(): Promise<Hello> {
    const [facts, domains] = await Promise.all([this.driver.hostFacts(), this.driver.list()]);
    return {
      hostId: this.options.hostId,
      bootId: this.bootId,
      capacity: facts.capacity,
      labels: this.options.labels,
      inventory: { domains },
      agentVersion: AGENT_VERSION,
      driver: facts.driver,
      lastLeaderEpoch: this.executor.leaderEpoch,
      allocationRatio: this.options.allocationRatio,
      reserved: this.options.reserved,
      facts: {
        cpuModel: facts.cpuModel.slice(0, Limits.maxFactLength),
        hypervisorVersion: facts.hypervisorVersion.slice(0, Limits.maxFactLength),
        numaCells: facts.numaCells.slice(0, Limits.maxNumaCells),
      },
      hypervisor: { available: true, message: "" },
      clusterId: "",
    };
  }

  private async handleCommand(command: Command) {
    const result = await this.executor.execute(command);
    const log = result.ok ? this.log.debug.bind(this.log) : this.log.warn.bind(this.log);
    log({ vmId: command.vmId, generation: command.generation, action: command.action?.$case, ok: result.ok, error: result.errorMessage || undefined }, "command applied");
    return result;
  }

  /** Bounds the commands running at once. */
  private async limit<T>(fn: () => Promise<T>): Promise<T> {
    while (this.running >= this.options.maxConcurrentCommands) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

function inventorySignature(domains: readonly Domain[]): string {
  return domains
    .map((d) => `${d.vmId}:${d.state}:${d.generation}`)
    .sort()
    .join(",");
}

/** What the running domains were given: the usage to report when the hypervisor gives no counters. */
function usageOf(domains: readonly Domain[]) {
  return domains
    .filter((d) => d.state === DomainState.DOMAIN_STATE_RUNNING && d.resources)
    .reduce((sum, d) => addResources(sum, d.resources!), { ...ZERO });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
