import type { LogLevel } from "../log.ts";

/** The resolved configuration: every default filled in, every path absolute. */
export interface NodeConfig {
  /** Absolute path of the config file, or undefined when running on the embedded default. */
  configFile?: string;
  storagePath: string;
  adminSocketPath: string;
  restApi: { host: string; port: number };
  /** Access control of the data API (rest_api), when configured. */
  restAccess?: RestAccessConfig;
  logLevel: LogLevel;
  maxBlobSize: number;
  /** Request body bytes held in memory across all requests at once (past it: 503). */
  maxBodyBytesInFlight: number;
  walCheckpoint: { thresholdBytes: number; intervalMs: number };
  /** db_page_size: the page size of a database created now; undefined: the engine's default. */
  dbPageSize?: number;
  checkpoint: CheckpointConfig;
  /** The admin socket's routes over HTTP(S) with bearer tokens (admin_api), when configured. */
  adminApi?: AdminApiConfig;
}

export interface RestAccessConfig {
  /** Lines "TOKEN SCOPE[,SCOPE]" (read, write, delete, metrics). */
  tokensFile?: string;
  anonymous: "none" | "read";
  tls?: { certFile: string; keyFile: string };
}

export interface AdminApiConfig {
  host: string;
  port: number;
  tokenFile: string;
  tls?: { certFile: string; keyFile: string };
}

export interface CheckpointConfig {
  dir: string;
  /** Which checkpoints the local store keeps (retention, or max_db_checkpoints as keep_last). */
  retention: RetentionRules;
  intervalMs: number;
  sync: boolean;
  maxBackgroundOperations: number;
  periodic: boolean;
  startupDelayMs: number;
  retryBackoffMs: number;
  taskTimeoutMs: number;
  compression: "none" | "zstd";
  maxWriteBytesPerSec: number;
  maxPacedWalBytes: number;
  remote?: RemoteConfig;
  walShipping: WalShippingConfig;
  /** Files carried with every checkpoint (absolute paths). */
  includeFiles: string[];
  /** The key file every store the node writes is encrypted with (store/crypto.ts). */
  keyFile?: string;
}

export interface WalShippingConfig {
  enabled: boolean;
  intervalMs: number;
  synchronous: boolean;
  synchronousTimeoutMs: number;
  remoteLagWarningMs: number;
}

export interface RemoteConfig {
  url: string;
  endpoint?: string;
  region?: string;
  /** Which checkpoints the remote keeps (remote.retention, or max_remote_checkpoints as keep_last). */
  retention: RetentionRules;
  retryBackoffMs: number;
  requestTimeoutMs: number;
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** Retention rules with restic's forget meaning (store/retention.ts applies them); 0 = rule off. */
export interface RetentionRules {
  last: number;
  hourly: number;
  daily: number;
  weekly: number;
  monthly: number;
}

/** The defaults operators rely on (the Walrus node's, where it has one). Paths that are not given derive from storage_path. */
export const DEFAULTS = {
  storagePath: "/opt/cairn/db",
  restApiAddress: "127.0.0.1:7420",
  logLevel: "info" as LogLevel,
  maxBlobSize: 64 * 1024 * 1024,
  maxBodyBytesInFlight: 256 * 1024 * 1024,
  walCheckpointThresholdBytes: 64 * 1024 * 1024,
  walCheckpointIntervalSecs: 30,
  maxCheckpoints: 3,
  intervalSecs: 86_400,
  sync: true,
  maxBackgroundOperations: 1,
  periodic: false,
  startupDelaySecs: 60,
  retryBackoffSecs: 300,
  taskTimeoutSecs: 3600,
  compression: "none" as const,
  maxWriteBytesPerSec: 0,
  maxPacedWalBytes: 1024 * 1024 * 1024,
  maxRemoteCheckpoints: 30,
  remoteRetryBackoffSecs: 60,
  remoteRequestTimeoutSecs: 30,
  walShippingIntervalMs: 1000,
  walShippingSynchronousTimeoutMs: 10_000,
  walShippingRemoteLagWarningSecs: 60,
} as const;

/** Longest path a Unix socket address can hold on Linux (sun_path is 108 bytes with the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** What `cairn run` uses without --config: everything under ./cairn-data. */
export const EMBEDDED_STORAGE_PATH = "cairn-data/db";
