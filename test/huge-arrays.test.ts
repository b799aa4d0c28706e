// Typed arrays on transparent huge pages of their own (the name index's table, a handover's live list): zeroed,
// given back at release or collection, detached then, and the name index that lives on them, past 100,000 entries.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { hashStoredName, NameIndex } from '../lib/fs/name-index';
import { native } from '../lib/native';
import { HUGE_ARRAY_BYTES, hugeArray, releaseHugeArray } from '../lib/pool/anonymous';
import { collectUntil, signalled } from './helpers';

interface Vma {
  range: string;
  bytes: number;
  advisedHuge: boolean;
  anonHugeKiB: number;
}

/** This process's mappings, from /proc/self/smaps: each one's size, MADV_HUGEPAGE advice ("hg") and huge pages. */
function vmas(): Vma[] {
  const out: Vma[] = [];
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (head)
      out.push({
        range: `${head[1]}-${head[2]}`,
        bytes: Number(BigInt(`0x${head[2]}`) - BigInt(`0x${head[1]}`)),
        advisedHuge: false,
        anonHugeKiB: 0,
      });
    else if (line.startsWith('VmFlags:')) out.at(-1)!.advisedHuge = line.split(' ').includes('hg');
    else if (line.startsWith('AnonHugePages:')) out.at(-1)!.anonHugeKiB = Number(/(\d+)/.exec(line)![1]);
  }
  return out;
}

describe('huge arrays', () => {
  it('below the threshold come from the heap; from it up, from a mapping of their own, zeroed and writable', () => {
    const before = native.liveMappings();
    const small = hugeArray(Int32Array, HUGE_ARRAY_BYTES / 4 - 1);
    expect(native.liveMappings()).toBe(before);
    releaseHugeArray(small); // nothing to give back: the array stays usable
    small[0] = 7;
    expect(small[0]).toBe(7);

    const large = hugeArray(Uint32Array, 300_000);
    expect(native.liveMappings()).toBe(before + 1);
    expect(large.length).toBe(300_000);
    expect(large.every((value) => value === 0)).toBe(true);
    large.fill(0xdeadbeef);
    expect(large[299_999]).toBe(0xdeadbeef);
    releaseHugeArray(large);
    expect(native.liveMappings()).toBe(before);
    // Detached, not dangling: reads see nothing, writes go nowhere, and a second release is harmless.
    expect(large.length).toBe(0);
    expect(large[0]).toBeUndefined();
    large[0] = 1;
    releaseHugeArray(large);
  });

  it('are 2 MiB-aligned mappings advised MADV_HUGEPAGE, on a transparent huge page where the kernel has them', () => {
    const before = new Set(vmas().map((vma) => vma.range));
    const table = hugeArray(Int32Array, 512 * 1024); // 2 MiB
    table.fill(1);
    const added = vmas().filter((vma) => !before.has(vma.range) && vma.advisedHuge);
    expect(added).toHaveLength(1);
    expect(added[0]!.bytes).toBe(2 * 1024 * 1024);
    expect(BigInt(`0x${added[0]!.range.split('-')[0]}`) % (2n * 1024n * 1024n)).toBe(0n);
    if (fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[never]'))
      process.stdout.write('not checked: transparent huge pages are disabled on this machine (enabled=never)\n');
    else expect(added[0]!.anonHugeKiB).toBe(2048);
    releaseHugeArray(table);
  });

  it('give their memory back when collected without a release', async () => {
    const before = native.liveMappings();
    (() => {
      hugeArray(Int32Array, 200_000)[0] = 1;
    })();
    expect(native.liveMappings()).toBe(before + 1);
    await collectUntil(signalled(() => native.liveMappings() === before));
  });
});

describe('the name index on a huge table', () => {
  it('holds 120,000 entries, agrees with a Map, lists them, and is empty and usable after release', () => {
    const encoder = new TextEncoder();
    const names = new Map<number, Uint8Array>();
    const parents = new Map<number, number>();
    const index = new NameIndex({ nameBytes: (ino) => names.get(ino)!, parent: (ino) => parents.get(ino)! });
    const mappingsBefore = native.liveMappings();
    for (let ino = 2; ino < 120_002; ino++) {
      const dir = 1 + (ino % 3);
      names.set(ino, encoder.encode(`vm-${ino}`));
      parents.set(ino, dir);
      index.setHashed(dir, hashStoredName(names.get(ino)!), ino);
    }
    expect(native.liveMappings()).toBe(mappingsBefore + 1); // one table: each grown one was given back
    for (let ino = 2; ino < 120_002; ino += 2) index.delete(parents.get(ino)!, `vm-${ino}`, ino);
    for (let ino = 2; ino < 120_002; ino += 997) {
      expect(index.get(parents.get(ino)!, `vm-${ino}`)).toBe(ino % 2 === 0 ? undefined : ino);
      expect(index.get(parents.get(ino)! === 1 ? 2 : 1, `vm-${ino}`)).toBeUndefined();
    }
    const listed = index.sortedWith([1], 120_002);
    expect(listed.length).toBe(60_001);
    expect(listed[0]).toBe(1);
    expect(listed.every((ino, at) => at === 0 || (ino % 2 === 1 && ino > listed[at - 1]!))).toBe(true);
    index.release();
    expect(native.liveMappings()).toBe(mappingsBefore);
    expect(index.size).toBe(0);
    expect(index.get(parents.get(3)!, 'vm-3')).toBeUndefined();
    index.set(1, 'vm-3', 3);
    expect(index.get(parents.get(3)!, 'vm-3')).toBe(3);
  });
});
