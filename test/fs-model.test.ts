// Property test: random operation sequences against a plain in-memory model. After every step the filesystem must
// agree with the model (outcome and error code, namespace, sizes, bytes) and its audit must find nothing.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Filesystem, KiB, mkfs, mount, Pool } from '../lib/index';
import { Model } from './model';

const B = 16 * KiB;
const POOL_SIZE = 1024 * KiB; // 64 blocks of 16 KiB, a few of them metadata
const MAX_BLOCKS = 96; // what resize may grow it to
const INODES = 14;

const names = ['a', 'b', 'c', 'd'];
const literalPath = fc.array(fc.constantFrom(...names), { minLength: 1, maxLength: 3 }).map((parts) => `/${parts.join('/')}`);
/** Mostly an entry that exists in the model when the step runs (picked by index), sometimes any path (for the errors). */
const pathRef = fc.oneof(
  { weight: 5, arbitrary: fc.nat().map((pick) => ({ pick })) },
  { weight: 1, arbitrary: literalPath.map((literal) => ({ literal })) },
);
type PathRef = { pick: number } | { literal: string };
/** A new name under an existing directory (or a literal path). */
const newPathRef = fc.oneof(
  { weight: 5, arbitrary: fc.record({ dir: fc.nat(), name: fc.constantFrom(...names) }) },
  { weight: 1, arbitrary: literalPath.map((literal) => ({ literal })) },
);
type NewPathRef = { dir: number; name: string } | { literal: string };
const sizeArb = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 6 * B }), fc.constantFrom(B, 2 * B, 12 * B, 80 * B));
const opArb = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('create' as const),
      target: newPathRef,
      type: fc.constantFrom('plain' as const, 'state' as const, 'guest' as const),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('mkdir' as const), target: newPathRef }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('unlink' as const), target: pathRef }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('rmdir' as const), target: pathRef }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rename' as const), target: pathRef, to: fc.oneof(newPathRef, pathRef) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('truncate' as const), target: pathRef, size: sizeArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      target: pathRef,
      position: fc.integer({ min: 0, max: 3 * B }),
      length: fc.integer({ min: 1, max: 2 * B }),
      fill: fc.integer({ min: 1, max: 255 }),
    }),
  },
  // A free block, picked on the filesystem by index, quarantined: never allocated again.
  { weight: 1, arbitrary: fc.record({ op: fc.constant('quarantine' as const), target: pathRef, pick: fc.nat() }) },
  // The pool resized to this many blocks in all: shrinks below what is in use, and past the capacity, fail.
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('resize' as const), target: pathRef, blocks: fc.integer({ min: 1, max: MAX_BLOCKS + 8 }) }),
  },
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

/** Turns a reference into a concrete path against the model as it is now. */
function concrete(model: Model, ref: PathRef | NewPathRef): string {
  if ('literal' in ref) return ref.literal;
  const entries = [...model.nodes.keys()].sort();
  if ('pick' in ref) {
    const candidates = entries.filter((path) => path !== '/');
    return candidates.length ? candidates[ref.pick % candidates.length]! : '/a';
  }
  const dirs = entries.filter((path) => model.nodes.get(path)!.kind === 'dir');
  const dir = dirs[ref.dir % dirs.length]!;
  return dir === '/' ? `/${ref.name}` : `${dir}/${ref.name}`;
}

interface Step {
  op: Op['op'];
  path: string;
  to?: string;
  type?: 'plain' | 'state' | 'guest';
  size?: number;
  position?: number;
  bytes?: Uint8Array;
  pick?: number;
  blocks?: number;
}

function resolveStep(model: Model, op: Op): Step {
  const step: Step = { op: op.op, path: concrete(model, op.target) };
  if (op.op === 'create') step.type = op.type;
  if (op.op === 'rename') step.to = concrete(model, op.to);
  if (op.op === 'truncate') step.size = op.size;
  if (op.op === 'quarantine') step.pick = op.pick;
  if (op.op === 'resize') step.blocks = op.blocks;
  if (op.op === 'write') {
    step.position = op.position;
    step.bytes = new Uint8Array(op.length).fill(op.fill);
  }
  return step;
}

function apply(target: 'fs' | 'model', gfs: Filesystem, model: Model, step: Step): void {
  const onFs = target === 'fs';
  switch (step.op) {
    case 'create':
      return onFs
        ? void gfs.create(step.path, { type: step.type! })
        : model.create(step.path, { kind: 'file', type: step.type!, data: new Uint8Array(0) });
    case 'mkdir':
      return onFs ? void gfs.mkdir(step.path) : model.create(step.path, { kind: 'dir' });
    case 'unlink':
      return onFs ? gfs.unlink(step.path) : model.removeFile(step.path);
    case 'rmdir':
      return onFs ? gfs.rmdir(step.path) : model.removeDir(step.path);
    case 'rename':
      return onFs ? gfs.rename(step.path, step.to!) : model.rename(step.path, step.to!);
    case 'truncate':
      return onFs ? gfs.truncate(step.path, step.size!) : model.resize(step.path, step.size!);
    case 'write':
      return onFs ? void gfs.write(step.path, step.bytes!, step.position) : model.write(step.path, step.position!, step.bytes!);
    case 'quarantine': {
      if (!onFs) return model.quarantineFree();
      const free = freeBlocksOf(gfs, model);
      if (free.length > 0) gfs.quarantineBlock(free[step.pick! % free.length]!);
      return;
    }
    case 'resize': {
      if (onFs) return void gfs.resize(step.blocks! * B);
      const { metadataBlocks, blockCount, maxBlockCount } = gfs.geometry;
      const free = new Set(freeBlocksOf(gfs, model));
      let tailInUse = false;
      for (let block = Math.max(step.blocks!, metadataBlocks); block < blockCount; block++) if (!free.has(block)) tailInUse = true;
      return model.resizePool(step.blocks!, { metadataBlocks, maxBlocks: maxBlockCount, tailInUse });
    }
  }
}

