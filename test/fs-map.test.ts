// Mapping files and reading/writing them: guest files are mmap-only with DONTDUMP/DONTFORK; unlink of a mapped file
// keeps its blocks until the last unmap; a remount in a fresh process sees the same tree and bytes.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { captureError, collectUntil, machine, mappingCollected, repoRoot, skipReason, uniquePath } from './helpers';
import { smallFs, type TestFs } from './fs-helpers';

const B = 64 * KiB;
const m = machine();

function vmFlags(address: bigint): string[] {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const start = lines.findIndex((line) => line.startsWith(`${address.toString(16)}-`));
  return lines
    .slice(start)
    .find((line) => line.startsWith('VmFlags:'))!
    .slice(8)
    .trim()
    .split(/\s+/);
}

describe('map, read and write', () => {
  let t: TestFs;
  beforeEach(() => {
    t = smallFs();
  });
  afterEach(() => t.close());

  it('maps a guest file with MADV_DONTDUMP and MADV_DONTFORK, pre-faulted, and refuses read/write on it', () => {
    const { fs: gfs } = t;
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 4 * B);
    const mapping = gfs.map('/ram');
    expect(vmFlags(mapping.address)).toEqual(expect.arrayContaining(['dd', 'dc']));
    expect(mapping.length).toBe(4 * B);
    mapping.bytes()[5] = 42;
    const again = gfs.map('/ram', { populate: false });
    expect(again.bytes()[5]).toBe(42);
    expect(captureError(() => gfs.read('/ram'))).toMatchObject({ code: 'EPERM', errno: -1, syscall: 'read' });
    expect(captureError(() => gfs.write('/ram', new Uint8Array(1))).message).toContain('only reachable through map()');
    mapping.unmap();
    again.unmap();
  });

  it('state and plain files read and write through the same bytes a mapping sees', () => {
    const { fs: gfs } = t;
    gfs.create('/vcpu', { type: 'state' });
    expect(gfs.write('/vcpu', new TextEncoder().encode('registers'), 2 * B - 3)).toBe(9);
    expect(gfs.stat('/vcpu').size).toBe(2 * B + 6);
    expect(new TextDecoder().decode(gfs.read('/vcpu', 2 * B - 3))).toBe('registers');
    expect(gfs.read('/vcpu', 0, 4).every((byte) => byte === 0)).toBe(true);
    const mapping = gfs.map('/vcpu');
    expect(vmFlags(mapping.address)).not.toContain('dd');
    expect(new TextDecoder().decode(mapping.bytes(2 * B - 3, 9))).toBe('registers');
    mapping.unmap();
    expect(gfs.read('/vcpu', 10 * B)).toHaveLength(0);
    expect(captureError(() => gfs.read('/vcpu', -1))).toMatchObject({ code: 'EINVAL' });
  });

  it('refuses to map empty files and directories', () => {
    const { fs: gfs } = t;
    gfs.create('/empty');
    gfs.mkdir('/d');
    expect(captureError(() => gfs.map('/empty')).message).toContain('truncate it to a size first');
    expect(captureError(() => gfs.map('/d'))).toMatchObject({ code: 'EISDIR' });
  });

  it('unlink of a mapped file removes the name now and frees the blocks at the last unmap', () => {
    const { fs: gfs } = t;
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 3 * B);
    const first = gfs.map('/ram');
    const second = gfs.map('/ram');
    first.bytes()[0] = 7;
    const free = gfs.statfs().freeBlocks;
    gfs.unlink('/ram');
    expect(gfs.exists('/ram')).toBe(false);
    expect(gfs.statfs().freeBlocks).toBe(free);
    expect(second.bytes()[0]).toBe(7);
    first.unmap();
    expect(gfs.statfs().freeBlocks).toBe(free);
    second.unmap();
    expect(gfs.statfs().freeBlocks).toBe(free + 3);
    expect(gfs.audit().problems).toEqual([]);
  });

  it('a garbage-collected mapping of an unlinked file frees its blocks too', async () => {
    const { fs: gfs } = t;
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 2 * B);
    let id = -1;
    const unmapped = mappingCollected(() => id);
    (() => {
      id = gfs.map('/ram').id;
    })();
    gfs.unlink('/ram');
    const free = gfs.statfs().freeBlocks;
    await collectUntil(unmapped);
    expect(gfs.statfs().freeBlocks).toBe(free + 2);
  });

  it('will not shrink a mapped file or unmount with live mappings (EBUSY)', () => {
    const { fs: gfs } = t;
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 3 * B);
    const mapping = gfs.map('/ram');
    expect(captureError(() => gfs.truncate('/ram', B))).toMatchObject({ code: 'EBUSY' });
    gfs.truncate('/ram', 5 * B); // growing is fine: the mapping keeps its range
    expect(captureError(() => gfs.unmount()).message).toContain('1 file mapping(s) are still live');
    mapping.unmap();
    gfs.truncate('/ram', B);
  });
});

describe.skipIf(skipReason(m.skip2M))('on a hugetlbfs pool', () => {
  it('a guest file maps onto 2 MiB pages in one mmap, and a fresh process remounts the same tree and bytes', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'fs');
    const pool = Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 64 * MiB });
    try {
      mkfs(pool);
      const gfs = mount(pool);
      gfs.mkdir('/vm0');
      gfs.create('/vm0/ram', { type: 'guest' });
      gfs.truncate('/vm0/ram', 32 * MiB);
      gfs.create('/vm0/state', { type: 'state' });
      gfs.write('/vm0/state', new TextEncoder().encode('rip=0xfff0'));
      const ram = gfs.map('/vm0/ram');
      expect(ram.mmapCalls).toBe(1);
      expect(ram.kernelPageSizes()).toEqual([2 * MiB]);
      ram.bytes().set([1, 2, 3], 32 * MiB - 3);
      const frames = ram.physicalFrames().map(String);
      ram.unmap();
      gfs.unmount();
      pool.close();
      const script = `
        const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
        const fs = g.mount(g.Pool.open(${JSON.stringify(poolPath)}));
        const ram = fs.map('/vm0/ram');
        const out = { tree: fs.readdir('/vm0').sort(), size: fs.stat('/vm0/ram').size, tail: Array.from(ram.bytes(32 * 1024 * 1024 - 3, 3)),
          state: new TextDecoder().decode(fs.read('/vm0/state')), frames: ram.physicalFrames().map(String), audit: fs.audit().problems };
        ram.unmap(); fs.unmount(); process.stdout.write(JSON.stringify(out));`;
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      expect(child.stderr).toBe('');
      expect(JSON.parse(child.stdout)).toEqual({
        tree: ['ram', 'state'],
        size: 32 * MiB,
        tail: [1, 2, 3],
        state: 'rip=0xfff0',
        frames,
        audit: [],
      });
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  });
});
