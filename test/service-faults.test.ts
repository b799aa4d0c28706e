// Faults around the mount service: the service SIGKILLed at random instants while several clients work, and clients
// killed in the middle of a request. Nothing acknowledged is lost, pinned memory is never given away, and clients see
// a clear error and carry on once the service is back.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, mkfs, Pool } from '../lib/index';
import { connect, type ServiceClient } from '../lib/service/client';
import { uniquePath } from './helpers';
import { type ClientRun, runClient, runtimeDirectory, type RunningService, startService } from './service-helpers';

const B = 64 * KiB;
const KILLS = 25;
const WORKERS = 3;
/** The errors a client may see when the service dies under it: the connection reset, or nobody listening. */
const TRANSPORT_ERRORS = ['ECONNRESET', 'ENOTCONN', 'EPIPE'];

let poolPath: string;
let runtime: string;
let running: RunningService | undefined;
const children: ClientRun[] = [];
const clients: ServiceClient[] = [];

beforeEach(() => {
  poolPath = uniquePath('/dev/shm', 'guestmemfs-service-faults');
  const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 8 * MiB });
  mkfs(pool, { blockSize: B, inodes: 64 });
  pool.close();
  runtime = runtimeDirectory();
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const child of children.splice(0)) {
    child.child.kill('SIGKILL');
    await child.exited;
  }
  if (running && running.child.exitCode === null && running.child.signalCode === null) {
    running.child.kill('SIGKILL');
    await running.exited;
  }
  fs.rmSync(poolPath, { force: true });
  fs.rmSync(runtime, { recursive: true, force: true });
});

/** A small deterministic generator (mulberry32), so that a failing seed can be replayed. */
function generator(seed: number): (below: number) => number {
  let state = seed >>> 0;
  return (below) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) % below;
  };
}

async function turns(count: number): Promise<void> {
  for (let turn = 0; turn < count; turn++) await new Promise((resolve) => setImmediate(resolve));
}

/** What a worker's tree holds: directories, and files with their sizes. */
type Tree = Map<string, { dir: true } | { size: number }>;

type Step =
  | { op: 'mkdir'; path: string }
  | { op: 'create'; path: string }
  | { op: 'truncate'; path: string; size: number }
  | { op: 'unlink'; path: string }
  | { op: 'rmdir'; path: string }
  | { op: 'rename'; path: string; to: string };

function applied(tree: Tree, step: Step): Tree {
  const next = new Map(tree);
  if (step.op === 'mkdir') next.set(step.path, { dir: true });
  else if (step.op === 'create') next.set(step.path, { size: 0 });
  else if (step.op === 'truncate') next.set(step.path, { size: step.size });
  else if (step.op === 'unlink' || step.op === 'rmdir') next.delete(step.path);
  else {
    next.set(step.to, next.get(step.path)!);
    next.delete(step.path);
  }
  return next;
}

/** A step that is valid in `tree` (under `root`), so that every refusal would be a defect. */
function nextStep(tree: Tree, root: string, random: (below: number) => number): Step {
  const files = [...tree].filter(([, node]) => !('dir' in node)).map(([name]) => name);
  const dirs = [root, ...[...tree].filter(([, node]) => 'dir' in node).map(([name]) => name)];
  const fresh = () => {
    for (;;) {
      const candidate = `${dirs[random(dirs.length)]}/${'abcdef'[random(6)]}`;
      if (!tree.has(candidate)) return candidate;
    }
  };
  const pick = random(10);
  if (files.length > 0 && pick < 4) return { op: 'truncate', path: files[random(files.length)]!, size: random(4) * B + random(B) };
  if (files.length > 0 && pick < 5) return { op: 'unlink', path: files[random(files.length)]! };
  if (files.length > 0 && pick < 7) return { op: 'rename', path: files[random(files.length)]!, to: fresh() };
  const empty = dirs.slice(1).filter((dir) => ![...tree.keys()].some((name) => name.startsWith(`${dir}/`)));
  if (empty.length > 0 && pick < 8) return { op: 'rmdir', path: empty[random(empty.length)]! };
  if (dirs.length < 4 && pick < 9) return { op: 'mkdir', path: fresh() };
  return files.length < 5 ? { op: 'create', path: fresh() } : { op: 'unlink', path: files[random(files.length)]! };
}

async function run(client: ServiceClient, step: Step): Promise<void> {
  if (step.op === 'mkdir') await client.mkdir(step.path);
  else if (step.op === 'create') await client.create(step.path, { type: 'state' });
  else if (step.op === 'truncate') await client.truncate(step.path, step.size);
  else if (step.op === 'unlink') await client.unlink(step.path);
  else if (step.op === 'rmdir') await client.rmdir(step.path);
  else await client.rename(step.path, step.to);
}

/** The tree below `root`, as the service sees it now. */
async function observed(client: ServiceClient, root: string): Promise<Tree> {
  const tree: Tree = new Map();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await client.readdirEntries(dir)) {
      const name = `${dir}/${entry.name}`;
      if (entry.type === 'directory') {
        tree.set(name, { dir: true });
        await walk(name);
      } else tree.set(name, { size: (await client.stat(name)).size });
    }
  };
  await walk(root);
  return tree;
}

const sameTree = (a: Tree, b: Tree) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());

function overlapsAny(ranges: Array<{ offset: number; length: number }>, others: Array<{ offset: number; length: number }>): boolean {
  return ranges.some((range) =>
    others.some((other) => range.offset < other.offset + other.length && other.offset < range.offset + range.length),
  );
}

