export declare const etcdBinary: () => string;

export interface EtcdProcess {
  /** Client URL, e.g. http://127.0.0.1:40123. */
  endpoint: string;
  dataDir: string;
  pid: number | undefined;
  /** Stops etcd (SIGTERM, then SIGKILL) and removes its data directory. Idempotent. */
  stop(): Promise<void>;
}

export declare function spawnEtcd(options: {
  dataDir: string;
  name?: string;
  readyTimeoutMs?: number;
  attempts?: number;
  onRetry?: (error: Error, attempt: number) => void;
}): Promise<EtcdProcess>;

export interface EtcdClusterMember {
  name: string;
  /** Client URL of this member. */
  endpoint: string;
  dataDir: string;
  /** The running process's pid, undefined while the member is down. */
  readonly pid: number | undefined;
  /** Spawns the member (from its data directory when it has run before); does not wait. */
  start(): void;
  /** Waits until the member answers its health check. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Sends a signal (default SIGKILL); SIGKILL/SIGTERM resolve once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Kills the member if running, starts it again on the same ports and data, waits until healthy. */
  restart(timeoutMs?: number): Promise<void>;
  /** Stops the member for good (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

export interface EtcdClusterProcess {
  /** Every member's client URL. */
  endpoints: string[];
  members: EtcdClusterMember[];
  /** Stops every member and removes `baseDir`. Idempotent. */
  stop(): Promise<void>;
}

export declare function spawnEtcdCluster(options: {
  baseDir: string;
  size?: number;
  name?: string;
  readyTimeoutMs?: number;
  attempts?: number;
  onRetry?: (error: Error, attempt: number) => void;
}): Promise<EtcdClusterProcess>;
