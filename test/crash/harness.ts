// Crash harness: runs the crash child against a pool, SIGKILLs it at a random instant, then checks, mounts and
// compares the pool with a model of every acknowledged operation (plus, perhaps, the one in flight).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { check, type Filesystem, mount, type Pool } from '../../lib/index';
import { code, Model, signGuest } from '../model';

/** The package root, whether this runs from test/ (vitest) or dist/test/ (the soak). */
function findRepoRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'binding.gyp'))) dir = path.dirname(dir);
  return dir;
}
const repoRoot = findRepoRoot();
const childScript = path.join(repoRoot, 'dist', 'test', 'fixtures', 'crash-child.js');

export interface CrashOptions {
  pool: Pool;
  blockSize: number;
  kills: number;
  seed: number;
  /** The kill comes at a random announcement or acknowledgement of the child's, at most this many into its run. */
  maxOps?: number;
  onKill?: (stats: CrashStats) => void;
}

export interface CrashStats {
  kills: number;
  /** Kills that landed after an operation began and before it returned. */
  insideOperation: number;
  insideByOperation: Record<string, number>;
  acknowledged: number;
  repaired: number;
  consistent: number;
  restoredFromHandover: number;
  inFlightApplied: number;
  /** In-flight overwrites found part-written (each byte old or new, the size unchanged): allowed, as on POSIX. */
  tornWrites: number;
}

type Op = {
  op: string;
  path?: string;
  to?: string;
  type?: string;
  size?: number;
  position?: number;
  length?: number;
  fill?: number;
  value?: number;
  blocks?: number;
  metadataBlocks?: number;
  maxBlocks?: number;
  tailInUse?: boolean;
};

function applyToModel(model: Model, op: Op): void {
  switch (op.op) {
    case 'create':
      return model.create(op.path!, { kind: 'file', type: op.type as 'plain', data: new Uint8Array(0) });
    case 'mkdir':
      return model.create(op.path!, { kind: 'dir' });
    case 'unlink':
      return model.removeFile(op.path!);
    case 'rmdir':
      return model.removeDir(op.path!);
    case 'rename':
      return model.rename(op.path!, op.to!);
    case 'truncate':
      return model.resize(op.path!, op.size!);
    case 'write':
      return model.write(op.path!, op.position!, new Uint8Array(op.length!).fill(op.fill!));
    case 'sign': {
      const bytes = new Uint8Array(8);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(op.value!), true);
      return signGuest(model, op.path!, bytes);
    }
    case 'serialise':
      model.frozen = true;
      return;
    case 'abort':
      if (!model.frozen) throw code('EINVAL');
      model.frozen = false;
      return;
    case 'resize':
      return model.resizePool(op.blocks!, { metadataBlocks: op.metadataBlocks!, maxBlocks: op.maxBlocks!, tailInUse: op.tailInUse! });
  }
  throw new Error(`unknown op ${op.op}`);
}

function outcome(model: Model, op: Op): string {
  try {
    applyToModel(model, op);
    return 'ok';
  } catch (error) {
    const errorCode = (error as { code?: string }).code;
    if (!errorCode) throw error;
    return errorCode;
  }
}

/** The model after `op` succeeds, or undefined when the model refuses it. */
function outcomeModel(model: Model, op: Op): Model | undefined {
  const after = model.clone();
  return outcome(after, op) === 'ok' ? after : undefined;
}

/** Namespace, sizes and every byte, as seen through the filesystem. */
function snapshot(gfs: Filesystem, dir = '/', out = new Map<string, string>()): Map<string, string> {
  for (const entry of gfs.readdirEntries(dir)) {
    const full = path.posix.join(dir, entry.name);
    if (entry.type === 'directory') {
      out.set(full, 'dir');
      snapshot(gfs, full, out);
      continue;
    }
    const stat = gfs.stat(full);
    let bytes: Uint8Array;
    if (stat.fileType === 'guest') {
      if (stat.size === 0) bytes = new Uint8Array(0);
      else {
        const mapping = gfs.map(full, { populate: false, writable: false });
        bytes = mapping.bytes(0, stat.size).slice();
        mapping.unmap();
      }
    } else bytes = gfs.read(full);
    out.set(full, `${stat.fileType}:${stat.size}:${Buffer.from(bytes).toString('base64')}`);
  }
  return out;
}

