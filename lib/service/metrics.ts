// The mount service's Prometheus metrics (GET /metrics): operations and their latency, connections and refusals,
// and, read at each scrape, blocks, inodes, pins, quota use and handovers.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Filesystem } from '../fs/filesystem';

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly operations: Counter<'operation' | 'result'>;
  readonly latency: Histogram<'operation'>;
  readonly refused: Counter<'reason'>;
  readonly connections: Gauge;
  readonly handovers: Counter;
  readonly handoverPause: Gauge;

  constructor(fs: () => Filesystem | undefined) {
    const registers = [this.registry];
    this.operations = new Counter({
      name: 'guestmemfs_operations_total',
      help: 'Metadata operations served, by operation and result (ok, or the error code)',
      labelNames: ['operation', 'result'],
      registers,
    });
    this.latency = new Histogram({
      name: 'guestmemfs_operation_duration_seconds',
      help: 'Time to serve one operation, from its request to its response',
      labelNames: ['operation'],
      buckets: [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1],
      registers,
    });
    this.refused = new Counter({
      name: 'guestmemfs_requests_refused_total',
      help: 'Requests refused before reaching the filesystem, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.connections = new Gauge({ name: 'guestmemfs_connections', help: 'Client connections open now', registers });
    this.handovers = new Counter({
      name: 'guestmemfs_handovers_total',
      help: 'Live updates of the service (serialise, execve, restore) that this pool has been through since it was served',
      registers,
    });
    this.handoverPause = new Gauge({
      name: 'guestmemfs_handover_pause_seconds',
      help: 'Metadata pause of the latest live update of the service: last request before, to first one served after',
      registers,
    });
    const blocks = new Gauge({ name: 'guestmemfs_blocks', help: 'Data blocks by state', labelNames: ['state'], registers });
    const blockSize = new Gauge({ name: 'guestmemfs_block_size_bytes', help: 'Bytes per allocation block', registers });
    const inodes = new Gauge({ name: 'guestmemfs_inodes', help: 'Inodes by state', labelNames: ['state'], registers });
    const pins = new Gauge({
      name: 'guestmemfs_pins',
      help: 'Pinned ranges of the pool (each held by one open file description)',
      registers,
    });
    const pinnedBytes = new Gauge({ name: 'guestmemfs_pinned_bytes', help: 'Bytes of the pool under a pin', registers });
    const quotaLimit = new Gauge({ name: 'guestmemfs_quota_limit_bytes', help: 'Block limits', labelNames: ['kind', 'id'], registers });
    const quotaUsed = new Gauge({
      name: 'guestmemfs_quota_used_bytes',
      help: 'Usage held to each limit',
      labelNames: ['kind', 'id'],
      registers,
    });
    // Read at scrape time, from the filesystem itself, so that no operation pays for them.
    const collect = () => {
      const served = fs();
      if (!served?.mounted) return;
      const stat = served.statfs();
      blockSize.set(stat.blockSize);
      blocks.set({ state: 'used' }, stat.dataBlocks - stat.freeBlocks);
      blocks.set({ state: 'free' }, stat.freeBlocks);
      blocks.set({ state: 'dirty_free' }, stat.dirtyFreeBlocks);
      inodes.set({ state: 'used' }, stat.totalInodes - stat.freeInodes);
      inodes.set({ state: 'free' }, stat.freeInodes);
      const holders = served.pins();
      pins.set(holders.length);
      pinnedBytes.set(holders.reduce((sum, holder) => sum + (holder.length || stat.blockSize * stat.totalBlocks - holder.offset), 0));
      quotaLimit.reset();
      quotaUsed.reset();
      for (const quota of served.quotas()) {
        quotaLimit.set({ kind: quota.kind, id: String(quota.id) }, quota.limitBytes);
        quotaUsed.set({ kind: quota.kind, id: String(quota.id) }, quota.usedBytes);
      }
    };
    this.#collect = collect;
  }

  readonly #collect: () => void;

  /** The text exposition of every metric, the filesystem's gauges read now. */
  async render(): Promise<string> {
    this.#collect();
    return this.registry.metrics();
  }
}
