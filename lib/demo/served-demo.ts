// The shared-pool part of the demo (npm start): `guestmemfs mount` serves one pool, two VMMs run a guest each on it,
// and each guest is live-updated in both modes while the other runs; the CLI lists the pool in the middle of it.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { GuestmemfsError } from '../errors';
import { mkfs } from '../fs/format';
import { packageRoot } from '../native';
import { formatSize } from '../units';
import { demoGuestChecksum } from '../vmm/machine';
import { choosePool, log, undo } from './handover-demo';

export interface ServedDemoOptions {
  ramBytes: number;
  steps: number;
}

interface Guest {
  name: string;
  seed: number;
  modes: Array<'exec' | 'transfer'>;
}

const GUESTS: readonly Guest[] = [
  { name: 'vm0', seed: 11, modes: ['exec', 'transfer'] },
  { name: 'vm1', seed: 12, modes: ['transfer', 'exec'] },
];

/** The first line of a stream that matches `test`, or undefined once it ends without one. */
function firstLine(stream: NodeJS.ReadableStream, test: (line: string) => boolean): Promise<string | undefined> {
  return new Promise((resolve) => {
    const lines = readline.createInterface({ input: stream });
    lines.on('line', (line) => {
      if (test(line)) resolve(line);
    });
    lines.on('close', () => resolve(undefined));
  });
}

/** Returns true when both guests ended on their uninterrupted checksums on the physical pages they booted on. */
export async function runServedDemo(options: ServedDemoOptions): Promise<boolean> {
  log('');
  log(`two VMMs sharing one pool: \`guestmemfs mount\` serves it; a ${formatSize(options.ramBytes)} guest each, both live-updated`);
  const { pool, cleanup } = choosePool(2 * options.ramBytes);
  mkfs(pool, { force: true });
  pool.close();
  const runtime = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-demo-run-'));
  const cli = path.join(packageRoot(), 'dist', 'cli', 'guestmemfs.js');
  const env: NodeJS.ProcessEnv = { ...process.env, GUESTMEMFS_RUNTIME_DIR: runtime };
  delete env.NODE_EXTRA_CA_CERTS; // parsed at every Node start-up, inside the exec-mode blackouts
  const service = spawn(process.execPath, [cli, 'mount', cleanup.poolPath], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let ok = true;
  try {
    const ready = await firstLine(service.stdout, (line) => line.includes(' serving '));
    if (!ready) throw new GuestmemfsError('EIO', 'guestmemfs mount did not start');
    const socket = / on (\S+) \(pid /.exec(ready)![1]!;
    log(`  ${ready.replace('guestmemfs: ', 'service: ')}`);
    const program = path.join(packageRoot(), 'dist', 'lib', 'vmm', 'served-update.js');
    const runs = GUESTS.map((guest) => {
      const args = [
        'boot',
        socket,
        guest.name,
        String(options.ramBytes),
        String(options.steps),
        String(guest.seed),
        guest.modes.join(','),
        '400',
      ];
      const child = spawn(process.execPath, [program, ...args], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      const events: Array<Record<string, unknown>> = [];
      const lines = readline.createInterface({ input: child.stdout });
      let booted: () => void = () => undefined;
      const bootedPromise = new Promise<void>((resolve) => (booted = resolve));
      lines.on('line', (line) => {
        const event = JSON.parse(line) as Record<string, unknown>;
        events.push(event);
        if (event.event === 'boot') booted();
        if (event.event === 'update') {
          const blackout = `blackout ${(event.ms as number).toFixed(1)} ms`;
          log(`  ${guest.name}: ${String(event.mode)}-mode update -> pid ${String(event.pid)}: ${blackout}`);
        }
      });
      // The guest's VMM processes share this stdout: it ends with the last of them.
      return { guest, events, booted: bootedPromise, ended: new Promise<void>((resolve) => lines.on('close', () => resolve())) };
    });
    await Promise.all(runs.map((run) => run.booted));
    const listing = spawnSync(process.execPath, [cli, 'ls', '-l', cleanup.poolPath, '/'], { env, encoding: 'utf8' });
    log('  the CLI, through the service, while both run:');
    for (const line of listing.stdout.trim().split('\n')) log(`    ${line}`);
    await Promise.all(runs.map((run) => run.ended));
    for (const { guest, events } of runs) {
      const done = events.at(-1);
      const expected = demoGuestChecksum(options.ramBytes, { steps: options.steps, seed: BigInt(guest.seed) });
      const serial = (typeof done?.serial === 'string' ? done.serial : '').replace(/\./g, '').trim();
      const same = done?.event === 'done' && serial === expected;
      const pages =
        done?.sameFrames === null ? 'pages not compared (needs root)' : done?.sameFrames ? 'same physical pages' : 'PAGES CHANGED';
      ok &&= same && done?.sameFrames !== false;
      log(`  ${guest.name}: halted, checksum ${serial || '-'} ${same ? 'matches' : 'DIFFERS FROM'} an uninterrupted run; ${pages}`);
    }
  } finally {
    service.kill('SIGTERM');
    await new Promise((resolve) => service.once('exit', resolve));
    fs.rmSync(runtime, { recursive: true, force: true });
    undo(cleanup);
  }
  return ok;
}