function expected(model: Model): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, node] of model.nodes) {
    if (key === '/') continue;
    out.set(key, node.kind === 'dir' ? 'dir' : `${node.type}:${node.data.length}:${Buffer.from(node.data).toString('base64')}`);
  }
  return out;
}

function same(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [key, value] of a) if (b.get(key) !== value) return false;
  return true;
}

/**
 * A write killed in flight may leave its range part-written; it must never show a new size without the new bytes.
 * Accepted when every other entry matches, the size is the old one, and each byte is the old or the new value.
 */
function tornWriteAccepted(actual: Map<string, string>, before: Model, after: Model, target: string): boolean {
  const was = expected(before);
  for (const [key, value] of actual) if (key !== target && was.get(key) !== value) return false;
  if (actual.size !== was.size) return false;
  const decode = (value: string | undefined) => {
    const [type, size, data] = (value ?? '').split(':');
    return { type, size: Number(size), data: Buffer.from(data ?? '', 'base64') };
  };
  const now = decode(actual.get(target));
  const old = decode(was.get(target));
  const next = decode(expected(after).get(target));
  if (now.type !== old.type || now.size !== old.size) return false;
  for (let i = 0; i < now.size; i++) if (now.data[i] !== old.data[i] && now.data[i] !== next.data[i]) return false;
  return true;
}

function describeDifference(actual: Map<string, string>, model: Map<string, string>): string {
  const lines: string[] = [];
  for (const key of new Set([...actual.keys(), ...model.keys()])) {
    const left = actual.get(key)?.slice(0, 60);
    const right = model.get(key)?.slice(0, 60);
    if (left !== right) lines.push(`${key}: pool ${left ?? '(absent)'} / model ${right ?? '(absent)'}`);
  }
  return lines.slice(0, 10).join('\n');
}

