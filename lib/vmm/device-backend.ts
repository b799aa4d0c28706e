// The demo device's backend, a process of its own as a vhost-user backend is: it pins and maps the guest's RAM, the
// IOMMU table and the device state (it owns none of the pool's metadata), and at a fixed rate takes buffers the guest
// posted, translates their device addresses through the IOMMU table and writes a record into each (sequence number,
// payload, checksum), then hands them back on the used ring. Its progress lives in the device state file, so a VMM
// that takes over the guest adopts the device as it is. It never stops for a live update; it stops when asked (the
// device state's stop word), or when no VMM holds the other end of its lifeline (fd 3) any more, and exits.
//
//   node device-backend.js <pool> <ramPath> <iommuPath> <devicePath> <recordsPerSecond>
import * as fs from 'node:fs';
import { pinFiles } from '../fs/external';
import { native } from '../native';
import { Pool } from '../pool/pool';
import { DEVICE, deviceStarved, deviceThroughput, FIELD, readDeviceState, readIommuTable, recordChecksum } from './device';

/** How long the backend naps between turns. */
const TURN_US = 100;
/**
 * Records one turn writes at most (a few hundred microseconds of work): behind schedule, it catches up over several
 * turns, never holding a CPU for long at its real-time priority.
 */
const MAX_BATCH = 32;
/** Its end of the lifeline whose other end every VMM of the run holds (update-common.ts, DEVICE_OWNER_FD_ENV). */
const LIFELINE_FD = 3;
/** Turns between looks at the lifeline: a few milliseconds, one poll(2) each. */
const LIFELINE_TURNS = 32;

function main(): void {
  const [poolPath, ramPath, iommuPath, devicePath, rateText] = process.argv.slice(2);
  const rate = Number(rateText);
  const pool = Pool.open(poolPath!);
  const { pin, files } = pinFiles(pool, [ramPath!, iommuPath!, devicePath!]);
  const [ram, iommu, device] = files.map((file) => pool.map(file.extents, { writable: true, populate: true }));
  const table = readIommuTable(iommu!, iommuPath!);
  readDeviceState(device!, devicePath!);
  const state = new DataView(device!.buffer);
  const buckets = deviceThroughput(device!);
  const starved = deviceStarved(device!);
  const window = ram!.bytes(0, DEVICE.windowEnd);
  const guest = new DataView(window.buffer, window.byteOffset, window.byteLength);
  const usedIndex = new Int32Array(window.buffer, window.byteOffset + DEVICE.used, 1);
  const availIndex = new Int32Array(window.buffer, window.byteOffset + DEVICE.avail, 1);
  const stopWord = new Int32Array(device!.buffer, FIELD.stopRequested, 1);
  const startedNs = process.hrtime.bigint();
  state.setUint32(FIELD.backendPid, process.pid, true);
  state.setBigUint64(FIELD.startedNs, startedNs, true);
  let nextAvail = Number(state.getBigUint64(FIELD.nextAvail, true));
  let used = Number(state.getBigUint64(FIELD.usedIndex, true));
  let seq = state.getBigUint64(FIELD.nextSeq, true) || 1n;
  let written = Number(state.getBigUint64(FIELD.written, true));
  let stalls = Number(state.getBigUint64(FIELD.stalls, true));
  const nap = new Int32Array(new SharedArrayBuffer(4));
  // Each turn is a few microseconds between naps: run it the moment it is due, whatever else the host runs (the
  // VMMs' start-up and teardown, busy vCPUs), so that the DMA keeps its pace. Without the privilege, as it is.
  try {
    native.setThreadPolicy('fifo');
  } catch {
    // an ordinary thread then, which the scheduler may delay by a time slice
  }
  fs.writeSync(1, `${JSON.stringify({ event: 'device-ready', pid: process.pid })}\n`);

  /** Guest-physical address of a device address, through the IOMMU table; -1 for one it does not map. */
  const translate = (deviceAddress: bigint): number => {
    const page = Number((deviceAddress - table.base) >> 12n);
    const entry = page >= 0 && page < table.pages.length ? table.pages[page]! : 0n;
    if ((entry & 1n) === 0n) return -1;
    return Number(entry & ~0xfffn) + Number(deviceAddress & 0xfffn);
  };

  for (let turn = 0; Atomics.load(stopWord, 0) === 0; turn++) {
    // Every VMM is gone (crashed, or killed): nobody will run this guest or stop this device, so stop now.
    if (turn % LIFELINE_TURNS === 0 && native.socketPeerClosed(LIFELINE_FD)) break;
    const now = process.hrtime.bigint();
    const due = Math.floor((Number(now - startedNs) / 1e9) * rate) - written;
    const posted = (Atomics.load(availIndex, 0) - nextAvail) >>> 0;
    const bucket = Math.min(buckets.length - 1, Math.floor(Number(now - startedNs) / 1e6));
    if (due > 0 && posted === 0) {
      stalls++;
      starved[bucket] = starved[bucket]! + 1;
    }
    const batch = Math.min(due, posted, MAX_BATCH);
    for (let taken = 0; taken < batch; taken++) {
      const id = guest.getUint32(DEVICE.avail + 0x40 + (nextAvail % DEVICE.queue) * 4, true);
      const descriptor = DEVICE.descriptors + (id % DEVICE.queue) * 16;
      const address = translate(guest.getBigUint64(descriptor, true));
      if (address < 0 || address + DEVICE.bufferBytes > DEVICE.windowEnd) throw new Error(`buffer ${id} has no valid device address`);
      const words = Array.from({ length: 6 }, (_, j) => (seq * 0x100000001b3n + BigInt(j) * 0x9e3779b97n) & 0xffffffffffffffffn);
      guest.setBigUint64(address, seq, true);
      words.forEach((word, j) => guest.setBigUint64(address + 8 + j * 8, word, true));
      guest.setBigUint64(address + 56, recordChecksum(seq, words), true);
      const slot = DEVICE.used + 0x40 + (used % DEVICE.queue) * 8;
      guest.setUint32(slot, id, true);
      guest.setUint32(slot + 4, DEVICE.bufferBytes, true);
      nextAvail = (nextAvail + 1) >>> 0;
      used = (used + 1) >>> 0;
      seq++;
      written++;
    }
    if (batch > 0) {
      // The record and its used entry first, then the index the guest polls (x86 keeps stores in order).
      Atomics.store(usedIndex, 0, used | 0);
      buckets[bucket] = buckets[bucket]! + batch;
    }
    state.setBigUint64(FIELD.nextAvail, BigInt(nextAvail), true);
    state.setBigUint64(FIELD.usedIndex, BigInt(used), true);
    state.setBigUint64(FIELD.nextSeq, seq, true);
    state.setBigUint64(FIELD.written, BigInt(written), true);
    state.setBigUint64(FIELD.stalls, BigInt(stalls), true);
    Atomics.wait(nap, 0, 0, TURN_US / 1000);
  }
  state.setUint32(FIELD.stopped, 1, true);
  native.futexWake(device!.id, FIELD.stopped);
  for (const mapping of [ram, iommu, device]) mapping!.unmap();
  pin.release();
  pool.close();
}

main();
