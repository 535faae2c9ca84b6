import type { ClientDuplexStream } from "@grpc/grpc-js";
import type { AgentMessage, ControllerMessage } from "@berth/api";

/**
 * Writes to the agent's stream honouring backpressure: while the stream is backed up, messages
 * wait in order for 'drain', except Reports and AgentHeartbeats, of which only the latest of each
 * kind is kept (a newer report supersedes an older one; one proof of life is as good as two).
 */
export class StreamWriter {
  private readonly queue: AgentMessage[] = [];
  private blocked = false;
  private closed = false;

  constructor(private readonly call: ClientDuplexStream<AgentMessage, ControllerMessage>) {
    call.on("drain", () => this.flush());
  }

  write(message: AgentMessage): void {
    if (this.closed) return;
    if (!this.blocked) {
      this.blocked = !this.call.write(message);
      return;
    }
    const kind = message.msg?.$case;
    if (kind === "report" || kind === "heartbeat") {
      const i = this.queue.findIndex((m) => m.msg?.$case === kind);
      if (i >= 0) this.queue.splice(i, 1);
    }
    this.queue.push(message);
  }

  get queued(): number {
    return this.queue.length;
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
  }

  private flush(): void {
    this.blocked = false;
    while (!this.closed && !this.blocked && this.queue.length > 0) {
      this.blocked = !this.call.write(this.queue.shift()!);
    }
  }
}
