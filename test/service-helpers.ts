// Helpers for the mount-service tests: `guestmemfs mount` in a child process, waited on through its ready line, and
// clients in processes of their own (the fixture service-client), run as any uid.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot } from './helpers';

export const CLI = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const CLIENT = path.join(repoRoot, 'dist', 'test', 'fixtures', 'service-client.js');

/**
 * The environment for a program that is not under test (curl, python): without the sanitizer runtimes that
 * `npm run test:asan` preloads into every process, under which curl hangs at start.
 */
export function foreignEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.LD_PRELOAD;
  return env;
}

/** A runtime directory for sockets that every uid may search (mkdtemp makes 0700 ones). */
export function runtimeDirectory(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-run-'));
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** Lines of a stream as they arrive, and a wait for the first line that matches. */
export class Lines {
  readonly lines: string[] = [];
  readonly #waiters: Array<{ test: (line: string) => boolean; resolve: (line: string) => void }> = [];
  #pending = '';

  constructor(stream: NodeJS.ReadableStream) {
    stream.on('data', (chunk: Buffer) => {
      this.#pending += chunk.toString();
      const parts = this.#pending.split('\n');
      this.#pending = parts.pop()!;
      for (const line of parts) {
        this.lines.push(line);
        for (const waiter of [...this.#waiters]) {
          if (!waiter.test(line)) continue;
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    });
  }

  /** The first line (already seen, or still to come) that matches. */
  next(test: (line: string) => boolean): Promise<string> {
    const seen = this.lines.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }
}

export interface RunningService {
  child: ChildProcessWithoutNullStreams;
  socket: string;
  stdout: Lines;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `guestmemfs mount POOL ...args` and resolves once it has printed its ready line. */
export async function startService(
  pool: string,
  runtime: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<RunningService> {
  const child = spawn(process.execPath, [CLI, 'mount', pool, ...args], {
    env: { ...process.env, GUESTMEMFS_RUNTIME_DIR: runtime, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const stdout = new Lines(child.stdout);
  const ready = await Promise.race([
    stdout.next((line) => line.includes(' serving ')),
    exited.then(({ code }) => {
      throw new Error(`guestmemfs mount exited ${code} before it was ready: ${stderr}`);
    }),
  ]);
  const socket = / on (\S+) \(pid /.exec(ready)![1]!;
  return { child, socket, stdout, stderr: () => stderr, exited };
}

export interface ClientRun {
  child: ChildProcessWithoutNullStreams;
  lines: Lines;
  /** The result lines, parsed, once the client has printed `count` of them. */
  results(count: number): Promise<Array<Record<string, unknown>>>;
  exited: Promise<number | null>;
}

/** Runs the service-client fixture with `steps`, as `uid`/`gid` when given. */
export function runClient(socket: string, steps: unknown[][], credentials: { uid?: number; gid?: number } = {}): ClientRun {
  const child = spawn(process.execPath, [CLIENT, socket, JSON.stringify(steps)], { stdio: ['pipe', 'pipe', 'pipe'], ...credentials });
  const lines = new Lines(child.stdout);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return {
    child,
    lines,
    exited,
    async results(count: number) {
      await Promise.race([
        lines.next(() => lines.lines.length >= count),
        exited.then((code) => {
          if (lines.lines.length < count) throw new Error(`client exited ${code} after ${lines.lines.length} results: ${stderr}`);
        }),
      ]);
      return lines.lines.slice(0, count).map((line) => JSON.parse(line) as Record<string, unknown>);
    },
  };
}
