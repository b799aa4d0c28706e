// Consumers of a file's memory in other processes, through `guestmemfs mount`: a shrink, a punch and the release of an
// unlinked file wait for their acknowledgement; a consumer that goes counts as one that let go; get_pfn; errors in
// Node's shape; and registrations that outlive the service's own live update.
import * as fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, mkfs, Pool } from '../lib/index';
import { connect, type ServiceClient } from '../lib/service/client';
import type { RemoteNotifier } from '../lib/service/remote-notifier';
import { captureRejection, skipReason, uniquePath } from './helpers';
import { runtimeDirectory, type RunningService, startService } from './service-helpers';

const B = 64 * KiB;
let poolPath: string;
let runtime: string;
let service: RunningService;
let client: ServiceClient;
/** A second connection, to look while `client` waits on a change (requests on one connection are answered in order). */
let observer: ServiceClient;
const notifiers: RemoteNotifier[] = [];

beforeEach(async () => {
  poolPath = uniquePath('/dev/shm', 'guestmemfs-notifier');
  const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 8 * MiB });
  mkfs(pool, { blockSize: B });
  pool.close();
  runtime = runtimeDirectory();
  service = await startService(poolPath, runtime);
  client = await connect(service.socket);
  observer = await connect(service.socket);
});

afterEach(async () => {
  for (const notifier of notifiers.splice(0)) notifier.unregister();
  client.close();
  observer.close();
  if (service.child.exitCode === null && service.child.signalCode === null) {
    service.child.kill('SIGKILL');
    await service.exited;
  }
  fs.rmSync(poolPath, { force: true });
  fs.rmSync(runtime, { recursive: true, force: true });
});

/** A remote consumer whose acknowledgements the test releases one at a time. */
async function heldConsumer(path: string, flags = 0) {
  const told: Array<{ start: number; end: number; release: () => void }> = [];
  const arrivals: Array<() => void> = [];
  let ended = false;
  const notifier = await client.registerNotifier(
    path,
    {
      invalidate: (start, end) =>
        new Promise<void>((release) => {
          told.push({ start, end, release });
          arrivals.shift()?.();
        }),
      ended: () => (ended = true),
    },
    flags,
  );
  notifiers.push(notifier);
  return {
    notifier,
    told,
    ended: () => ended,
    /** Resolves when the consumer has been told its next invalidation. */
    nextTold: () => new Promise<void>((resolve) => arrivals.push(resolve)),
  };
}

/** Whether a promise has settled by now (after the microtasks and I/O callbacks already queued have run). */
async function settledYet(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await observer.info(); // one round trip to the service: anything it had already answered has arrived
  return settled;
}

