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
  /** Exec mode: loading the VMM, mounting and adopting the guest the launcher resumed (outside the blackout). */
  afterResume: Array<Record<string, number>>;
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
    afterResume: updated.flatMap((event) => (event.afterResume ? [event.afterResume as Record<string, number>] : [])),
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
 * The floor of an exec-mode update of a running guest here for any VMM on Node (bench/exec-floor.ts): from the first
 * vCPU's stop, through closing the VM and execve, to the new process's first line, its VM ready over the same guest
 * RAM, and every vCPU loaded and in KVM_RUN, with none of guestmemfs's code in the new process.
 */
function execFloor(poolPath: string, ramBytes: number, vcpus: number): FloorSample[] {
  return Array.from({ length: updates }, () => {
    const program = path.join(repoRoot, 'dist', 'bench', 'exec-floor.js');
    const run = spawnSync(process.execPath, [program, 'before', poolPath, String(vcpus)], { encoding: 'utf8', env: childEnv });
    if (run.status !== 0) throw new Error(`exec floor at ${formatSize(ramBytes)} failed: ${run.stderr}`);
    return JSON.parse(run.stdout) as FloorSample;
  });
}

/** One floor update: from the first vCPU's stop to the new process's first line, its VM ready, its vCPUs in KVM_RUN. */
interface FloorSample {
  startupMs: number;
  kvmReadyMs: number;
  runningMs: number;
}

/** Rounds of exec-mode updates, each followed by as many samples of the floor. */
const FLOOR_ROUNDS = quickMode ? 1 : 3;

/**
 * Exec-mode updates and their floor (with as many vCPUs), round by round in turn: this host's speed drifts by tens of
 * percent between minutes, and taking both in turn lets the drift hit both alike.
 */
function execBesideFloor(poolPath: string, ramBytes: number, vcpus: number): { exec: MeasuredUpdates; floor: ExecFloor } {
  const exec: MeasuredUpdates = { blackouts: [], breakdowns: [], beforePause: [], afterResume: [] };
  const floor: FloorSample[] = [];
  for (let round = 0; round < FLOOR_ROUNDS; round++) {
    const measured = measureUpdates('exec', poolPath, ramBytes, {}, vcpus);
    exec.blackouts.push(...measured.blackouts);
    exec.breakdowns.push(...measured.breakdowns);
    exec.beforePause.push(...measured.beforePause);
    exec.afterResume.push(...measured.afterResume);
    floor.push(...execFloor(poolPath, ramBytes, vcpus));
  }
  const of = (key: keyof FloorSample) => stats(floor.map((sample) => sample[key]));
  return { exec, floor: { startupMs: of('startupMs'), kvmReadyMs: of('kvmReadyMs'), runningMs: of('runningMs') } };
}

interface ExecFloor {
  startupMs: Stats;
  kvmReadyMs: Stats;
  /** The floor proper: an exec-mode update's blackout with nothing in it but what any VMM on Node must do. */
  runningMs: Stats;
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
      const besideFloor = ramBytes === largest ? execBesideFloor(poolPath, ramBytes, 1) : undefined;
      const exec = besideFloor?.exec ?? measureUpdates('exec', poolPath, ramBytes);
      const floor = besideFloor?.floor;
      const transfer = measureUpdates('transfer', poolPath, ramBytes);
      // What rehearsing the update path buys: the same transfer with its code run cold inside the blackout.
      const coldTransfer =
        ramBytes === largest && !quickMode ? measureUpdates('transfer', poolPath, ramBytes, { [NO_REHEARSAL_ENV]: '1' }) : undefined;
      // An SMP guest (a vCPU for each of this machine's CPUs, at most 2), at the largest size: all vCPUs cross together.
      const smp =
        ramBytes === largest
          ? { transfer: measureUpdates('transfer', poolPath, ramBytes, {}, 2), ...execBesideFloor(poolPath, ramBytes, 2) }
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
        execAfterResume: exec.afterResume,
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
        ...(floor ? { execFloorStartupMs: floor.startupMs, execFloorKvmReadyMs: floor.kvmReadyMs, execFloorMs: floor.runningMs } : {}),
        ...(smp
          ? {
              smp: {
                vcpus: 2,
                transferMs: stats(smp.transfer.blackouts),
                transferBreakdowns: smp.transfer.breakdowns,
                execMs: stats(smp.exec.blackouts),
                execBreakdowns: smp.exec.breakdowns,
                execFloorStartupMs: smp.floor.startupMs,
                execFloorKvmReadyMs: smp.floor.kvmReadyMs,
                execFloorMs: smp.floor.runningMs,
                execVsFloor: stats(smp.exec.blackouts).median / smp.floor.runningMs.median,
              },
            }
          : {}),
        copyBaselineMs: copy,
        copySamples: copies,
        ratios: {
          transferVsCopy: stats(transfer.blackouts).median / copy.median,
          execVsCopy: stats(exec.blackouts).median / copy.median,
          execMinusNodeStartupMs: stats(exec.blackouts).median - startup.median,
          ...(floor ? { execVsFloor: stats(exec.blackouts).median / floor.runningMs.median } : {}),
        },
      });
      process.stdout.write(
        `${formatSize(ramBytes).padStart(8)}: exec ${stats(exec.blackouts).median.toFixed(1)} ms, ` +
          `transfer ${stats(transfer.blackouts).median.toFixed(1)} ms` +
          `${coldTransfer ? ` (not rehearsed: ${stats(coldTransfer.blackouts).median.toFixed(1)} ms)` : ''}, copy save+load ` +
          `${copy.median.toFixed(0)} ms` +
          `${floor ? `, exec floor ${floor.runningMs.median.toFixed(1)} ms (first line ${floor.startupMs.median.toFixed(1)} ms)` : ''}` +
          `${smp ? `; 2 vCPUs: transfer ${stats(smp.transfer.blackouts).median.toFixed(2)} ms, ` : ''}` +
          `${smp ? `exec ${stats(smp.exec.blackouts).median.toFixed(1)} ms (floor ${smp.floor.runningMs.median.toFixed(1)} ms)` : ''}\n`,
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
      targets: { transferMsAt4GiB: '<= 2', transferMsAt4GiB2Vcpus: '<= 0.6', execVsFloorAt4GiB: '<= 1.15' },
      anchors: { firecrackerSnapshotRestore4GiBMs: 10.7, cloudHypervisorLocalUpgrade4GiBMs: 50, hyperFreshMs: 10 },
      environment: '/dev/kvm is kvm-pvm on this VM (no hardware virtualization); the guest is paused between updates by a signal',
    },
    quickMode,
  );
  process.stdout.write(`bare node start-up: ${startup.median.toFixed(1)} ms\nresults: ${path.relative(repoRoot, file)}\n`);
} finally {
  reservation.release();
}
