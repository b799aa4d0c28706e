// npm run bench:vmm — live-update blackout against guest RAM size, in exec and transfer modes, beside a copy-based
// baseline (save guest RAM to a file, load it into fresh memory) and bare Node start-up, all measured in the same run.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mount } from '../lib/fs/mount';
import { scratchDirectory } from '../lib/scratch';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB } from '../lib/units';
import { runUpdates, type UpdateMode } from '../lib/vmm/launch';
import { kvmUnavailableReason } from '../lib/vmm/machine';
import { NO_REHEARSAL_ENV } from '../lib/vmm/update-common';
import { childEnv, quickMode, repoRoot, reserveForBench, runsArg, stats, type Stats, writeResults } from './common';

const updates = Math.max(5, runsArg(7));
const sizes = quickMode ? [256 * MiB] : [256 * MiB, GiB, 2 * GiB, 4 * GiB];
const noKvm = kvmUnavailableReason();
if (noKvm) {
  process.stderr.write(`bench:vmm needs /dev/kvm: ${noKvm}\n`);
  process.exit(3);
}

/** One run's updates: blackouts, the breakdown of each, and what each did before the pause (outside the blackout). */
interface MeasuredUpdates {
  blackouts: number[];
  breakdowns: Array<Record<string, number>>;
  beforePause: Array<Record<string, number>>;
}

function measureUpdates(
  mode: UpdateMode,
  poolPath: string,
  ramBytes: number,
  extraEnv: NodeJS.ProcessEnv = {},
  vcpus = 1,
): MeasuredUpdates {
  // The guest runs without end (2^40 steps); the runner stops it after the last update.
  const run = runUpdates(
    { mode, poolPath, ramBytes, steps: 2 ** 40, seed: 1, updates, maxDelayMs: 200, vcpus },
    { env: { ...childEnv, GUESTMEMFS_UPDATE_STOP_AFTER: '1', ...extraEnv } },
  );
  if (run.status !== 0) throw new Error(`${mode} run at ${formatSize(ramBytes)} failed: ${run.stderr}`);
  const done = run.events.at(-1)!;
  const updated = run.events.filter((event) => event.event === 'update');
  if ([done, ...updated].some((event) => event.sameFrames === false))
    throw new Error(`${mode} run at ${formatSize(ramBytes)}: guest RAM changed physical pages`);
  return {
    blackouts: updated.map((event) => event.blackoutMs as number),
    breakdowns: updated.map((event) => event.breakdown as Record<string, number>),
    beforePause: updated.map((event) => event.beforePause as Record<string, number>),
  };
}

/** The baseline without preservation: copy guest RAM out to a snapshot file and back into freshly allocated memory. */
function copyBaseline(mapping: ReturnType<Pool['mapAll']>, ramBytes: number, scratchDir: string): { saveMs: number; loadMs: number } {
  const scratch = scratchDirectory(scratchDir, 'guestmemfs-bench-snapshot');
  const snapshot = path.join(scratch.path, 'ram');
  const fresh = Pool.create({ backend: 'memfd-4k', size: ramBytes, sparse: true });
  try {
    const chunk = 64 * MiB;
    const started = process.hrtime.bigint();
    const fd = fs.openSync(snapshot, 'wx', 0o600);
    for (let offset = 0; offset < ramBytes; offset += chunk) fs.writeSync(fd, mapping.bytes(offset, Math.min(chunk, ramBytes - offset)));
    fs.closeSync(fd);
    const saved = process.hrtime.bigint();
    const target = fresh.mapAll({ populate: true });
    const input = fs.openSync(snapshot, 'r');
    for (let offset = 0; offset < ramBytes; offset += chunk)
      fs.readSync(input, target.bytes(offset, Math.min(chunk, ramBytes - offset)), 0, Math.min(chunk, ramBytes - offset), offset);
    fs.closeSync(input);
    const loaded = process.hrtime.bigint();
    target.unmap();
    return { saveMs: Number(saved - started) / 1e6, loadMs: Number(loaded - saved) / 1e6 };
  } finally {
    scratch.remove();
    fresh.close();
  }
}

function nodeStartup(): Stats {
  const samples: number[] = [];
  for (let run = 0; run < 7; run++) {
    const started = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0'], { env: childEnv });
    samples.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return stats(samples);
}

/**
 * The floor of an exec-mode update here for any VMM on Node, with none of guestmemfs's code (bench/exec-floor.ts):
 * from closing the VM to the new process's first line, and to its VM being ready over the same guest RAM.
 */
function execFloor(poolPath: string, ramBytes: number): { startupMs: Stats; kvmReadyMs: Stats } {
  const samples = Array.from({ length: updates }, () => {
    const run = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'bench', 'exec-floor.js'), 'before', poolPath, String(ramBytes)], {
      encoding: 'utf8',
      env: childEnv,
    });
    if (run.status !== 0) throw new Error(`exec floor at ${formatSize(ramBytes)} failed: ${run.stderr}`);
    return JSON.parse(run.stdout) as { startupMs: number; kvmReadyMs: number };
  });
  return { startupMs: stats(samples.map((sample) => sample.startupMs)), kvmReadyMs: stats(samples.map((sample) => sample.kvmReadyMs)) };
}

