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
