// The demo device (pkernfs's case): a backend process DMAs records into guest buffers through an IOMMU-like table in
// a state file, and keeps doing so while the VMM is live-updated in either mode; the guest's driver checks every
// record. Also the table's and the device state's formats, and what they refuse.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, mount, Pool } from '../lib/index';
import {
  adoptDevice,
  createDevice,
  DEVICE,
  DEVICE_HEADER,
  deviceThroughput,
  driverCounts,
  readDeviceState,
  recordChecksum,
} from '../lib/vmm/device';
import { runUpdatesAsync, type UpdateMode, updateArgv } from '../lib/vmm/launch';
import { demoGuestChecksum, kvmUnavailableReason } from '../lib/vmm/machine';
import { DEVICE_FILES } from '../lib/vmm/update-common';
import { captureError, machine, signalled, skipReason, uniquePath } from './helpers';
import { Lines } from './service-helpers';
import { smallFs, type TestFs } from './fs-helpers';

const m = machine();
const ramBytes = 32 * MiB;

describe('device formats', () => {
  let t: TestFs;
  beforeEach(() => {
    t = smallFs({ size: 16 * MiB, blockSize: 64 * KiB });
  });
  afterEach(() => t.close());

  it('a fresh device: every buffer posted with its device address, the table valid; a damaged table is refused', () => {
    t.fs.mkdir('/vm0');
    t.fs.create('/ram', { type: 'guest' });
    t.fs.truncate('/ram', 2 * MiB);
    const ram = t.fs.map('/ram');
    createDevice(t.fs, ram, DEVICE_FILES);
    const low = new DataView(ram.buffer, 0, DEVICE.windowEnd);
    expect(low.getUint32(DEVICE.avail, true)).toBe(DEVICE.queue);
    expect(low.getUint32(DEVICE.used, true)).toBe(0);
    expect(low.getBigUint64(DEVICE.descriptors + 5 * 16, true)).toBe(DEVICE.deviceAddressBase + BigInt(DEVICE.buffers + 5 * 64));
    ram.unmap();
    expect(adoptDevice(t.fs, DEVICE_FILES)).toMatchObject({ iommuPages: (DEVICE.windowEnd - DEVICE.windowStart) / 4096, written: 0 });
    // One translation changed behind the table's checksum: no device may use it.
    const table = t.fs.map(DEVICE_FILES.iommuPath);
    new DataView(table.buffer).setBigUint64(64 + 8, 0x12345001n, true);
    table.unmap();
    expect(captureError(() => adoptDevice(t.fs, DEVICE_FILES))).toMatchObject({ code: 'EUCLEAN', path: DEVICE_FILES.iommuPath });
    // A device state file that holds none.
    const state = t.fs.map(DEVICE_FILES.devicePath);
    new DataView(state.buffer).setUint32(0, 0, true);
    expect(captureError(() => readDeviceState(state, DEVICE_FILES.devicePath)).code).toBe('EINVAL');
    expect(deviceThroughput(state).byteOffset).toBe(DEVICE_HEADER);
    state.unmap();
  });

  it('record checksums are the driver’s: any changed word changes the sum', () => {
    const words = [1n, 2n, 3n, 4n, 5n, 6n];
    const sum = recordChecksum(7n, words);
    for (let index = 0; index < words.length; index++) {
      const changed = words.map((word, j) => (j === index ? word ^ 1n : word));
      expect(recordChecksum(7n, changed)).not.toBe(sum);
    }
    expect(recordChecksum(8n, words)).not.toBe(sum);
    expect(driverCounts('0000000000000010 0000000000000000 0000000000000001 0000000000000000\n')).toEqual({
      consumed: 16,
      lost: 0,
      duplicated: 1,
      corrupted: 0,
    });
    expect(driverCounts('garbage')).toBeNull();
  });
});