describe('remote consumers through the mount service', () => {
  it('a shrink waits for the consumer to let go, then goes ahead', async () => {
    await client.create('/f');
    await client.truncate('/f', 4 * B);
    const consumer = await heldConsumer('/f');
    const told = consumer.nextTold();
    const shrinking = client.truncate('/f', B);
    await told;
    expect(consumer.told.map(({ start, end }) => [start, end])).toEqual([[B, 4 * B]]);
    expect(await settledYet(shrinking)).toBe(false);
    expect((await observer.stat('/f')).size).toBe(4 * B);
    // While it waits, the file is busy: nothing else may change it under the consumer's feet.
    expect((await captureRejection(observer.truncate('/f', 8 * B))).code).toBe('EBUSY');
    consumer.told[0]!.release();
    await shrinking;
    expect((await client.stat('/f')).size).toBe(B);
  });

  it('a punch waits for the consumer too, and the range then reads as zeros', async () => {
    await client.create('/p');
    await client.write('/p', new Uint8Array(3 * B).fill(6));
    const consumer = await heldConsumer('/p');
    const told = consumer.nextTold();
    const punching = client.punch('/p', B, B);
    await told;
    expect(consumer.told.map(({ start, end }) => [start, end])).toEqual([[B, 2 * B]]);
    expect((await observer.read('/p', B, 1))[0]).toBe(6);
    consumer.told[0]!.release();
    await punching;
    const bytes = await client.read('/p');
    expect([bytes[0], bytes[B], bytes[2 * B - 1], bytes[2 * B]]).toEqual([6, 0, 0, 6]);
    expect((await captureRejection(client.punch('/p', 1, B))).code).toBe('EINVAL');
  });

  it('an unlinked file keeps its blocks until the consumer acknowledges, and the registration then ends', async () => {
    await client.create('/u');
    await client.truncate('/u', 3 * B);
    const consumer = await heldConsumer('/u');
    const free = (await client.statfs()).freeBlocks;
    const told = consumer.nextTold();
    await client.unlink('/u');
    await told;
    expect(consumer.told.map(({ start, end }) => [start, end])).toEqual([[0, 3 * B]]);
    expect((await observer.statfs()).freeBlocks).toBe(free);
    consumer.told[0]!.release();
    await consumer.notifier.ended;
    expect(consumer.ended()).toBe(true);
    expect((await client.statfs()).freeBlocks).toBe(free + 3);
  });

  it('a consumer that goes away counts as one that let go', async () => {
    await client.create('/g');
    await client.truncate('/g', 2 * B);
    const consumer = await heldConsumer('/g');
    const told = consumer.nextTold();
    const shrinking = client.truncate('/g', 0);
    await told;
    consumer.notifier.unregister();
    await shrinking;
    expect((await client.stat('/g')).size).toBe(0);
    expect(consumer.ended()).toBe(false); // unregister() is not an ending the consumer must hear of
  });

  it.skipIf(skipReason(process.getuid?.() === 0 ? '' : 'get_pfn needs root'))(
    'get_pfn through the service gives the frames a client mapping of the file sees',
    async () => {
      await client.create('/pfn');
      await client.truncate('/pfn', 2 * B);
      const consumer = await heldConsumer('/pfn');
      const mapping = await client.map('/pfn');
      for (const offset of [0, B + 4 * KiB]) {
        const frame = await consumer.notifier.getPfn(offset);
        expect(frame).toEqual({ pfn: mapping.physicalFrames(offset, 4 * KiB)[0], order: 0 });
      }
      const error = await captureRejection(consumer.notifier.getPfn(2 * B));
      expect(error).toMatchObject({ code: 'EINVAL', syscall: 'get_pfn', path: '/pfn' });
      mapping.unmap();
    },
  );

  it('a consumer that never acknowledges fails the change with ETIMEDOUT, and nothing changes', async () => {
    // A service whose consumers get 300 ms, instead of the 10 s a test would wait for otherwise (one owner of the pool
    // at a time: the first goes, and the new one recovers the pool).
    service.child.kill('SIGKILL');
    await service.exited;
    const quick = await startService(poolPath, runtime, [], { GUESTMEMFS_ACKNOWLEDGE_TIMEOUT_MS: '300' });
    const other = await connect(quick.socket);
    try {
      await other.create('/t');
      await other.truncate('/t', 2 * B);
      const silent = await other.registerNotifier('/t', { invalidate: () => new Promise<void>(() => {}) });
      notifiers.push(silent);
      const error = await captureRejection(other.truncate('/t', B));
      expect(error).toMatchObject({ code: 'ETIMEDOUT', syscall: 'ftruncate', path: '/t' });
      expect(error.message).toMatch(/consumer pid \d+ \(uid 0\) did not acknowledge its invalidation/);
      expect((await other.stat('/t')).size).toBe(2 * B);
    } finally {
      other.close();
      quick.child.kill('SIGKILL');
      await quick.exited;
    }
  });

  it('refuses a missing file, a directory and bad flags in Node’s shape, and a consumer without invalidate', async () => {
    await client.mkdir('/d');
    await client.create('/f');
    expect(await captureRejection(client.registerNotifier('/nope', { invalidate: () => {} }))).toMatchObject({
      code: 'ENOENT',
      syscall: 'memfile_register_notifier',
      path: '/nope',
    });
    expect((await captureRejection(client.registerNotifier('/d', { invalidate: () => {} }))).code).toBe('EISDIR');
    expect((await captureRejection(client.registerNotifier('/f', { invalidate: () => {} }, 64))).code).toBe('EINVAL');
    expect(() => client.registerNotifier('/f', {} as never)).toThrow(TypeError);
  });

  it('registrations outlive the service’s own live update: a later shrink still waits for the consumer', async () => {
    await client.create('/l');
    await client.truncate('/l', 2 * B);
    const consumer = await heldConsumer('/l');
    const before = consumer.notifier.id;
    service.child.kill('SIGHUP');
    await service.stdout.next((line) => line.includes('live-updated'));
    const told = consumer.nextTold();
    const shrinking = client.truncate('/l', B);
    await told;
    expect(await settledYet(shrinking)).toBe(false);
    consumer.told[0]!.release();
    await shrinking;
    expect((await client.stat('/l')).size).toBe(B);
    expect(consumer.ended()).toBe(false);
    expect(typeof before).toBe('number');
  });
});
