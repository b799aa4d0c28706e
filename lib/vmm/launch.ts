// How other programs (the CLI, the demo, the benchmark, the tests) start a live-update program and read its events:
// one place for the program's path, its argument order and its JSON-lines output.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../native';
import { runToEnd } from '../process';

export type UpdateMode = 'exec' | 'transfer';

/** What `<mode>-update.js boot` takes: the pool (reformatted), the guest and how many updates at most how far apart. */
export interface UpdateRun {
  mode: UpdateMode;
  poolPath: string;
  ramBytes: number;
  steps: number;
  /** The guest's seed (a bigint keeps seeds above 2^53 exact). */
  seed: number | bigint;
  updates: number;
  maxDelayMs: number;
  /** vCPUs of the guest (default 1). */
  vcpus?: number;
  /** The demo device: its driver (the last vCPU) takes this many records; its backend writes them at this rate. */
  device?: { records: number; recordsPerSecond: number };
}

/** One JSON line a live-update program printed (`boot`, `update`, `update-failed`, `successor-refused`, `done`…). */
export type UpdateEvent = Record<string, unknown>;

/** The full argv (node first) that boots the guest and live-updates it; compiled programs, also when run from sources. */
export function updateArgv(run: UpdateRun): string[] {
  // Exec mode starts through its launcher, which loads the bundled program with the previous process's code cache.
  const program = path.join(packageRoot(), 'dist', 'lib', 'vmm', run.mode === 'exec' ? 'exec-launcher.js' : 'transfer-update.js');
  return [
    process.execPath,
    program,
    'boot',
    run.poolPath,
    String(run.ramBytes),
    String(run.steps),
    String(run.seed),
    String(run.updates),
    String(run.maxDelayMs),
    String(run.vcpus ?? 1),
    String(run.device?.records ?? 0),
    String(run.device?.recordsPerSecond ?? 0),
  ];
}

export interface UpdateResult {
  status: number | null;
  stderr: string;
  events: UpdateEvent[];
}

function resultOf(status: number | null, stdout: string, stderr: string): UpdateResult {
  const output = stdout.trim();
  const events = output ? output.split('\n').map((line) => JSON.parse(line) as UpdateEvent) : [];
  stopOrphanedBackend(events);
  return { status, stderr, events };
}

/**
 * The device backend outlives every VMM process of a run by design, and the last one stops it; a run that ended
 * otherwise (a VMM crashed, or was killed at the timeout) leaves it to notice that its lifeline closed, which takes it
 * a few milliseconds. A caller that goes on at once (the next benchmark run) must not share the host with it, so it is
 * killed here, if that pid is still a device backend.
 */
function stopOrphanedBackend(events: UpdateEvent[]): void {
  const ready = events.find((event) => event.event === 'device-ready');
  if (typeof ready?.pid !== 'number') return;
  try {
    if (fs.readFileSync(`/proc/${ready.pid}/cmdline`, 'utf8').includes('device-backend.js')) process.kill(ready.pid, 'SIGKILL');
  } catch {
    // gone already: it stopped when asked
  }
}

/** Runs a live-update program to its end and returns its exit status, its stderr and the events it printed. */
export function runUpdates(run: UpdateRun, options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): UpdateResult {
  const [node, ...args] = updateArgv(run);
  const result = spawnSync(node!, args, { encoding: 'utf8', timeout: options.timeoutMs ?? 600_000, env: options.env ?? process.env });
  return resultOf(result.status, result.stdout, result.stderr);
}

/** runUpdates() without blocking this thread meanwhile (a test worker must keep answering its runner). */
export async function runUpdatesAsync(
  run: UpdateRun,
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<UpdateResult> {
  const [node, ...args] = updateArgv(run);
  const result = await runToEnd(node!, args, { env: options.env ?? process.env, timeoutMs: options.timeoutMs });
  return resultOf(result.status, result.stdout, result.stderr);
}