describe('the mount service under faults', () => {
  it(`${KILLS} SIGKILLs of the service while ${WORKERS} clients work: acknowledged operations survive, pinned blocks stay`, async () => {
    const random = generator(Number(process.env.GUESTMEMFS_CRASH_SEED ?? 7));
    running = await startService(poolPath, runtime);
    const root = await connect(running.socket);
    clients.push(root);
    for (const [name, blocks] of [
      ['/pinned', 3],
      ['/orphan', 2],
    ] as const) {
      await root.create(name, { type: 'guest' });
      await root.truncate(name, blocks * B);
    }
    // A VMM in its own process maps both files; one of them is then unlinked, and lives on as a pinned orphan.
    const holder = runClient(running.socket, [
      ['map', '/pinned', 0x5a],
      ['map', '/orphan', 0x3c],
    ]);
    children.push(holder);
    const [pinned, orphan] = await holder.results(2);
    await root.unlink('/orphan');
    const held = [
      ...(pinned!.extents as Array<{ offset: number; length: number }>),
      ...(orphan!.extents as Array<{ offset: number; length: number }>),
    ];
    const workers = await Promise.all(
      Array.from({ length: WORKERS }, async (_, index) => {
        const client = await connect(running!.socket);
        clients.push(client);
        await client.mkdir(`/w${index}`);
        return { root: `/w${index}`, client, tree: new Map() as Tree, inFlight: undefined as Step | undefined };
      }),
    );
    const stats = { kills: 0, acknowledged: 0, inFlightApplied: 0, inFlightLost: 0, errors: {} as Record<string, number> };
    // The same client carries on through every restart.
    for (let kill = 0; kill < KILLS; kill++) {
      const service = running;
      const budget = 1 + random(30);
      let acknowledged = 0;
      // Each worker runs valid steps until the service dies under it; the kill comes after `budget` acknowledgements.
      await Promise.all(
        workers.map(async (worker) => {
          for (;;) {
            const step = nextStep(worker.tree, worker.root, random);
            worker.inFlight = step;
            try {
              await run(worker.client, step);
            } catch (error) {
              const code = (error as { code?: string }).code ?? String(error);
              expect(TRANSPORT_ERRORS, `${JSON.stringify(step)}: ${String(error)}`).toContain(code);
              stats.errors[code] = (stats.errors[code] ?? 0) + 1;
              return;
            }
            worker.tree = applied(worker.tree, step);
            worker.inFlight = undefined;
            stats.acknowledged++;
            // Some event-loop turns later, so that the kill finds requests at every stage: sent, served, answered.
            if (++acknowledged === budget) void turns(random(60)).then(() => service.child.kill('SIGKILL'));
          }
        }),
      );
      expect((await service.exited).signal).toBe('SIGKILL');
      stats.kills++;
      running = await startService(poolPath, runtime); // recovers the pool the dead service held
      for (const worker of workers) {
        // The same client carries on: its next request finds the new service.
        const now = await observed(worker.client, worker.root);
        if (sameTree(now, worker.tree)) {
          if (worker.inFlight) stats.inFlightLost++;
        } else {
          expect(worker.inFlight, `${worker.root} changed with nothing in flight`).toBeDefined();
          const withStep = applied(worker.tree, worker.inFlight!);
          expect(sameTree(now, withStep), `${worker.root}: ${JSON.stringify([...now])} vs ${JSON.stringify([...worker.tree])}`).toBe(true);
          worker.tree = withStep;
          stats.inFlightApplied++;
        }
        worker.inFlight = undefined;
        for (const [name, node] of worker.tree) {
          if ('dir' in node) continue;
          expect(overlapsAny(await worker.client.extents(name), held), `${name} was given pinned blocks`).toBe(false);
        }
      }
      expect(await root.extents('/pinned')).toEqual(pinned!.extents);
    }
    // The pinned memory kept its bytes through every kill: map it again and look.
    const mapping = await root.map('/pinned');
    expect(mapping.bytes().every((byte) => byte === 0x5a)).toBe(true);
    mapping.unmap();
    process.stdout.write(`[service-faults] ${JSON.stringify(stats)}\n`);
    expect(stats.kills).toBe(KILLS);
    expect(stats.acknowledged).toBeGreaterThan(KILLS * WORKERS);
    holder.child.stdin.write('done\n');
    await holder.exited;
    expect(await root.reclaim()).toBe(1); // the orphan's blocks come back once its last pin goes
  }, 240_000);

  it('a client killed in the middle of sending a request changes nothing, and others are served throughout', async () => {
    running = await startService(poolPath, runtime);
    const root = await connect(running.socket);
    clients.push(root);
    const body = JSON.stringify({ path: '/victim', type: 'state' });
    // The client sends the headers and half the body, says so, then waits to be killed.
    const script =
      `const c=require('net').createConnection(${JSON.stringify(running.socket)},()=>{` +
      `c.write('POST /v1/create HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: ${body.length}\\r\\n\\r\\n` +
      `${body.slice(0, 10)}',()=>process.stdout.write('sent\\n'))});setInterval(()=>{},1e9);`;
    const client = spawn(process.execPath, ['-e', script]);
    await new Promise<void>((resolve) => client.stdout.once('data', () => resolve()));
    await root.create('/other', { type: 'state' }); // served while the half request waits
    const exited = new Promise((resolve) => client.once('exit', resolve));
    client.kill('SIGKILL');
    await exited;
    expect(await root.readdir('/')).toEqual(['other']);
    expect(await root.exists('/victim')).toBe(false);
    expect(running.child.exitCode).toBe(null);
  });
});