/** The filesystem's free data blocks, found from its files' extents and its bad-block list (not from its counters). */
function freeBlocksOf(gfs: Filesystem, model: Model): number[] {
  const { metadataBlocks, blockCount } = gfs.geometry;
  const taken = new Set(gfs.badBlocks());
  for (const [path, node] of model.nodes) {
    if (node.kind !== 'file') continue;
    for (const { offset, length } of gfs.extents(path))
      for (let block = offset / B; block < (offset + length) / B; block++) taken.add(block);
  }
  const free: number[] = [];
  for (let block = metadataBlocks; block < blockCount; block++) if (!taken.has(block)) free.push(block);
  return free;
}

function outcome(run: () => void): string {
  try {
    run();
    return 'ok';
  } catch (error) {
    const errorCode = (error as { code?: string }).code;
    if (!errorCode) throw error;
    return errorCode;
  }
}

function compare(gfs: Filesystem, model: Model): void {
  const seen = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of gfs.readdirEntries(dir)) {
      const path = dir === '/' ? `/${entry.name}` : `${dir}/${entry.name}`;
      if (entry.type === 'directory') {
        seen.set(path, 'dir');
        walk(path);
      } else {
        const stat = gfs.stat(path);
        seen.set(path, `${stat.fileType}:${stat.size}`);
      }
    }
  };
  walk('/');
  const expected = new Map<string, string>();
  for (const [path, node] of model.nodes) {
    if (path !== '/') expected.set(path, node.kind === 'dir' ? 'dir' : `${node.type}:${node.data.length}`);
  }
  expect(Object.fromEntries([...seen].sort())).toEqual(Object.fromEntries([...expected].sort()));
  for (const [path, node] of model.nodes) {
    if (node.kind === 'file' && node.type !== 'guest') expect(Buffer.from(gfs.read(path)).equals(Buffer.from(node.data))).toBe(true);
  }
  const report = gfs.audit();
  expect(report.problems).toEqual([]);
  const statfs = gfs.statfs();
  expect(statfs.freeBlocks).toBe(model.freeBlocks());
  expect(statfs.quarantinedBlocks).toBe(gfs.badBlocks().length);
  expect(statfs.freeInodes).toBe(INODES - model.nodes.size - 1);
}

describe('filesystem against a model (fast-check)', () => {
  it('agrees with the model after every step of random operation sequences', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: POOL_SIZE });
    try {
      fc.assert(
        fc.property(fc.array(opArb, { minLength: 1, maxLength: 50, size: 'max' }), (ops) => {
          // Each sequence starts from an empty pool: the last one's quarantined blocks are forgotten.
          // The last sequence may have resized the pool.
          pool.resize(POOL_SIZE);
          mkfs(pool, { blockSize: B, inodes: INODES, force: true, forgetBadBlocks: true, maxSize: MAX_BLOCKS * B });
          const gfs = mount(pool);
          try {
            const model = new Model(gfs.statfs().dataBlocks, INODES - 1, B);
            for (const op of ops) {
              const step = resolveStep(model, op);
              const modelResult = outcome(() => apply('model', gfs, model, step));
              const fsResult = outcome(() => apply('fs', gfs, model, step));
              expect({ step: describeStep(step), result: fsResult }).toEqual({ step: describeStep(step), result: modelResult });
              tally(step.op, fsResult);
              compare(gfs, model);
            }
          } finally {
            gfs.unmount();
          }
        }),
        { numRuns: 300 },
      );
    } finally {
      pool.close();
    }
    process.stdout.write(`[model] outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}\n`);
    // The sequences must really exercise the filesystem: every operation succeeds often, and ENOSPC is reached.
    for (const op of ['create', 'mkdir', 'unlink', 'rmdir', 'rename', 'truncate', 'write', 'quarantine', 'resize'])
      expect(outcomes.get(`${op}:ok`) ?? 0).toBeGreaterThan(50);
    expect(outcomes.get('truncate:ENOSPC') ?? 0).toBeGreaterThan(10);
    // Shrinks refused for blocks in use at the end, and grows past the capacity, both happen.
    for (const refused of ['resize:EBUSY', 'resize:EFBIG', 'resize:EINVAL']) expect(outcomes.get(refused) ?? 0, refused).toBeGreaterThan(5);
    for (const errorCode of ['EEXIST', 'ENOTEMPTY', 'EISDIR', 'ENOTDIR', 'EINVAL', 'EPERM']) {
      expect(
        [...outcomes.keys()].some((key) => key.endsWith(`:${errorCode}`)),
        errorCode,
      ).toBe(true);
    }
  });
});

const outcomes = new Map<string, number>();
function tally(op: string, result: string): void {
  outcomes.set(`${op}:${result}`, (outcomes.get(`${op}:${result}`) ?? 0) + 1);
}

function describeStep(step: Step): string {
  const to = step.to ? ` -> ${step.to}` : '';
  const size = step.size !== undefined ? ` size=${step.size}` : '';
  const bytes = step.bytes ? ` @${step.position}+${step.bytes.length}` : '';
  const blocks = step.blocks !== undefined ? ` blocks=${step.blocks}` : '';
  return `${step.op} ${step.path}${to}${size}${bytes}${blocks}`;
}
