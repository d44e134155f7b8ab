// Types for `rust-cluster/supervisor`: a supervised set of cluster workers.
import { EventEmitter } from 'events';
import type { Worker } from 'cluster';

export interface SupervisorOptions {
    /** The worker script (cluster's `exec`). */
    exec: string;
    /** Its arguments. Default []. */
    args?: string[];
    /** Node options for the workers. Default process.execArgv; the drain preload is added. */
    execArgv?: string[];
    cwd?: string;
    /** Added to process.env for each worker. */
    env?: NodeJS.ProcessEnv;
    silent?: boolean;
    /** Number of workers, or 'max' (one per available CPU). Default 'max'. */
    workers?: number | 'max';
    /** cluster.schedulingPolicy to use; only before cluster has been set up. */
    policy?: 'rr' | 'none' | 'reuseport';
    /** A worker is ready at its first 'listening', or when it sends 'ready'. Default 'listening'. */
    ready?: 'listening' | 'message';
    /** ms a new worker has to become ready. Default 30000. */
    readyTimeout?: number;
    /** ms a draining worker has before it is killed. Default 10000. */
    drainTimeout?: number;
    /** Workers a reload replaces at a time. Default 1. */
    reloadBatch?: number;
    /** Restart delay in ms: min, doubling per failure up to max; back to min once a worker stayed up `reset` ms. Default { min: 100, max: 15000, reset: 30000 }. */
    backoff?: { min?: number; max?: number; reset?: number };
    /** More unexpected exits than this within `restartWindow` stops respawning ('crashLoop'). Default 10. */
    maxRestarts?: number;
    /** ms. Default 60000. */
    restartWindow?: number;
    /** MB of RSS above which a worker is replaced (sampled every 500 ms, two samples in a row). Default null: no limit. */
    maxMemory?: number | null;
    /** Tell systemd about readiness, reloads and shutdown when NOTIFY_SOCKET is set. Default false. */
    notify?: boolean;
    /** Serve GET /ready and GET /live on this address for health checks (every interface unless a host is given). Default null. */
    probe?: { port: number; host?: string } | null;
    /** Serve Prometheus metrics at GET /metrics on this address (host default '127.0.0.1'). Default null. */
    metrics?: { port: number; host?: string } | null;
    /** Path of a unix socket (mode 0600) for `rust-cluster status|reload|scale|stop`. Default null. */
    control?: string | null;
    /** Emit 'stats' with stats() every this many ms. Default null: never (with metrics or control the figures are still sampled every second, for CPU %). */
    statsInterval?: number | null;
}

export type WorkerState = 'starting' | 'ready' | 'draining';

export interface WorkerStatus {
    id: number;
    pid: number | undefined;
    state: WorkerState;
    /** The reload count when the worker was started. */
    generation: number;
    /** Date.now() when it became ready, or null. */
    readySince: number | null;
}

export interface SlotStatus extends Partial<Omit<WorkerStatus, 'state'>> {
    slot: number;
    /** Respawns of this slot after unexpected exits. */
    restarts: number;
    /** 'waiting': respawn pending after a backoff; 'stopped': empty (crash loop or shutdown). */
    state: WorkerState | 'waiting' | 'stopped';
}

export interface SupervisorStatus {
    state: 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';
    /** Running, not stopping, and at least one worker ready. */
    ready: boolean;
    crashLoop: boolean;
    generation: number;
    workers: SlotStatus[];
    draining: WorkerStatus[];
}

/** One live worker's figures, read without involving it. Without the native core (`implementation: 'node'`) only rss and CPU are sampled (from /proc, where there is one); the rest is null. */
export interface WorkerStats {
    slot: number;
    id: number;
    pid: number | undefined;
    state: WorkerState;
    generation: number;
    /** Seconds since it was started. */
    uptime: number;
    /** Respawns of its slot after unexpected exits. */
    restarts: number;
    /** CPU used since the previous sample of this worker (each stats() call, 'stats' event or scrape samples; samples under 500 ms apart share a window), in % of one core. */
    cpuPercent: number | null;
    /** User and system CPU time used, in seconds. */
    cpuSeconds: number | null;
    /** Resident set size in bytes. */
    rss: number | null;
    /** Messages and bytes from the worker to the primary on its IPC channel, cluster's own included. */
    messagesIn: number | null;
    bytesIn: number | null;
    /** Messages and bytes from the primary to the worker. */
    messagesOut: number | null;
    bytesOut: number | null;
    /** Connections the primary handed to it (round-robin), and those it has not yet accepted. */
    handed: number | null;
    pending: number | null;
}

