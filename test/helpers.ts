// Shared test helpers: machine context from the global setup, unique pool paths, child processes running compiled code,
// captured errors, and waiting for the garbage collector to unmap a mapping.
import { type ChildProcessWithoutNullStreams, spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { inject } from 'vitest';
import { onMappingCollected } from '../lib/pool/mapping';
import { runToEnd } from '../lib/process';
import type { MachineContext } from './setup/machine';

export const repoRoot = path.resolve(__dirname, '..');
export const distLib = path.join(repoRoot, 'dist', 'lib', 'index.js');

export function machine(): MachineContext {
  return inject('machine');
}

/** A fresh file name inside dir, unique across parallel test files. */
export function uniquePath(dir: string, stem: string): string {
  return path.join(dir, `${stem}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
}

/** Logs why a test is skipped, so a skipped run says what the machine lacked. */
export function skipReason(reason: string): string {
  if (reason) process.stdout.write(`[skip] ${reason}\n`);
  return reason;
}

/** Runs a compiled fixture (dist/test/fixtures/NAME.js) in a fresh Node process and parses its JSON stdout. */
export function runFixture<T>(name: string, args: string[], options: SpawnSyncOptions = {}): T {
  const script = path.join(repoRoot, 'dist', 'test', 'fixtures', `${name}.js`);
  const result = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', ...options });
  if (result.status !== 0) {
    throw new Error(`fixture ${name} exited ${result.status} (signal ${result.signal}): ${String(result.stderr)}`);
  }
  return JSON.parse(String(result.stdout)) as T;
}

export type CapturedError = Error & { code?: string; errno?: number; syscall?: string; path?: string };

/** Runs fn and returns what it threw; fails the test when it does not throw. */
export function captureError(fn: () => unknown): CapturedError {
  try {
    fn();
  } catch (error) {
    return error as CapturedError;
  }
  throw new Error('expected an error, but the call succeeded');
}

/** Awaits promise and returns its rejection; fails the test when it resolves. */
export async function captureRejection(promise: Promise<unknown>): Promise<CapturedError> {
  try {
    await promise;
  } catch (error) {
    return error as CapturedError;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/**
 * Runs the garbage collector (vitest runs with --expose-gc) and lets finalizers run until `signal` settles: the signal
 * is a finalizer having run, so the wait ends on the event itself, never after a number of rounds or a time.
 */
export async function collectUntil(signal: Promise<unknown>): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run vitest with --expose-gc (see vitest.config.mts)');
  let settled = false;
  void signal.then(() => (settled = true));
  while (!settled) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Resolves when the collector has unmapped the Mapping with this id. */
export function mappingCollected(id: () => number): Promise<void> {
  return new Promise((resolve) => {
    const stop = onMappingCollected((unmappedId) => {
      if (unmappedId !== id()) return;
      stop();
      resolve();
    });
  });
}

/**
 * Waits until check() holds: for a condition another thread or a guest sets (a flag in shared memory, a native stamp),
 * looked at on every event-loop turn. The wait ends on the condition, never after a time.
 */
export async function signalled(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * Runs a command to its end without blocking this worker meanwhile: vitest's worker must keep answering its runner,
 * which gives up on it after a minute of silence (a long spawnSync did that under ASan).
 */
export const runAsync = runToEnd;

/** What the pinner fixture says once it maps a file: its pid and the pool ranges it pins. */
export interface Pinned {
  pid: number;
  extents: Array<{ offset: number; length: number }>;
}

export interface StartedPinner {
  child: ChildProcessWithoutNullStreams;
  pinned: Pinned;
  lines: string[];
}

/**
 * Starts a process that maps `file` of the pool at `poolPath` (pinned), as a second VMM or a device backend would, and
 * resolves once it says it holds it. It lets go on a line on its stdin.
 */
export async function startPinner(poolPath: string, file: string, mode?: 'exec' | 'exec-child'): Promise<StartedPinner> {
  const script = path.join(repoRoot, 'dist', 'test', 'fixtures', 'pinner.js');
  const child = spawn(process.execPath, [script, poolPath, file, ...(mode ? [mode] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: string[] = [];
  let pending = '';
  const wanted = mode ? 2 : 1;
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const parts = pending.split('\n');
      pending = parts.pop()!;
      lines.push(...parts);
      if (lines.length >= wanted) resolve();
    });
    child.once('exit', (code) => reject(new Error(`pinner exited ${code}: ${stderr}`)));
  });
  return { child, pinned: JSON.parse(lines[0]!) as Pinned, lines };
}

/** SIGKILLs a child and resolves once it has exited. */
export async function killChild(child: ChildProcessWithoutNullStreams): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}