describe.skipIf(skipReason(m.skip2M || kvmUnavailableReason()))('a device whose DMA keeps running through live updates', () => {
  it.each(['exec', 'transfer'] as const)(
    '%s mode: the backend never stops, and the guest counts no lost, duplicated or corrupted record',
    async (mode: UpdateMode) => {
      const poolPath = uniquePath(m.hugetlbfs2M!, 'device');
      Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 96 * MiB }).close();
      try {
        // The driver (a vCPU of kvm-pvm here) takes about 12k records/s on an idle host, and under half that while the VMM's
        // main thread shares its CPU just before a pause (code cache, collection) on a slow day: well below that, the
        // guest keeps its buffers posted up to every pause.
        const records = 10_000;
        const guest = { steps: 300_000, seed: 21 };
        const run = await runUpdatesAsync(
          { mode, poolPath, ramBytes, ...guest, updates: 2, maxDelayMs: 300, vcpus: 2, device: { records, recordsPerSecond: 2_500 } },
          { env: { ...process.env, GUESTMEMFS_REHEARSAL_ROUNDS: '3' }, timeoutMs: 120_000 },
        );
        expect(run.stderr).toBe('');
        const ready = run.events.find((event) => event.event === 'device-ready')!;
        const updates = run.events.filter((event) => event.event === 'update');
        const done = run.events.at(-1)!;
        expect(updates).toHaveLength(2);
        const [worker, driver] = String(done.serial).split('\n');
        expect(done).toMatchObject({ event: 'done', reason: 'halted', sameFrames: true });
        expect(`${worker}`).toBe(demoGuestChecksum(ramBytes, { ...guest, seed: BigInt(guest.seed), deviceRecords: records }, 2));
        expect(driverCounts(driver!)).toEqual({ consumed: records, lost: 0, duplicated: 0, corrupted: 0 });
        // One backend throughout: each new VMM adopted its IOMMU table and state as that backend had them.
        let written = 0;
        for (const update of updates) {
          const device = update.device as { backendPid: number; written: number; iommuPages: number; stopped: boolean };
          expect(device).toMatchObject({ backendPid: ready.pid, iommuPages: 112, stopped: false });
          expect(device.written).toBeGreaterThan(written);
          written = device.written;
        }
        const final = done.device as { backendPid: number; written: number; stopped: boolean; startedNs: string };
        expect(final).toMatchObject({ backendPid: ready.pid, stopped: true });
        expect(final.written).toBeGreaterThanOrEqual(records);
        expect(final.written).toBeLessThanOrEqual(records + DEVICE.queue);
        if (mode === 'exec') {
          // An exec-mode blackout lasts tens of milliseconds: the device kept writing into posted buffers inside it.
          const pool = Pool.open(poolPath);
          const view = mount(pool, { readOnly: true });
          const mapping = pool.map(view.extents(DEVICE_FILES.devicePath), { writable: false, populate: true });
          view.unmount();
          const buckets = deviceThroughput(mapping);
          const started = BigInt(final.startedNs);
          for (const update of updates) {
            const [from, to] = (update.blackoutNs as string[]).map((ns) => Math.floor(Number(BigInt(ns) - started) / 1e6));
            const during = buckets.subarray(from! + 1, to).reduce((sum, count) => sum + count, 0);
            expect(during, `records written inside the ${update.blackoutMs as number} ms blackout`).toBeGreaterThan(0);
          }
          mapping.unmap();
          pool.close();
        }
      } finally {
        fs.rmSync(poolPath, { force: true });
      }
    },
    180_000,
  );

  it.each(['exec', 'transfer'] as const)(
    '%s mode: a backend whose VMMs are all gone (killed after an update) stops and exits by itself',
    async (mode: UpdateMode) => {
      const poolPath = uniquePath(m.hugetlbfs2M!, 'device-orphan');
      Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 96 * MiB }).close();
      let backend: number | undefined;
      try {
        // A guest that runs until it is stopped, updated once: then the VMM that runs it is killed, and nobody stops the device.
        const [node, ...args] = updateArgv({
          mode,
          poolPath,
          ramBytes,
          steps: 2 ** 40,
          seed: 5,
          updates: 1,
          maxDelayMs: 50,
          vcpus: 2,
          device: { records: 10_000_000, recordsPerSecond: 2_500 },
        });
        const vmm = spawn(node!, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, GUESTMEMFS_REHEARSAL_ROUNDS: '1' } });
        const lines = new Lines(vmm.stdout);
        const ready = JSON.parse(await lines.next((line) => line.includes('"device-ready"'))) as { pid: number };
        backend = ready.pid;
        const update = JSON.parse(await lines.next((line) => line.includes('"event":"update"'))) as { pid: number; device: object };
        expect(update.device).toMatchObject({ backendPid: ready.pid, stopped: false });
        expect(running(ready.pid)).toBe(true);
        process.kill(update.pid, 'SIGKILL'); // the VMM running the guest now (in transfer mode, the successor)
        await signalled(() => !running(update.pid));
        // Its lifeline's last copy closed with it: the backend notices within a few turns and exits. (The bound only
        // ends a failing wait, so that the finally below still runs.)
        let exited = false;
        const giveUpAt = Date.now() + 60_000;
        await signalled(() => (exited = !running(ready.pid)) || Date.now() > giveUpAt);
        expect(exited, `the backend (pid ${ready.pid}) still runs with no VMM left`).toBe(true);
      } finally {
        // Should it fail, a backend left running would keep its huge pages, and the hugetlbfs mount busy, for good.
        if (backend !== undefined && running(backend)) process.kill(backend, 'SIGKILL');
        fs.rmSync(poolPath, { force: true });
      }
    },
    120_000,
  );

  it('refuses a device on a guest with no vCPU to drive it', async () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'device-1');
    Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 64 * MiB }).close();
    try {
      const run = await runUpdatesAsync(
        {
          mode: 'exec',
          poolPath,
          ramBytes,
          steps: 1000,
          seed: 1,
          updates: 0,
          maxDelayMs: 0,
          vcpus: 1,
          device: { records: 10, recordsPerSecond: 100 },
        },
        { timeoutMs: 60_000 },
      );
      expect(run.status).not.toBe(0);
      expect(run.stderr).toMatch(/EINVAL: the demo device needs a vCPU of its own/);
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  });
});

/** Whether a process still runs: its /proc entry is there and it is not a zombie (init here reaps late). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
