// How other programs (the CLI, the demo, the benchmark, the tests) start a live-update program and read its events:
// one place for the program's path, its argument order and its JSON-lines output.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { packageRoot } from '../native';

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
  ];
}

/** Runs a live-update program to its end and returns its exit status, its stderr and the events it printed. */
export function runUpdates(
  run: UpdateRun,
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): { status: number | null; stderr: string; events: UpdateEvent[] } {
  const [node, ...args] = updateArgv(run);
  const result = spawnSync(node!, args, { encoding: 'utf8', timeout: options.timeoutMs ?? 600_000, env: options.env ?? process.env });
  const output = result.stdout.trim();
  return {
    status: result.status,
    stderr: result.stderr,
    events: output ? output.split('\n').map((line) => JSON.parse(line) as UpdateEvent) : [],
  };
}
