// KHO-style handover: the FDT blob (read by the real dtc), freeze and abort, kexec and restart with the same physical
// pages, a successor waiting ahead of time, and every corruption refused with its own error, leaving the pool untouched.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FIXED_HEADER_BYTES, PoolState, readSuperblock, writeSuperblockSlot } from '../lib/fs/layout';
import {
  check,
  type Filesystem,
  decodeHandoverBlob,
  KiB,
  MiB,
  mkfs,
  mount,
  parseFdt,
  Pool,
  premapFile,
  spinForHandover,
  waitForHandover,
} from '../lib/index';
import { native } from '../lib/native';
import { EXEC_HOLDER_ENV, reapExecHolder, takeExecHolder } from '../lib/process';
import { scratchDirectory } from '../lib/scratch';
import { readPoolSuperblock } from '../lib/fs/format';
import { blobLayout, restoreExpectations } from '../lib/fs/lifecycle';
import { BufferMetadata } from '../lib/fs/metadata';
import { openViews } from '../lib/fs/views';
import { buildHandoverBlob } from '../lib/handover/blob';
import { crc32 } from '../lib/checksum';
import { leaveHoles } from './fs-helpers';
import { captureError, captureRejection, machine, repoRoot, skipReason, uniquePath } from './helpers';

const m = machine();
const B = 64 * KiB;

interface ProofRecord {
  phase: string;
  pid: number;
  backend?: string;
  restored?: { generation: string; files: number; ms: number } | null;
  restoreMs?: number;
  holder?: {
    pid: number;
    oldPoolMapped: boolean;
    poolMappedHere: boolean;
    fds: string[];
    status: number | undefined;
    gone: boolean;
    children: string;
  };
  holderEnvLeft?: boolean;
  namespaceSame?: boolean;
  files?: Record<string, { bytes: number; mismatchedPages: number; framesSame: boolean; frames: number }>;
  audit?: string[];
}

