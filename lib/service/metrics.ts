// The mount service's Prometheus metrics (GET /metrics, text exposition format 0.0.4): operations and their latency,
// connections and refusals, live updates, and, read at each scrape, blocks, inodes, pins and quota use.
//
// Written here rather than with prom-client: loading prom-client takes 60 ms, inside the metadata pause of every live
// update of the service, for the few counter, gauge and histogram shapes used here.
import type { Filesystem } from '../fs/filesystem';

type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Label sets seen before: an operation's labels are the same every time it is served. */
const labelTexts = new Map<string, string>();

function labelText(labels: Labels): string {
  let key = '';
  for (const name in labels) key += `${name}\u0000${labels[name]}\u0000`;
  let text = labelTexts.get(key);
  if (text === undefined) {
    text = renderLabels(labels);
    if (labelTexts.size < 10_000) labelTexts.set(key, text);
  }
  return text;
}

function renderLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? '' : `{${entries.map(([name, value]) => `${name}="${escapeLabel(value)}"`).join(',')}}`;
}

abstract class Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
  ) {}

  render(): string {
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${this.type}\n${this.samples().join('\n')}\n`;
  }

  protected abstract samples(): string[];
}

/** A counter or a gauge: one value per label set. */
class Values extends Metric {
  readonly #values = new Map<string, number>();

  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }

  dec(labels: Labels = {}): void {
    this.inc(labels, -1);
  }

  set(labels: Labels, value: number): void {
    this.#values.set(labelText(labels), value);
  }

  reset(): void {
    this.#values.clear();
  }

  protected samples(): string[] {
    if (this.#values.size === 0 && this.type !== 'gauge') return [`${this.name} 0`];
    return [...this.#values].map(([labels, value]) => `${this.name}${labels} ${value}`);
  }
}

class Histogram extends Metric {
  readonly #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(
    name: string,
    help: string,
    readonly buckets: readonly number[],
  ) {
    super(name, help, 'histogram');
  }

  observe(labels: Labels, value: number): void {
    const key = labelText(labels);
    let series = this.#series.get(key);
    if (!series) {
      series = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    for (let index = 0; index < this.buckets.length; index++) if (value <= this.buckets[index]!) series.counts[index]! += 1;
    series.sum += value;
    series.count += 1;
  }

  protected samples(): string[] {
    const lines: string[] = [];
    for (const { labels, counts, sum, count } of this.#series.values()) {
      this.buckets.forEach((bound, index) =>
        lines.push(`${this.name}_bucket${labelText({ ...labels, le: String(bound) })} ${counts[index]}`),
      );
      lines.push(`${this.name}_bucket${labelText({ ...labels, le: '+Inf' })} ${count}`);
      lines.push(`${this.name}_sum${labelText(labels)} ${sum}`, `${this.name}_count${labelText(labels)} ${count}`);
    }
    return lines;
  }
}

export class ServiceMetrics {
  readonly operations = new Values(
    'guestmemfs_operations_total',
    'Metadata operations served, by operation and result (ok, or the error code)',
    'counter',
  );
  readonly latency = new Histogram(
    'guestmemfs_operation_duration_seconds',
    'Time to serve one operation, from its request to its response',
    [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1],
  );
  readonly refused = new Values(
    'guestmemfs_requests_refused_total',
    'Requests refused before reaching the filesystem, by reason',
    'counter',
  );
  readonly connections = new Values('guestmemfs_connections', 'Client connections open now', 'gauge');
  readonly handovers = new Values(
    'guestmemfs_handovers_total',
    'Live updates of the service (serialise, execve, restore) since the pool was first served by it',
    'counter',
  );
  readonly handoverPause = new Values(
    'guestmemfs_handover_pause_seconds',
    'Metadata pause of the latest live update of the service: from the old one no longer serving to the new one serving',
    'gauge',
  );
  readonly #blocks = new Values('guestmemfs_blocks', 'Data blocks by state', 'gauge');
  readonly #blockSize = new Values('guestmemfs_block_size_bytes', 'Bytes per allocation block', 'gauge');
  readonly #poolBytes = new Values(
    'guestmemfs_pool_bytes',
    'Bytes the pool spans now (size) and may grow to (max_size): what a resize can take from the host reservation',
    'gauge',
  );
  readonly #largePages = new Values('guestmemfs_large_pages', "A hybrid pool's 1 GiB pages by state (free: wholly free)", 'gauge');
  readonly #largeFallbacks = new Values(
    'guestmemfs_large_page_fallbacks_total',
    'GiBs of files that got 2 MiB pages since mount because no 1 GiB page was free',
    'counter',
  );
  readonly #inodes = new Values('guestmemfs_inodes', 'Inodes by state', 'gauge');
  readonly #pins = new Values('guestmemfs_pins', 'Pinned ranges of the pool (each held by one open file description)', 'gauge');
  readonly #pinnedBytes = new Values('guestmemfs_pinned_bytes', 'Bytes of the pool under a pin', 'gauge');
  readonly #quotaLimit = new Values('guestmemfs_quota_limit_bytes', 'Block limits, by kind (uid or dir) and id', 'gauge');
  readonly #quotaUsed = new Values('guestmemfs_quota_used_bytes', 'Usage held to each limit', 'gauge');
  readonly #served: () => Filesystem | undefined;

  constructor(served: () => Filesystem | undefined) {
    this.#served = served;
    this.connections.set({}, 0);
  }

  /** The text exposition of every metric, the filesystem's gauges read now (so that no operation pays for them). */
  render(): string {
    const fs = this.#served();
    if (fs?.mounted) {
      const stat = fs.statfs();
      this.#blockSize.set({}, stat.blockSize);
      this.#poolBytes.set({ kind: 'size' }, stat.blockSize * stat.totalBlocks);
      this.#poolBytes.set({ kind: 'max_size' }, stat.blockSize * stat.maxBlocks);
      if (stat.largePages.total > 0) {
        this.#largePages.set({ state: 'used' }, stat.largePages.total - stat.largePages.free);
        this.#largePages.set({ state: 'free' }, stat.largePages.free);
        this.#largeFallbacks.set({}, stat.largeFallbacks);
      }
      this.#blocks.set({ state: 'used' }, stat.dataBlocks - stat.freeBlocks);
      this.#blocks.set({ state: 'free' }, stat.freeBlocks);
      this.#blocks.set({ state: 'dirty_free' }, stat.dirtyFreeBlocks);
      // Counted in "used" too (a quarantined block is never free): an alert on memory failing in a pool.
      this.#blocks.set({ state: 'quarantined' }, stat.quarantinedBlocks);
      this.#inodes.set({ state: 'used' }, stat.totalInodes - stat.freeInodes);
      this.#inodes.set({ state: 'free' }, stat.freeInodes);
      const holders = fs.pins();
      this.#pins.set({}, holders.length);
      const poolBytes = stat.blockSize * stat.totalBlocks;
      this.#pinnedBytes.set(
        {},
        holders.reduce((sum, holder) => sum + (holder.length || poolBytes - holder.offset), 0),
      );
      this.#quotaLimit.reset();
      this.#quotaUsed.reset();
      for (const quota of fs.quotas()) {
        this.#quotaLimit.set({ kind: quota.kind, id: String(quota.id) }, quota.limitBytes);
        this.#quotaUsed.set({ kind: quota.kind, id: String(quota.id) }, quota.usedBytes);
      }
    }
    return [
      this.operations,
      this.latency,
      this.refused,
      this.connections,
      this.handovers,
      this.handoverPause,
      this.#blocks,
      this.#blockSize,
      this.#poolBytes,
      this.#largePages,
      this.#largeFallbacks,
      this.#inodes,
      this.#pins,
      this.#pinnedBytes,
      this.#quotaLimit,
      this.#quotaUsed,
    ]
      .map((metric) => metric.render())
      .join('');
  }
}