export async function runCrashes(options: CrashOptions): Promise<CrashStats> {
  const stats: CrashStats = {
    kills: 0,
    insideOperation: 0,
    insideByOperation: {},
    acknowledged: 0,
    repaired: 0,
    consistent: 0,
    restoredFromHandover: 0,
    inFlightApplied: 0,
    tornWrites: 0,
  };
  const first = mount(options.pool);
  const dataBlocks = first.statfs().dataBlocks;
  const inodes = first.statfs().totalInodes;
  let model = new Model(dataBlocks, inodes, options.blockSize);
  // The pool may already hold files from an earlier run: start the model from what is there.
  for (const [key, value] of snapshot(first)) {
    if (value === 'dir') model.nodes.set(key, { kind: 'dir' });
    else {
      const [type, , data] = value.split(':');
      model.nodes.set(key, { kind: 'file', type: type as 'plain', data: new Uint8Array(Buffer.from(data!, 'base64')) });
    }
  }
  first.unmount();
  let random = options.seed >>> 0 || 1;
  const next = () => {
    random = (Math.imul(random, 1664525) + 1013904223) >>> 0;
    return random / 4294967296;
  };
  for (let kill = 0; kill < options.kills; kill++) {
    const child = spawn(
      process.execPath,
      [childScript, options.pool.path!, String(options.seed * 7919 + kill), String(options.blockSize)],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NODE_EXTRA_CA_CERTS: '' },
      },
    );
    let buffer = '';
    let stderr = '';
    let inFlight: Op | undefined;
    const recent: string[] = [];
    let failure: Error | undefined;
    // The kill lands on an event of the child's own (its Nth announcement or acknowledgement, N random), never after a
    // time: it comes while that operation runs or just after, wherever the child has got to when the signal arrives.
    const killOn = next() < 0.5 ? 'B' : 'A';
    const killAfter = 1 + Math.floor(next() * (options.maxOps ?? 40));
    let seen = 0;
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.startsWith('B ')) inFlight = JSON.parse(line.slice(2)) as Op;
        else if (line.startsWith('A ') && inFlight && !failure) {
          const result = outcome(model, inFlight);
          if (result !== line.slice(2))
            failure = new Error(`model says ${result}, pool said ${line.slice(2)} for ${JSON.stringify(inFlight)}`);
          stats.acknowledged++;
          recent.push(`${JSON.stringify(inFlight)} -> ${line.slice(2)}`);
          if (recent.length > 6) recent.shift();
          inFlight = undefined;
        }
        if (line[0] === killOn && ++seen === killAfter) child.kill('SIGKILL');
      }
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (status) => resolve(status)));
    await exited;
    await new Promise((resolve) => setImmediate(resolve)); // drain the last stdout chunk
    if (stderr.trim()) throw new Error(`crash child ${kill} failed: ${stderr.trim().slice(0, 2000)}`);
    if (failure) throw failure;
    stats.kills++;
    if (inFlight) {
      stats.insideOperation++;
      stats.insideByOperation[inFlight.op] = (stats.insideByOperation[inFlight.op] ?? 0) + 1;
    }

    const context = () => `kill ${kill}, in flight ${JSON.stringify(inFlight)}, last acknowledged:\n  ${recent.join('\n  ')}`;
    const result = check(options.pool, { repair: true });
    if (result.state === 'inconsistent') throw new Error(`${context()}\nchecker says inconsistent: ${result.problems.join('; ')}`);
    if (result.state === 'repaired') stats.repaired++;
    else stats.consistent++;
    let gfs: Filesystem;
    try {
      gfs = mount(options.pool);
    } catch (error) {
      throw new Error(
        `${context()}\nchecker said ${result.state} (${result.poolState}; fixes: ${result.fixes.join('; ')}), then mount failed: ` +
          `${(error as Error).message}`,
        { cause: error },
      );
    }
    if (gfs.restored) stats.restoredFromHandover++;
    const problems = gfs.audit().problems;
    if (problems.length) throw new Error(`kill ${kill}: audit after recovery: ${problems.join('; ')}`);
    const actual = snapshot(gfs);
    model.frozen = false;
    if (!same(actual, expected(model))) {
      const after = model.clone();
      if (inFlight) outcome(after, inFlight);
      after.frozen = false;
      const torn = inFlight?.op === 'write' && tornWriteAccepted(actual, model, after, inFlight.path!);
      if (torn) {
        // Adopt what the pool holds for that one file: its bytes are each old or new, as POSIX allows.
        const value = actual.get(inFlight!.path!)!;
        const [, , data] = value.split(':');
        const node = after.nodes.get(inFlight!.path!);
        if (node?.kind === 'file') node.data = new Uint8Array(Buffer.from(data!, 'base64'));
        model = after;
        stats.tornWrites++;
      } else if (!inFlight || !same(actual, expected(after))) {
        gfs.unmount();
        throw new Error(
          `kill ${kill} (in flight: ${JSON.stringify(inFlight)}): ` +
            `pool differs from every acknowledged state\n${describeDifference(actual, expected(model))}`,
        );
      } else {
        model = after;
        stats.inFlightApplied++;
      }
    }
    const statfs = gfs.statfs();
    // A resize changes no file: killed in flight, it has happened or not, and the pool file is exactly its new extent.
    const resized = inFlight?.op === 'resize' ? outcomeModel(model, inFlight) : undefined;
    if (statfs.dataBlocks !== model.dataBlocks && statfs.dataBlocks !== resized?.dataBlocks) {
      gfs.unmount();
      throw new Error(`${context()}\nthe pool has ${statfs.dataBlocks} data blocks, the model ${model.dataBlocks}`);
    }
    model.dataBlocks = statfs.dataBlocks;
    if (options.pool.refreshSize() !== statfs.totalBlocks * statfs.blockSize) {
      gfs.unmount();
      throw new Error(`${context()}\nthe pool file has ${options.pool.size} bytes, the filesystem spans ${statfs.totalBlocks} blocks`);
    }
    if (statfs.freeBlocks !== statfs.dataBlocks - model.usedBlocks()) {
      throw new Error(`kill ${kill}: ${statfs.freeBlocks} free blocks, the model's files leave ${statfs.dataBlocks - model.usedBlocks()}`);
    }
    if (statfs.freeInodes !== statfs.totalInodes - model.nodes.size) {
      throw new Error(`kill ${kill}: ${statfs.freeInodes} free inodes, the model leaves ${statfs.totalInodes - model.nodes.size}`);
    }
    gfs.unmount();
    options.onKill?.(stats);
  }
  return stats;
}