function runProof(args: string[]): ProofRecord[] {
  const script = path.join(repoRoot, 'dist', 'test', 'fixtures', 'handover-proof.js');
  const result = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', maxBuffer: 16 * MiB });
  if (result.status !== 0) throw new Error(`handover proof ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  return result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as ProofRecord);
}

function expectProof(verify: ProofRecord, backend: string): void {
  expect(verify).toMatchObject({ phase: 'verify', backend, namespaceSame: true, audit: [] });
  expect(verify.restored).toMatchObject({ generation: '2', files: 7 });
  const files = Object.values(verify.files!);
  expect(files.reduce((sum, file) => sum + file.bytes, 0)).toBeGreaterThanOrEqual(1024 * MiB);
  for (const file of files) expect(file).toMatchObject({ mismatchedPages: 0, framesSame: true });
  process.stdout.write(
    `[handover] ${backend}: restored ${verify.restored!.files} inodes in ${verify.restored!.ms.toFixed(2)} ms (open + mount ` +
      `${verify.restoreMs!.toFixed(2)} ms), 1 GiB verified on the same physical pages\n`,
  );
}

describe.skipIf(skipReason(m.skip2M))('handover of 1 GiB of guest memory, proved by bytes and physical frames', () => {
  it('kexec through execve (same PID) of a hugetlbfs pool', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'proof');
    try {
      const [prepare, verify] = runProof(['prepare', 'hugetlbfs', poolPath, 'kexec']);
      expect(verify!.pid).toBe(prepare!.pid);
      expectProof(verify!, 'hugetlbfs');
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  });

  it('kexec of a memfd pool whose fd is inherited across execve (GUESTMEMFS_POOL_FD)', () => {
    const [prepare, verify] = runProof(['prepare', 'memfd-hugetlb', '-', 'kexec']);
    expect(verify!.pid).toBe(prepare!.pid);
    expectProof(verify!, 'memfd-hugetlb');
    expect(verify!.holder).toBeUndefined(); // only asked for
    expect(verify!.holderEnvLeft).toBe(false);
  });

  it('kexec with deferTeardown: a holder takes the old address space through execve, and the new program reaps it', () => {
    const [prepare, verify] = runProof(['prepare', 'memfd-hugetlb', '-', 'kexec-deferred']);
    expect(verify!.pid).toBe(prepare!.pid);
    expectProof(verify!, 'memfd-hugetlb');
    // Until let go it held the old image (the pool mapped, before this image mapped it) with one fd, its pipe end;
    // it then exited by itself, was this process's child, and nothing of it is left.
    expect(verify!.holder).toMatchObject({ oldPoolMapped: true, poolMappedHere: false, fds: ['pipe:'], status: 0, gone: true });
    expect(verify!.holder!.children).toBe('');
    expect(verify!.holder!.pid).not.toBe(prepare!.pid);
    expect(verify!.holderEnvLeft).toBe(false);
  });

  it('a plain restart: a new process opens the hugetlbfs pool by path and restores', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'proof');
    try {
      const [prepare] = runProof(['prepare', 'hugetlbfs', poolPath, 'restart']);
      const [verify] = runProof(['verify', 'hugetlbfs', poolPath, 'restart']);
      expect(verify!.pid).not.toBe(prepare!.pid);
      expectProof(verify!, 'hugetlbfs');
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  });
});

describe('serialise, freeze and abort', () => {
  let pool: Pool;
  let gfs: Filesystem;
  beforeEach(() => {
    pool = Pool.create({ backend: 'memfd-4k', size: 4 * MiB });
    mkfs(pool, { blockSize: B });
    gfs = mount(pool);
    gfs.mkdir('/d');
    gfs.mkdir('/empty');
    gfs.create('/d/ram', { type: 'guest' });
    gfs.truncate('/d/ram', 2 * B);
    gfs.create('/d/state', { type: 'state' });
    gfs.write('/d/state', new Uint8Array([1, 2, 3]));
  });
  afterEach(() => {
    if (gfs.mounted) gfs.unmount();
    pool.close();
  });

  it('every call that would change metadata fails with EBUSY naming the handover; reads and maps still work', async () => {
    const result = gfs.serialise();
    expect(gfs.serialised).toBe(true);
    const mutations: Array<[string, () => unknown]> = [
      ['create', () => gfs.create('/new')],
      ['mkdir', () => gfs.mkdir('/new')],
      ['unlink', () => gfs.unlink('/d/state')],
      ['rmdir', () => gfs.rmdir('/empty')],
      ['rename', () => gfs.rename('/d/state', '/moved')],
      ['truncate', () => gfs.truncate('/d/ram', B)],
      ['write', () => gfs.write('/d/state', new Uint8Array(1))],
      ['chmod', () => gfs.chmod('/d', 0o700)],
      ['chown', () => gfs.chown('/d', 1, 1)],
      ['utimes', () => gfs.utimes('/d', 1n, 1n)],
    ];
    for (const [name, call] of mutations) {
      const error = captureError(call);
      expect(error, name).toMatchObject({ code: 'EBUSY', errno: -16 });
      expect(error.message, name).toContain(`serialised for handover (generation ${result.generation})`);
    }
    expect(await captureRejection(gfs.truncateAsync('/d/ram', 3 * B))).toMatchObject({ code: 'EBUSY' });
    expect(await captureRejection(gfs.scrub())).toMatchObject({ code: 'EBUSY' });
    expect(gfs.readdir('/d').sort()).toEqual(['ram', 'state']);
    expect(gfs.stat('/d/ram').size).toBe(2 * B);
    expect(Array.from(gfs.read('/d/state'))).toEqual([1, 2, 3]);
    const ram = gfs.map('/d/ram');
    ram.bytes()[0] = 9; // guest memory keeps running
    ram.unmap();
    expect(gfs.audit().problems).toEqual([]);
  });

  it('serialising twice is harmless, abort lifts the freeze, and serialise after abort works again', () => {
    const first = gfs.serialise();
    const second = gfs.serialise();
    expect(second.generation).toBe(first.generation);
    expect(Buffer.from(second.blob).equals(Buffer.from(first.blob))).toBe(true);
    gfs.abort();
    expect(gfs.serialised).toBe(false);
    gfs.create('/after-abort');
    const third = gfs.serialise();
    expect(third.generation).toBeGreaterThan(first.generation);
    expect(decodeHandoverBlob(third.blob).liveInodes).toHaveLength(decodeHandoverBlob(first.blob).liveInodes.length + 1);
    gfs.abort();
    expect(captureError(() => gfs.abort())).toMatchObject({ code: 'EINVAL' });
  });

  it('exports the blob to a file, and unmount of a serialised filesystem leaves it handed over for the next mount', () => {
    const scratch = scratchDirectory(os.tmpdir(), 'guestmemfs-blob');
    const out = path.join(scratch.path, 'handover.dtb');
    try {
      const result = gfs.serialise({ out });
      expect(fs.readFileSync(out).equals(Buffer.from(result.blob))).toBe(true);
      const ram = gfs.map('/d/ram');
      gfs.unmount(); // a live mapping does not block a handed-over unmount
      ram.unmap();
      gfs = mount(pool);
      expect(gfs.restored).toMatchObject({ generation: result.generation, files: 5 }); // root, /d, /empty, ram, state
      expect(gfs.recovery).toBeUndefined();
      expect(gfs.readdir('/d').sort()).toEqual(['ram', 'state']);
      gfs.create('/writable-again');
      expect(gfs.audit().problems).toEqual([]);
    } finally {
      scratch.remove();
    }
  });

  it('keepSerialised adopts a handover still frozen, and abort() thaws it (what `guestmemfs abort` does)', () => {
    const { generation } = gfs.serialise();
    gfs.unmount();
    gfs = mount(pool, { keepSerialised: true });
    expect(gfs.serialised).toBe(true);
    expect(gfs.superblock).toMatchObject({ state: PoolState.Serialised, generation, ownerPid: process.pid });
    expect(captureError(() => gfs.create('/new'))).toMatchObject({ code: 'EBUSY' });
    expect(gfs.serialise().generation).toBe(generation); // the same blob, still valid
    gfs.abort();
    expect(gfs.superblock.state).toBe(PoolState.Mounted);
    gfs.create('/new');
    expect(gfs.audit().problems).toEqual([]);
  });

  it('kexec refuses keepFds that are not fds above stdio, before serialising anything', () => {
    for (const keepFds of [[1], [-3], [1.5]]) {
      expect(captureError(() => gfs.kexec([process.execPath], { keepFds }))).toMatchObject({ code: 'EINVAL', syscall: 'execve' });
      expect(gfs.serialised).toBe(false);
    }
  });

  it('kexec refuses a deferTeardown that is not a boolean; a failed exec that deferred leaves no holder or fd behind', () => {
    expect(captureError(() => gfs.kexec([process.execPath], { deferTeardown: 'yes' as unknown as boolean }))).toMatchObject({
      code: 'EINVAL',
      syscall: 'execve',
    });
    expect(gfs.serialised).toBe(false);
    // The holder is a child of the calling thread; it is reaped before the error arrives.
    const leftovers = () => [fs.readFileSync('/proc/thread-self/children', 'utf8'), fs.readdirSync('/proc/self/fd').length];
    const before = leftovers();
    expect(captureError(() => gfs.kexec(['/nonexistent/program'], { deferTeardown: true }))).toMatchObject({ code: 'ENOENT' });
    expect(leftovers()).toEqual(before);
    expect(gfs.serialised).toBe(false);
  });

  it('taking a holder: a bad pid is refused by the addon, and a name that is no pipe and child of ours is not taken', async () => {
    expect(() => native.processReap('1' as unknown as number)).toThrow(TypeError);
    expect(() => native.processReap(0)).toThrow(RangeError);
    await expect(native.processReap(1)).rejects.toMatchObject({ code: 'ECHILD', errno: -10, syscall: 'waitpid' });
    // Malformed, a pid too large, an fd that is not open, an fd that is no pipe: nothing is taken, nothing closed.
    const notAPipe = fs.openSync('/dev/null', 'r');
    for (const value of ['1', 'x', '-4:5', '99999999999:3', '1:999999', `1:${notAPipe}`]) {
      const env: NodeJS.ProcessEnv = { [EXEC_HOLDER_ENV]: value };
      expect(takeExecHolder(env), value).toBeUndefined();
      expect(env).toEqual({}); // taken out, so that no child inherits it
    }
    expect(fs.fstatSync(notAPipe).isCharacterDevice()).toBe(true);
    fs.closeSync(notAPipe);
    expect(reapExecHolder({})).toBeUndefined();
  });

  it('a kexec whose execve fails aborts the handover and keeps the filesystem working here', () => {
    const error = captureError(() => gfs.kexec(['/nonexistent/program']));
    expect(error).toMatchObject({ code: 'ENOENT', syscall: 'execve' });
    expect(error.message).toContain('the handover was aborted');
    expect(gfs.serialised).toBe(false);
    gfs.create('/still-writable');
    expect(captureError(() => gfs.kexec([]))).toMatchObject({ code: 'EINVAL' });
    // A caller that serialised first keeps that decision: kexec leaves the filesystem serialised and says so.
    gfs.serialise();
    expect(captureError(() => gfs.kexec(['/nonexistent/program'])).message).toContain('still serialised: abort() to change it again');
    expect(gfs.serialised).toBe(true);
    gfs.abort();
    expect(captureError(() => gfs.kexec(['no-such-program-on-path']))).toMatchObject({ code: 'ENOENT' });
  });

  it('the blob is a DTB v17 with the RFC nodes, and the live inodes and mapping blocks it lists', () => {
    for (let i = 0; i < 6; i++) {
      gfs.create(`/s${i}`);
      gfs.truncate(`/s${i}`, B);
    }
    gfs.create('/fragmented');
    for (let i = 0; i < 6; i += 2) gfs.unlink(`/s${i}`);
    gfs.truncate('/fragmented', 3 * B); // lands in the holes: several extents
    const { blob } = gfs.serialise();
    const parsed = parseFdt(blob);
    expect(parsed.version).toBe(17);
    const root = parsed.root.children[0]!;
    expect(root.name).toBe('guestmemfs');
    expect(root.children.map((node) => node.name)).toEqual(['fs_mem', 'superblock', 'inodes', 'mappings_blocks', 'mappings_to_inode']);
    const description = decodeHandoverBlob(blob);
    expect(description).toMatchObject({ compatible: 'guestmemfs-v1', handoverVersion: 2, formatVersion: [1, 0], uuid: gfs.uuid });
    expect(description.liveHash).toHaveLength(4);
    expect(description.fsMem).toMatchObject({
      backend: 'memfd-4k',
      size: 4 * MiB,
      pageSize: 4096,
      blockSize: B,
      inheritedFd: pool.fd,
      fdEnv: 'GUESTMEMFS_POOL_FD',
    });
    expect(description.reservations).toEqual([{ offset: 0, length: gfs.geometry.metadataBytes }]);
    expect(description.regions.map((region) => region.name)).toEqual([
      'header',
      'allocated-bitmap',
      'dirty-bitmap',
      'inode-table',
      'extent-pages',
      'handover-area',
    ]);
  });
});

describe('the mapping blocks of a handover', () => {
  it('lists every extent page in use, with its owner, whichever live inodes hold them', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 8 * MiB });
    try {
      mkfs(pool, { blockSize: B });
      const gfs = mount(pool);
      // Two files of six extents each (more than the four an inode holds): one extent page apiece.
      leaveHoles(gfs, 12, '/s');
      for (const name of ['/many-a', '/plain', '/many-b']) gfs.create(name);
      gfs.truncate('/many-a', 6 * B);
      gfs.truncate('/many-b', 6 * B);
      expect([gfs.extents('/many-a').length, gfs.extents('/many-b').length]).toEqual([6, 6]);
      const description = decodeHandoverBlob(gfs.serialise().blob);
      const owners = description.mappingsBlocks.map((block) => block.inode);
      // In live-inode order, ascending.
      expect(owners).toEqual([gfs.stat('/many-a').ino, gfs.stat('/many-b').ino].sort((a, b) => a - b));
      for (const block of description.mappingsBlocks) expect(block.length).toBe(512);
      gfs.unmount();
      expect(mount(pool, { requireHandover: true }).extents('/many-b')).toHaveLength(6);
    } finally {
      pool.close();
    }
  });
});

describe('a handover of many files', () => {
  it('150,000 files, more than a spread argument list holds, serialise and restore', () => {
    const files = 150_000;
    const pool = Pool.create({ backend: 'memfd-4k', size: 256 * MiB, sparse: true });
    try {
      mkfs(pool, { inodes: files + 16 });
      const gfs = mount(pool);
      for (let i = 0; i < files; i++) gfs.create(`/f${i}`);
      const result = gfs.serialise();
      expect(result.files).toBe(files + 1); // and the root
      expect(decodeHandoverBlob(result.blob).liveInodes).toHaveLength(files + 1);
      gfs.unmount();
      const successor = mount(pool, { requireHandover: true });
      expect(successor.restored).toMatchObject({ files: files + 1 });
      expect(successor.stat(`/f${files - 1}`).size).toBe(0);
      successor.unmount();
    } finally {
      pool.close();
    }
  }, 60_000);
});

describe('the real device-tree compiler reads the blob', () => {
  function dtcPath(): string | null {
    const found = spawnSync('sh', ['-c', 'command -v dtc'], { encoding: 'utf8' }).stdout.trim();
    if (found) return found;
    if (process.getuid?.() !== 0) return null;
    // The test installs what it needs (CI also does, in .ci/run).
    spawnSync('apt-get', ['install', '-y', 'device-tree-compiler'], {
      stdio: 'ignore',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    return spawnSync('sh', ['-c', 'command -v dtc'], { encoding: 'utf8' }).stdout.trim() || null;
  }
  const dtc = dtcPath();

  it.skipIf(skipReason(dtc ? '' : 'dtc is not installed and could not be installed (needs root and apt)'))(
    'dtc -I dtb -O dts decodes the compatible string and every node',
    () => {
      const pool = Pool.create({ backend: 'memfd-4k', size: 4 * MiB });
      const scratch = scratchDirectory(os.tmpdir(), 'guestmemfs-dtc');
      const out = path.join(scratch.path, 'handover.dtb');
      try {
        mkfs(pool, { blockSize: B });
        const gfs = mount(pool);
        gfs.create('/ram', { type: 'guest' });
        gfs.truncate('/ram', 3 * B);
        gfs.serialise({ out });
        gfs.unmount();
        const dts = execFileSync(dtc!, ['-I', 'dtb', '-O', 'dts', out], { encoding: 'utf8' });
        expect(dts).toContain('compatible = "guestmemfs-v1";');
        for (const nodeName of ['guestmemfs {', 'fs_mem {', 'superblock {', 'inodes {', 'mappings_blocks {', 'mappings_to_inode {'])
          expect(dts).toContain(nodeName);
        expect(dts).toContain('backend = "memfd-4k";');
        expect(dts).toMatch(/\/memreserve\/\s+0x0+ 0x/);
      } finally {
        scratch.remove();
        pool.close();
      }
    },
  );
});

describe('a successor started ahead of time', () => {
  it('waits for the owner to serialise and let go, then restores', async () => {
    const poolPath = uniquePath('/dev/shm', 'guestmemfs-successor');
    const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 4 * MiB });
    try {
      mkfs(pool, { blockSize: B });
      const owner = mount(pool);
      owner.create('/vm-state', { type: 'state' });
      owner.write('/vm-state', new TextEncoder().encode('paused'));
      owner.unmount();
      // The owner runs in another process; the successor (this process) is already up and waiting.
      const script = `
        const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
        const fs = g.mount(g.Pool.open(${JSON.stringify(poolPath)}));
        process.stdout.write('mounted\\n');
        // The handover happens when the test says so (a line on stdin), and the owner exits when stdin closes.
        process.stdin.once('data', () => { fs.serialise(); fs.unmount(); process.stdout.write('handed over\\n'); });
        process.stdin.resume();`;
      const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      const successorPool = Pool.open(poolPath);
      // The owner holds the pool until it is told to hand over: the wait must give up, however slow the machine.
      expect(await captureRejection(waitForHandover(successorPool, { timeoutMs: 30 }))).toMatchObject({ code: 'ETIMEDOUT' });
      child.stdin.write('go\n');
      const successor = await waitForHandover(successorPool, { timeoutMs: 10_000 });
      expect(successor.restored).toBeDefined();
      expect(new TextDecoder().decode(successor.read('/vm-state'))).toBe('paused');
      successor.unmount();
      successorPool.close();
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      await exited;
    } finally {
      pool.destroy();
    }
  });
});

describe('a successor preparing before the handover', () => {
  let poolPath: string;
  let pool: Pool;
  let owner: Filesystem;
  let successorPool: Pool;
  beforeEach(() => {
    poolPath = uniquePath('/dev/shm', 'guestmemfs-premap');
    pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 4 * MiB });
    mkfs(pool, { blockSize: B });
    owner = mount(pool);
    // Its own open file description, as a successor process has: the mount lock tells the two apart.
    successorPool = Pool.open(poolPath);
  });
  afterEach(() => {
    successorPool.close();
    pool.destroy();
  });

  it('maps a file ahead of time and the restored mount adopts that very mapping; a file that moved gets a fresh one', () => {
    owner.create('/ram', { type: 'guest' });
    owner.truncate('/ram', 4 * B);
    owner.create('/grows', { type: 'state' });
    owner.truncate('/grows', B);
    const ram = owner.map('/ram');
    const premapped = premapFile(successorPool, '/ram');
    const stale = premapFile(successorPool, '/grows');
    expect(premapped.length).toBe(4 * B);
    ram.bytes(3 * B, 4).set([1, 2, 3, 4]);
    expect([...premapped.bytes(3 * B, 4)]).toEqual([1, 2, 3, 4]); // the same memory, not a copy
    // The premapping pins the file's block, so the owner may not free it (shrinking is refused) but may add to it.
    expect(captureError(() => owner.truncate('/grows', 0))).toMatchObject({
      code: 'EBUSY',
      message: expect.stringContaining(`pinned by pid ${process.pid}`),
    });
    owner.truncate('/grows', 2 * B); // its blocks changed after the premapping
    owner.serialise();
    owner.unmount();
    ram.unmap();

    const restored = spinForHandover(successorPool, { timeoutMs: 1000 });
    expect(restored.restored).toBeDefined();
    expect(restored.map('/ram', { premapped })).toBe(premapped);
    // Adopted mappings count like any other: the file cannot shrink under it.
    expect(captureError(() => restored.truncate('/ram', B))).toMatchObject({ code: 'EBUSY' });
    expect(captureError(() => restored.map('/ram', { premapped }))).toMatchObject({
      code: 'EINVAL',
      message: expect.stringMatching(/unadopted/),
    });
    const fresh = restored.map('/grows', { premapped: stale });
    expect(fresh).not.toBe(stale);
    expect(fresh.length).toBe(2 * B);
    expect(stale.mapped).toBe(true); // left to its maker
    stale.unmap();
    // Only premapFile() results of this pool are adopted: any other mapping is refused, changing nothing, even one of
    // another pool whose file has the very same blocks.
    const other = restored.map('/ram');
    expect(captureError(() => restored.map('/grows', { premapped: other }))).toMatchObject({ code: 'EINVAL' });
    const twin = Pool.create({ backend: 'memfd-4k', size: 4 * MiB });
    mkfs(twin, { blockSize: B });
    const twinFs = mount(twin);
    twinFs.create('/ram', { type: 'guest' });
    twinFs.truncate('/ram', 4 * B);
    twinFs.unmount();
    const foreign = premapFile(twin, '/ram');
    expect(foreign.extents).toEqual(premapped.extents);
    expect(captureError(() => restored.map('/ram', { premapped: foreign }))).toMatchObject({
      code: 'EINVAL',
      message: expect.stringMatching(/on this pool/),
    });
    foreign.unmap();
    twin.close();
    for (const mapping of [premapped, fresh, other]) mapping.unmap();
    restored.truncate('/ram', B); // no mapping left
    restored.unmount();
  });

  it('spins until the owner lets go, takes only a handover, and leaves a pool without one as it is', () => {
    expect(captureError(() => spinForHandover(successorPool, { timeoutMs: 20 }))).toMatchObject({ code: 'ETIMEDOUT', syscall: 'mount' });
    expect(captureError(() => premapFile(successorPool, '/'))).toMatchObject({ code: 'EISDIR' });
    owner.create('/empty', { type: 'guest' });
    expect(captureError(() => premapFile(successorPool, '/empty'))).toMatchObject({
      code: 'EINVAL',
      message: expect.stringMatching(/truncate it/),
    });
    owner.unmount(); // let go without serialising, as an owner that gave up on the update does
    const before = readPoolSuperblock(successorPool);
    expect(captureError(() => spinForHandover(successorPool))).toMatchObject({
      code: 'ENOENT',
      message: expect.stringMatching(/holds no handover/),
    });
    expect(captureError(() => mount(successorPool, { requireHandover: true }))).toMatchObject({ code: 'ENOENT' });
    expect(readPoolSuperblock(successorPool)).toEqual(before);
    mount(successorPool).unmount(); // and the lock was not left held
  });
});

describe('a damaged handover is refused with its own error, and the pool is left untouched', () => {
  let pool: Pool;
  let blobOffset: number;
  let blobLength: number;

  beforeEach(() => {
    pool = Pool.create({ backend: 'memfd-4k', size: 4 * MiB });
    mkfs(pool, { blockSize: B });
    const gfs = mount(pool);
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 3 * B);
    const { blob } = gfs.serialise();
    blobOffset = gfs.geometry.handoverOffset;
    blobLength = blob.length;
    gfs.unmount();
  });
  afterEach(() => pool.close());

  function metadataDigest(): string {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }], { populate: false, writable: false });
    const digest = crypto.createHash('sha256').update(mapping.bytes()).digest('hex');
    mapping.unmap();
    return digest;
  }

  /** Edits the pool's metadata region in place (as a corruption would), then checks mount refuses it. */
  function expectRefused(
    edit: (metadata: Uint8Array, blob: Uint8Array, view: DataView) => void,
    code: string,
    check: string,
    message: string | RegExp,
  ): void {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    const metadata = mapping.bytes();
    const blob = metadata.subarray(blobOffset, blobOffset + blobLength);
    edit(metadata, blob, new DataView(blob.buffer, blob.byteOffset, blob.byteLength));
    mapping.unmap();
    const before = metadataDigest();
    const error = captureError(() => mount(pool));
    expect(error).toMatchObject({ code, syscall: 'mount' });
    expect(error.message).toContain(`handover refused (${check})`);
    expect(error.message).toMatch(message);
    expect(error.message).toContain('the pool was left untouched');
    expect(metadataDigest()).toBe(before);
  }

  const structOffset = (view: DataView) => view.getUint32(8);
  const stringsOffset = (view: DataView) => view.getUint32(12);

  it('a truncated blob', () => {
    expectRefused(
      (metadata) => {
        const sb = readSuperblock(metadata.subarray(0, FIXED_HEADER_BYTES), pool);
        writeSuperblockSlot(metadata, 1 - sb.slot, { ...sb, sequence: sb.sequence + 1n, handoverBytes: blobLength - 100 });
      },
      'EUCLEAN',
      'fdt-truncated',
      /blob truncated: the header says \d+ bytes, \d+ are there/,
    );
  });

  it('a flipped byte in the FDT header', () => {
    expectRefused((_m, blob) => (blob[1] = blob[1]! ^ 0x40), 'EUCLEAN', 'fdt-magic', 'not a flattened device tree');
  });

  it('a flipped byte in the memory reservation map', () => {
    expectRefused((_m, blob) => (blob[40 + 14] = blob[40 + 14]! ^ 0x01), 'EUCLEAN', 'reservations', 'does not reserve the metadata region');
  });

  it('a flipped byte in a token of the structure block', () => {
    expectRefused((_m, blob, view) => (blob[structOffset(view) + 3] = 0x07), 'EUCLEAN', 'fdt-structure', 'unknown token 0x7');
  });

  it('a flipped byte in the strings block', () => {
    // The first string is "compatible": damage it and the property is gone.
    expectRefused(
      (_m, blob, view) => (blob[stringsOffset(view)] = 'C'.charCodeAt(0)),
      'EUCLEAN',
      'missing-property',
      '/guestmemfs has no "compatible" property',
    );
  });

  it('a wrong compatible string', () => {
    expectRefused(
      (_m, blob) => {
        const at = Buffer.from(blob).indexOf('guestmemfs-v1');
        blob[at + 12] = '2'.charCodeAt(0);
      },
      'EINVAL',
      'compatible',
      'compatible is "guestmemfs-v2"',
    );
  });

  it('a wrong format version', () => {
    expectRefused(
      (_m, blob) => {
        const parsed = Buffer.from(blob);
        // format-version = <1 0>: the major cell follows the handover-version property.
        const at = parsed.indexOf(Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]), parsed.indexOf('guestmemfs-v1'));
        blob[at + 3] = 7;
      },
      'EINVAL',
      'version',
      /version (7|\d+\.\d+) is not supported|not supported/,
    );
  });

  it('a blob that describes a pool of another size', () => {
    expectRefused(
      (_m, blob) => {
        const bytes = Buffer.from(blob);
        const size = Buffer.alloc(8);
        size.writeBigUInt64BE(BigInt(4 * MiB));
        const at = bytes.indexOf(size);
        blob[at + 5] = blob[at + 5]! ^ 0x80;
      },
      'EINVAL',
      'geometry',
      /describes a pool of \d+ bytes, this pool has 4194304/,
    );
  });

  it('metadata changed after serialise', () => {
    expectRefused(
      (metadata) => {
        // The hints block (free counters) is covered by the live-metadata checksum.
        metadata[12288 + 16] = metadata[12288 + 16]! ^ 0x01;
      },
      'EUCLEAN',
      'checksum',
      'metadata changed after serialise',
    );
  });

  it('the blob from another generation', () => {
    expectRefused(
      (metadata) => {
        const sb = readSuperblock(metadata.subarray(0, FIXED_HEADER_BYTES), pool);
        writeSuperblockSlot(metadata, 1 - sb.slot, { ...sb, sequence: sb.sequence + 1n, generation: sb.generation + 5n });
      },
      'EUCLEAN',
      'generation',
      /the blob was made at generation \d+, the superblock is at \d+/,
    );
  });

  it('a blob that lists a free inode as live, its checksums consistent: refused by mount and by the checker', () => {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    const metadata = mapping.bytes();
    const sb = readSuperblock(metadata.subarray(0, FIXED_HEADER_BYTES), pool);
    const views = openViews(new BufferMetadata(metadata.buffer as ArrayBuffer), sb.geometry, sb.badBlocks);
    const old = decodeHandoverBlob(metadata.subarray(blobOffset, blobOffset + blobLength));
    // What a serialiser that got its live list wrong would write: inode 9 is free, yet listed, and every CRC agrees.
    const live = [...old.liveInodes, 9];
    const forged = buildHandoverBlob({
      pool: { backend: pool.backend, path: undefined, fd: pool.fd, size: pool.size, pageSize: pool.pageSize },
      layout: blobLayout(sb.geometry),
      uuid: sb.uuid,
      generation: sb.generation,
      metadata: restoreExpectations(views, sb, pool).metadata,
      liveInodes: live,
      pages: [],
      pageOwners: [],
      badBlocks: [],
    });
    metadata.set(forged, blobOffset);
    writeSuperblockSlot(metadata, 1 - sb.slot, {
      ...sb,
      sequence: sb.sequence + 1n,
      handoverBytes: forged.length,
      handoverCrc: crc32(forged),
    });
    mapping.unmap();
    const refused = captureError(() => mount(pool));
    expect(refused).toMatchObject({ code: 'EUCLEAN', syscall: 'mount' });
    expect(refused.message).toBe(
      'EUCLEAN: handover refused (inodes): blob lists inode 9 as live, the inode table has it free; the pool was left untouched',
    );
    expect(check(pool).problems.join('; ')).toContain('blob lists inode 9 as live, the inode table has it free');
  });

  it('a damaged blob can still be discarded explicitly: the pool is then recovered from its metadata', () => {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    const bytes = mapping.bytes();
    bytes[blobOffset + 1] = bytes[blobOffset + 1]! ^ 0x40;
    mapping.unmap();
    const gfs = mount(pool, { discardHandover: true });
    expect(gfs.restored).toBeUndefined();
    expect(gfs.recovery).toBeDefined();
    expect(gfs.stat('/ram').size).toBe(3 * B);
    expect(gfs.audit().problems).toEqual([]);
    gfs.unmount();
  });
});