const pageSize = 2 * MiB;
const largest = sizes.at(-1)!;
const reservation = reserveForBench(pageSize, (largest + 128 * MiB) / pageSize);
const results: Array<Record<string, unknown>> = [];
try {
  const startup = nodeStartup();
  for (const ramBytes of sizes) {
    const poolPath = path.join(reservation.mountpoint!, 'bench-vmm');
    Pool.create({ backend: 'hugetlbfs', path: poolPath, size: ramBytes + 64 * MiB }).close();
    try {
      const exec = measureUpdates('exec', poolPath, ramBytes);
      const transfer = measureUpdates('transfer', poolPath, ramBytes);
      // What rehearsing the update path buys: the same transfer with its code run cold inside the blackout.
      const coldTransfer =
        ramBytes === largest && !quickMode ? measureUpdates('transfer', poolPath, ramBytes, { [NO_REHEARSAL_ENV]: '1' }) : undefined;
      const floor = ramBytes === largest ? execFloor(poolPath, ramBytes) : undefined;
      // An SMP guest (a vCPU for each of this machine's CPUs, at most 2), at the largest size: all vCPUs cross together.
      const smp =
        ramBytes === largest
          ? { transfer: measureUpdates('transfer', poolPath, ramBytes, {}, 2), exec: measureUpdates('exec', poolPath, ramBytes, {}, 2) }
          : undefined;
      // The copy baseline reads the same guest RAM file the VMM used, found through a read-only view.
      const pool = Pool.open(poolPath);
      const view = mount(pool, { readOnly: true });
      const mapping = pool.map(view.extents('/vm0/ram'), { populate: false, writable: false });
      view.unmount();
      const copies = [
        copyBaseline(mapping, ramBytes, '/dev/shm'),
        copyBaseline(mapping, ramBytes, '/dev/shm'),
        copyBaseline(mapping, ramBytes, '/dev/shm'),
      ];
      mapping.unmap();
      pool.close();
      const copy = stats(copies.map((sample) => sample.saveMs + sample.loadMs));
      results.push({
        ramBytes,
        execMs: stats(exec.blackouts),
        execBreakdowns: exec.breakdowns,
        execBeforePause: exec.beforePause,
        transferMs: stats(transfer.blackouts),
        transferBreakdowns: transfer.breakdowns,
        transferBeforePause: transfer.beforePause,
        ...(coldTransfer
          ? {
              transferColdMs: stats(coldTransfer.blackouts),
              transferColdBreakdowns: coldTransfer.breakdowns,
              transferColdBeforePause: coldTransfer.beforePause,
            }
          : {}),
        ...(floor ? { execFloorStartupMs: floor.startupMs, execFloorKvmReadyMs: floor.kvmReadyMs } : {}),
        ...(smp
          ? {
              smp: {
                vcpus: 2,
                transferMs: stats(smp.transfer.blackouts),
                transferBreakdowns: smp.transfer.breakdowns,
                execMs: stats(smp.exec.blackouts),
                execBreakdowns: smp.exec.breakdowns,
              },
            }
          : {}),
        copyBaselineMs: copy,
        copySamples: copies,
        ratios: {
          transferVsCopy: stats(transfer.blackouts).median / copy.median,
          execVsCopy: stats(exec.blackouts).median / copy.median,
          execMinusNodeStartupMs: stats(exec.blackouts).median - startup.median,
        },
      });
      process.stdout.write(
        `${formatSize(ramBytes).padStart(8)}: exec ${stats(exec.blackouts).median.toFixed(1)} ms, ` +
          `transfer ${stats(transfer.blackouts).median.toFixed(1)} ms` +
          `${coldTransfer ? ` (not rehearsed: ${stats(coldTransfer.blackouts).median.toFixed(1)} ms)` : ''}, copy save+load ` +
          `${copy.median.toFixed(0)} ms` +
          `${floor ? `, exec floor ${floor.kvmReadyMs.median.toFixed(1)} ms (first line ${floor.startupMs.median.toFixed(1)} ms)` : ''}` +
          `${smp ? `; 2 vCPUs: transfer ${stats(smp.transfer.blackouts).median.toFixed(2)} ms, ` : ''}` +
          `${smp ? `exec ${stats(smp.exec.blackouts).median.toFixed(1)} ms` : ''}\n`,
      );
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  }
  const file = writeResults(
    'vmm',
    {
      updatesPerRun: updates,
      nodeStartupMs: startup,
      results,
      targets: { transferMsAt4GiB: '<= 2', transferMsAt4GiB2Vcpus: '<= 0.6', execMsAt4GiB: '<= node start-up + 5' },
      anchors: { firecrackerSnapshotRestore4GiBMs: 10.7, cloudHypervisorLocalUpgrade4GiBMs: 50, hyperFreshMs: 10 },
      environment: '/dev/kvm is kvm-pvm on this VM (no hardware virtualization); the guest is paused between updates by a signal',
    },
    quickMode,
  );
  process.stdout.write(`bare node start-up: ${startup.median.toFixed(1)} ms\nresults: ${path.relative(repoRoot, file)}\n`);
} finally {
  reservation.release();
}
