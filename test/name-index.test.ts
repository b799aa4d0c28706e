// The hashed name index against a Map model: random inserts, deletes and lookups across directories, through table
// growth and long probe runs, with non-ASCII names and names whose hashes collide.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hashStoredName, NameIndex } from '../lib/fs/name-index';

const encoder = new TextEncoder();

/** The inode table the index confirms hits against: each inode's parent and name bytes. */
class FakeInodes {
  readonly parents = new Map<number, number>();
  readonly names = new Map<number, Uint8Array>();
  parent(ino: number): number {
    return this.parents.get(ino) ?? 0;
  }
  nameBytes(ino: number): Uint8Array {
    return this.names.get(ino) ?? new Uint8Array(0);
  }
}

const nameArb = fc.oneof(
  { weight: 9, arbitrary: fc.integer({ min: 0, max: 1000 }).map((n) => `vm-${n}`) },
  { weight: 1, arbitrary: fc.constantFrom('é', 'ünïcode', '名前', '😀', 'a') },
);
const opArb = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), dir: fc.integer({ min: 1, max: 3 }), name: nameArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('get' as const), dir: fc.integer({ min: 1, max: 3 }), name: nameArb }) },
);

describe('name index', () => {
  it('agrees with a Map after every step, and lists exactly the indexed inodes', () => {
    let largest = 0;
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1000, maxLength: 2000, size: 'max' }), (ops) => {
        const inodes = new FakeInodes();
        const index = new NameIndex(inodes);
        const model = new Map<string, number>();
        let nextIno = 2;
        for (const step of ops) {
          if (step.op === 'set') {
            const key = `${step.dir}/${step.name}`;
            if (model.has(key)) continue; // the namespace never indexes a name twice in one directory
            const ino = nextIno++;
            inodes.parents.set(ino, step.dir);
            inodes.names.set(ino, encoder.encode(step.name));
            // Half the inserts come the way a mount makes them: by the hash of the stored bytes.
            if (ino % 2) index.set(step.dir, step.name, ino);
            else index.setHashed(step.dir, hashStoredName(encoder.encode(step.name)), ino);
            model.set(key, ino);
          } else if (step.op === 'delete') {
            const keys = [...model.keys()];
            if (keys.length === 0) continue;
            const key = keys[step.pick % keys.length]!;
            const slash = key.indexOf('/');
            index.delete(Number(key.slice(0, slash)), key.slice(slash + 1), model.get(key)!);
            model.delete(key);
          } else {
            expect(index.get(step.dir, step.name)).toBe(model.get(`${step.dir}/${step.name}`));
          }
          expect(index.size).toBe(model.size);
          largest = Math.max(largest, model.size);
        }
        for (const [key, ino] of model) {
          const slash = key.indexOf('/');
          expect(index.get(Number(key.slice(0, slash)), key.slice(slash + 1))).toBe(ino);
        }
        expect([...index.sortedWith([], nextIno)]).toEqual([...model.values()].sort((a, b) => a - b));
      }),
      { numRuns: 50 },
    );
    // Past the first table's 512 entries: the runs grew it and probed long clusters.
    expect(largest).toBeGreaterThan(512);
  });

  it('tells apart names whose hashes collide, and a name from the same name in another directory', () => {
    const inodes = new FakeInodes();
    const index = new NameIndex(inodes);
    // Every inode's name bytes say "x", but they are indexed under one hash: only the confirmation tells them apart.
    const hash = hashStoredName(encoder.encode('x'));
    for (let ino = 2; ino < 40; ino++) {
      inodes.parents.set(ino, 1 + (ino % 3));
      inodes.names.set(ino, encoder.encode(ino < 5 ? 'x' : `other-${ino}`));
      index.setHashed(1 + (ino % 3), hash, ino);
    }
    expect([1, 2, 3].map((dir) => index.get(dir, 'x'))).toEqual([3, 4, 2]);
    expect(index.get(1, 'y')).toBeUndefined();
    index.delete(1, 'x', 3);
    expect(index.get(1, 'x')).toBeUndefined();
    expect(index.get(2, 'x')).toBe(4);
    expect(index.size).toBe(37);
  });

  it('finds a name whose stored bytes are not UTF-8 (damage) by the string readdir shows for it', () => {
    const inodes = new FakeInodes();
    const index = new NameIndex(inodes);
    const stored = Uint8Array.of(0x80, 0x39);
    inodes.parents.set(2, 1);
    inodes.names.set(2, stored);
    index.setHashed(1, hashStoredName(stored), 2);
    expect(index.get(1, new TextDecoder().decode(stored))).toBe(2);
    expect(index.get(1, '9')).toBeUndefined();
  });
});
