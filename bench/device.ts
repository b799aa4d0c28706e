// npm run bench:device — the demo device's DMA through live updates: records the backend wrote per millisecond in
// the 50 ms before each update's blackout (the baseline, measured in the same run), inside the blackout, and in the
// 50 ms after, and the longest run of milliseconds with no DMA around each update against the blackout itself.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mount } from '../lib/fs/mount';
import { Pool } from '../lib/pool/pool';
import { GiB, MiB } from '../lib/units';
import { deviceStarved, deviceThroughput } from '../lib/vmm/device';
import { runUpdates, type UpdateMode } from '../lib/vmm/launch';
import { kvmUnavailableReason } from '../lib/vmm/machine';
import { DEVICE_FILES } from '../lib/vmm/update-common';
import { childEnv, quickMode, repoRoot, reserveForBench, runsArg, stats, writeResults } from './common';

const updates = Math.max(3, runsArg(5));
const ramBytes = quickMode ? 256 * MiB : GiB;
/** Below what the guest's driver takes on this machine (about 12k records/s), so that its buffers stay posted. */
const RATE = 5_000;
const WINDOW_MS = 50;
const noKvm = kvmUnavailableReason();
if (noKvm) {
  process.stderr.write(`bench:device needs /dev/kvm: ${noKvm}\n`);
  process.exit(3);
}

interface UpdateDma {
  blackoutMs: number;
  /** Records per millisecond. */
  beforePerMs: number;
  duringPerMs: number;
  afterPerMs: number;
  /** The longest run of milliseconds without a record within WINDOW_MS of the blackout, and inside it. */
  longestGapMs: number;
  /** The same, counting only milliseconds in which the guest had buffers posted: the device's own gaps. */
  longestDeviceGapMs: number;
}

function measure(mode: UpdateMode, poolPath: string): { perUpdate: UpdateDma[]; timeline: number[] } {
  const run = runUpdates(
    {
      mode,
      poolPath,
      ramBytes,
      steps: 2 ** 40,
      seed: 3,
      updates,
      maxDelayMs: 300,
      vcpus: 2,
      device: { records: 2 ** 31, recordsPerSecond: RATE },
    },
    { env: { ...childEnv, GUESTMEMFS_UPDATE_STOP_AFTER: '1' } },
  );
  if (run.status !== 0) throw new Error(`${mode} run failed: ${run.stderr}`);
  const done = run.events.at(-1)!;
  const device = done.device as { startedNs: string; backendPid: number };
  const pool = Pool.open(poolPath);
  const view = mount(pool, { readOnly: true });
  const mapping = pool.map(view.extents(DEVICE_FILES.devicePath), { writable: false, populate: true });
  view.unmount();
  const buckets = Array.from(deviceThroughput(mapping));
  const starved = Array.from(deviceStarved(mapping));
  mapping.unmap();
  pool.close();
  const started = BigInt(device.startedNs);
  const rate = (from: number, to: number) => buckets.slice(from, to).reduce((sum, count) => sum + count, 0) / Math.max(1, to - from);
  let timeline: number[] = [];
  const perUpdate = run.events
    .filter((event) => event.event === 'update')
    .map((event, index) => {
      if ((event.device as { backendPid: number }).backendPid !== device.backendPid) throw new Error('the device backend was replaced');
      const [from, to] = (event.blackoutNs as string[]).map((ns) => Number(BigInt(ns) - started) / 1e6);
      const first = Math.floor(from!);
      const last = Math.ceil(to!);
      let gap = 0;
      let longest = 0;
      let deviceGap = 0;
      let longestDevice = 0;
      for (let ms = first - WINDOW_MS; ms < last + WINDOW_MS; ms++) {
        gap = buckets[ms] === 0 ? gap + 1 : 0;
        // A millisecond without DMA in which the backend found no buffer posted is the guest's wait, not the device's.
        deviceGap = buckets[ms] === 0 && starved[ms] === 0 ? deviceGap + 1 : 0;
        longest = Math.max(longest, gap);
        longestDevice = Math.max(longestDevice, deviceGap);
      }
      if (index === 0) timeline = buckets.slice(first - 2 * WINDOW_MS, last + 2 * WINDOW_MS);
      return {
        blackoutMs: event.blackoutMs as number,
        beforePerMs: rate(first - WINDOW_MS, first),
        duringPerMs: last - first > 2 ? rate(first + 1, last - 1) : rate(first, last),
        afterPerMs: rate(last, last + WINDOW_MS),
        longestGapMs: longest,
        longestDeviceGapMs: longestDevice,
      };
    });
  return { perUpdate, timeline };
}

const reservation = reserveForBench(2 * MiB, (ramBytes + 128 * MiB) / (2 * MiB));
try {
  const results: Record<string, unknown> = {};
  for (const mode of ['exec', 'transfer'] as const) {
    const poolPath = path.join(reservation.mountpoint!, 'bench-device');
    Pool.create({ backend: 'hugetlbfs', path: poolPath, size: ramBytes + 64 * MiB }).close();
    try {
      const { perUpdate, timeline } = measure(mode, poolPath);
      const summary = {
        blackoutMs: stats(perUpdate.map((update) => update.blackoutMs)),
        beforePerMs: stats(perUpdate.map((update) => update.beforePerMs)),
        duringPerMs: stats(perUpdate.map((update) => update.duringPerMs)),
        afterPerMs: stats(perUpdate.map((update) => update.afterPerMs)),
        longestGapMs: stats(perUpdate.map((update) => update.longestGapMs)),
        longestDeviceGapMs: stats(perUpdate.map((update) => update.longestDeviceGapMs)),
        perUpdate,
        timelineAroundFirstUpdate: timeline,
      };
      results[mode] = summary;
      process.stdout.write(
        `${mode}: blackout ${summary.blackoutMs.median.toFixed(2)} ms; DMA ${summary.beforePerMs.median.toFixed(2)} records/ms before, ` +
          `${summary.duringPerMs.median.toFixed(2)} during, ${summary.afterPerMs.median.toFixed(2)} after; longest gap ` +
          `${summary.longestGapMs.median} ms (${summary.longestDeviceGapMs.median} ms with buffers posted)\n`,
      );
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  }
  const file = writeResults(
    'device',
    {
      ramBytes,
      vcpus: 2,
      recordsPerSecond: RATE,
      updatesPerRun: updates,
      windowMs: WINDOW_MS,
      ...results,
      targets: { dmaGap: 'no gap in DMA beyond the blackout while the guest has buffers posted' },
      environment: 'a backend process writes 64-byte records at a fixed rate; the guest driver (vCPU 1) checks each; kvm-pvm',
    },
    quickMode,
  );
  process.stdout.write(`results: ${path.relative(repoRoot, file)}\n`);
} finally {
  reservation.release();
}