/** A server the workers share (Node's cluster key: address:port:addressType:fd[:index]). */
export interface ServerStats {
    key: string;
    /** Connections the primary accepted on it. */
    accepted: number;
    /** Accepted connections waiting for a worker with room. */
    queued: number;
}

export interface SupervisorStats extends Omit<SupervisorStatus, 'workers' | 'draining'> {
    /** Date.now() when sampled. */
    at: number;
    implementation: 'rust' | 'node';
    /** Every live worker (serving, starting or draining), by slot. */
    workers: WorkerStats[];
    /** Slots without a worker. */
    vacant: { slot: number; state: 'waiting' | 'stopped'; restarts: number }[];
    /** null without the native core. */
    servers: ServerStats[] | null;
}

export type SpawnReason = 'start' | 'respawn' | 'reload' | 'memory' | 'scale';
export type DrainReason = 'reload' | 'memory' | 'scale' | 'shutdown' | 'readyTimeout' | 'replacementFailed';

export interface ReloadError extends Error {
    code: 'ERR_RUST_CLUSTER_RELOAD_FAILED';
    /** Workers this reload had replaced before it was aborted. */
    replaced: number;
    cause: Error;
}

export declare class Supervisor extends EventEmitter {
    constructor(options: SupervisorOptions);
    readonly options: Readonly<SupervisorOptions>;
    readonly state: SupervisorStatus['state'];
    readonly crashLoop: boolean;
    /** Sets up cluster and starts the workers. */
    start(): this;
    /** Replaces every worker (a batch at a time); rejects with a ReloadError if a replacement fails, keeping the old workers. */
    reload(): Promise<{ replaced: number }>;
    /** Adds or drains workers. */
    scale(workers: number | 'max'): Promise<{ workers: number }>;
    /** Drains every worker; resolves once all have exited. `killed`: how many the drain timeout killed. */
    shutdown(): Promise<{ killed: number }>;
    /** Kills every worker now. */
    destroy(): Promise<{ killed: number }>;
    status(): SupervisorStatus;
    /** status() with each worker's figures. */
    stats(): SupervisorStats;

    on(event: 'spawn', listener: (worker: Worker, info: { slot: number; reason: SpawnReason }) => void): this;
    on(event: 'workerReady', listener: (worker: Worker, info: { slot: number }) => void): this;
    on(event: 'ready', listener: () => void): this;
    on(event: 'drain', listener: (worker: Worker, info: { slot: number; reason: DrainReason }) => void): this;
    on(event: 'exit', listener: (worker: Worker, code: number | null, signal: NodeJS.Signals | null, info: { slot: number; expected: boolean; killed: boolean }) => void): this;
    on(event: 'respawn', listener: (info: { slot: number; delay: number; failures: number }) => void): this;
    on(event: 'crashLoop', listener: (info: { exits: number; window: number }) => void): this;
    on(event: 'reloading', listener: (info: { generation: number }) => void): this;
    on(event: 'reloaded', listener: (info: { generation: number; replaced: number }) => void): this;
    on(event: 'reloadFailed', listener: (error: ReloadError) => void): this;
    on(event: 'memoryLimit', listener: (worker: Worker, info: { slot: number; rss: number; limit: number }) => void): this;
    on(event: 'stopping', listener: () => void): this;
    on(event: 'stopped', listener: (info: { killed: number }) => void): this;
    on(event: 'stats', listener: (stats: SupervisorStats) => void): this;
    on(event: 'warning' | 'error', listener: (error: Error) => void): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** Starts a supervised set of workers running `options.exec`. */
export declare function supervise(options: SupervisorOptions): Supervisor;
