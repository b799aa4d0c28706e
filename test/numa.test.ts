// Per-node pools: a pool bound to a NUMA node has every page there, the format and the handover record the node, the
// checker verifies it, and an absent node is refused before anything is created.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPoolSuperblock } from '../lib/fs/format';
import { COMPAT_NUMA_NODE } from '../lib/fs/layout';
import { check, decodeHandoverBlob, memoryNodes, MiB, mkfs, mount, Pool, reserveHugePages } from '../lib/index';
import { native } from '../lib/native';
import { nodeHugePages } from '../lib/pool/hugepages';
import { rewriteSuperblock } from './fs-helpers';
import { captureError, machine, repoRoot, skipReason, uniquePath } from './helpers';

const m = machine();
const absentNode = Math.max(...memoryNodes()) + 1;
const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

/** The NUMA policy and per-node page counts /proc/self/numa_maps shows for the mapping at `address`. */
function numaMapsLine(address: bigint): string {
  const line = fs
    .readFileSync('/proc/self/numa_maps', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith(`${address.toString(16)} `));
  if (!line) throw new Error(`no numa_maps line for ${address.toString(16)}`);
  return line;
}

describe('a pool bound to a NUMA node', () => {
  it.skipIf(skipReason(m.skip2M))('hugetlbfs: every page on node 0, recorded in the format and the handover, checked', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'numa');
    const pool = Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 64 * MiB, node: 0 });
    try {
      expect(pool.node).toBe(0);
      expect(pool.placement()).toEqual({ pagesByNode: { 0: 32 }, missing: 0 });
      const info = mkfs(pool);
      expect(info.node).toBe(0);
      const sb = readPoolSuperblock(pool);
      expect(sb.compat & COMPAT_NUMA_NODE).toBe(COMPAT_NUMA_NODE);
      expect(sb.numaNode).toBe(0);
      const gfs = mount(pool);
      gfs.create('/ram', { type: 'guest' });
      gfs.truncate('/ram', 16 * MiB);
      const ram = gfs.map('/ram');
      // The pages a VMM maps are the bound pool's: numa_maps counts all 8 huge pages on node 0.
      expect(numaMapsLine(ram.address)).toMatch(/ huge .*N0=8/);
      ram.unmap();
      const { blob } = gfs.serialise();
      expect(decodeHandoverBlob(blob).fsMem.numaNode).toBe(0);
      gfs.unmount();
      const successor = mount(pool, { requireHandover: true });
      expect(successor.restored).toBeTruthy();
      successor.unmount();
      expect(check(pool).state).toBe('consistent');
    } finally {
      pool.close();
      fs.rmSync(poolPath, { force: true });
    }
  });

  it('memfd-4k: bound by mbind before the pages exist, still all zero, and the mapping carries the policy', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 8 * MiB, node: 0 });
    try {
      expect(pool.placement()).toEqual({ pagesByNode: { 0: 2048 }, missing: 0 });
      expect(pool.freshlyAllocated).toBe(true);
      const mapping = pool.map([{ offset: 0, length: 8 * MiB }], { populate: false, writable: false });
      expect(mapping.bytes().every((byte) => byte === 0)).toBe(true);
      mapping.unmap();
      // The binding is the allocation's: a mapping made while creating it had the bind policy (numa_maps: bind:0).
      const bound = pool.map([{ offset: 0, length: 4096 }], { populate: false, writable: false });
      native.numaBind(bound.id, 0, 4096, 0);
      expect(numaMapsLine(bound.address)).toContain(' bind:0 ');
      bound.unmap();
    } finally {
      pool.close();
    }
  });

  it('a bound pool that grows takes its new pages on its node too', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 8 * MiB, node: 0 });
    try {
      mkfs(pool, { maxSize: 16 * MiB });
      const gfs = mount(pool);
      gfs.resize(16 * MiB);
      gfs.unmount();
      // The 2048 pages added by the grow were bound before they existed, as create() binds its own.
      expect(pool.placement()).toEqual({ pagesByNode: { 0: 4096 }, missing: 0 });
      expect(check(pool).state).toBe('consistent');
    } finally {
      pool.close();
    }
  });

  it('a pool created without a node records none, and its blob carries none', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 16 * MiB });
    try {
      expect(pool.node).toBeUndefined();
      expect(mkfs(pool).node).toBeUndefined();
      expect(readPoolSuperblock(pool).compat & COMPAT_NUMA_NODE).toBe(0);
      const gfs = mount(pool);
      expect(decodeHandoverBlob(gfs.serialise().blob).fsMem.numaNode).toBeUndefined();
      gfs.unmount();
    } finally {
      pool.close();
    }
  });

  it(`refuses node ${absentNode}, which this host does not have, before creating anything`, () => {
    const poolPath = uniquePath('/dev/shm', 'guestmemfs-numa');
    const error = captureError(() => Pool.create({ backend: 'shm-4k', path: poolPath, size: 8 * MiB, node: absentNode }));
    expect(error).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'mbind', path: poolPath });
    expect(error.message).toContain(`NUMA node ${absentNode} has no memory on this host (nodes with memory: ${memoryNodes().join(', ')})`);
    expect(fs.existsSync(poolPath)).toBe(false);
    // Wrong types and values are argument errors; a sparse pool cannot be bound.
    expect(captureError(() => Pool.create({ backend: 'memfd-4k', size: 8 * MiB, node: '0' as unknown as number }))).toBeInstanceOf(
      TypeError,
    );
    for (const node of [-1, 1.5, Number.NaN]) {
      expect(captureError(() => Pool.create({ backend: 'memfd-4k', size: 8 * MiB, node }))).toBeInstanceOf(RangeError);
    }
    expect(captureError(() => Pool.create({ backend: 'memfd-4k', size: 8 * MiB, node: 0, sparse: true }))).toMatchObject({
      code: 'EINVAL',
    });
  });

  it('a handover whose node disagrees with the superblock is refused, and the pool is left as it was', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 16 * MiB, node: 0 });
    try {
      mkfs(pool);
      const gfs = mount(pool);
      gfs.serialise();
      gfs.unmount();
      // A release that does not know the node flag drops it from the superblock; the blob still says node 0.
      rewriteSuperblock(pool, { compat: 0 });
      const error = captureError(() => mount(pool, { requireHandover: true }));
      expect(error).toMatchObject({ code: 'EUCLEAN', syscall: 'mount' });
      expect(error.message).toContain(
        'handover refused (numa-node): blob describes a pool on NUMA node 0, the superblock one on no NUMA node',
      );
      expect(readPoolSuperblock(pool).state).toBe(2); // still serialised
    } finally {
      pool.close();
    }
  });

  it('the checker reports pages off the node the format records, as damage it cannot repair', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 16 * MiB, node: 0 });
    try {
      mkfs(pool);
      rewriteSuperblock(pool, { numaNode: absentNode });
      const result = check(pool, { repair: true });
      expect(result).toMatchObject({ state: 'inconsistent', repairable: false });
      expect(result.problems).toContain(
        `the pool is bound to NUMA node ${absentNode}, but 4096 of the pages checked are not there (4096 on node 0)`,
      );
      rewriteSuperblock(pool, { numaNode: 0 });
      expect(check(pool).state).toBe('consistent');
    } finally {
      pool.close();
    }
  });

  it.skipIf(skipReason(m.isRoot && !m.skip2M ? '' : 'needs root and 2 MiB huge pages'))(
    "reserves huge pages on the node's own counter and puts it back on release",
    () => {
      const before = nodeHugePages(0, 2 * MiB);
      const wanted = before.free + 2;
      const reservation = reserveHugePages({ pageSize: 2 * MiB, pages: wanted, node: 0 });
      try {
        expect(reservation.node).toBe(0);
        expect(reservation.changes.join('\n')).toContain('/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages');
        expect(nodeHugePages(0, 2 * MiB).total).toBeGreaterThan(before.total);
      } finally {
        reservation.release();
      }
      expect(nodeHugePages(0, 2 * MiB).total).toBe(before.total);
      expect(captureError(() => reserveHugePages({ pageSize: 2 * MiB, pages: 1, node: absentNode }))).toMatchObject({ code: 'EINVAL' });
    },
  );

  it('the NUMA wrappers refuse bad arguments and unmapped memory with errors, never a fault', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 4 * MiB });
    try {
      const mapping = pool.map([{ offset: 0, length: 4 * MiB }], { populate: true, writable: false });
      expect(native.numaPageNodes(mapping.id, 0, 4 * MiB, 4096).every((node) => node === 0)).toBe(true);
      // The addon re-checks what its callers in lib/ have validated: a coded EINVAL naming the argument.
      expect(captureError(() => native.numaBind('x' as unknown as number, 0, 4096, 0))).toMatchObject({
        code: 'EINVAL',
        syscall: 'argument',
      });
      expect(captureError(() => native.numaBind(mapping.id, 0, 4096, 1024)).message).toContain('node must be an integer in [0, 1023]');
      expect(captureError(() => native.numaBind(mapping.id, 0, 8 * MiB, 0))).toMatchObject({ code: 'EINVAL', syscall: 'mbind' });
      expect(captureError(() => native.numaPageNodes(mapping.id, 0, 4096, 1000))).toMatchObject({ code: 'EINVAL' });
      // The kernel's own refusal: a node without memory cannot be bound to.
      expect(captureError(() => native.numaBind(mapping.id, 0, 4096, absentNode))).toMatchObject({
        code: 'EINVAL',
        errno: -22,
        syscall: 'mbind',
      });
      mapping.unmap();
      expect(captureError(() => native.numaPageNodes(mapping.id, 0, 4096, 4096))).toMatchObject({ code: 'EINVAL', syscall: 'move_pages' });
    } finally {
      pool.close();
    }
  });
});

describe('guestmemfs mkfs --node', () => {
  it('formats a pool on node 0 that status shows, and refuses an absent node with nothing created', () => {
    const poolPath = uniquePath('/dev/shm', 'guestmemfs-numa-cli');
    try {
      const made = run('mkfs', poolPath, '--size', '16M', '--node', '0');
      expect(made.stderr).toBe('');
      expect(made.stdout).toContain('on NUMA node 0');
      const status = JSON.parse(run('status', poolPath, '--json').stdout) as { numaNode: number | null };
      expect(status.numaNode).toBe(0);
      expect(run('status', poolPath).stdout).toContain(', on NUMA node 0');
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
    const refused = run('mkfs', poolPath, '--size', '16M', '--node', String(absentNode));
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`NUMA node ${absentNode} has no memory on this host`);
    expect(fs.existsSync(poolPath)).toBe(false);
    const usage = run('mkfs', poolPath, '--size', '16M', '--node', 'zero');
    expect(usage.status).not.toBe(0);
    expect(usage.stderr).toContain('--node takes a NUMA node number, not "zero"');
  });
});
