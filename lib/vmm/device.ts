// The demo device, pkernfs's case for putting device state in the filesystem: a virtqueue-style ring in guest RAM that
// a backend process (device-backend.ts, as a vhost-user backend) fills with records, finding the guest's buffers
// through an IOMMU-like table (device address -> guest-physical). The table and the device's own state are `state`
// files, so the device keeps doing DMA while the VMM is replaced, and each new VMM adopts both.
//
// IOMMU table file: u32 magic "IOMU", u16 version 1, u16 page shift (12), u64 device-address base, u32 entries, u32
// CRC-32 of the entries; from byte 64, one u64 per 4 KiB page: its guest-physical address | 1 (valid).
// Device state file: u32 magic "DEV1", u32 version 1, u32 backend pid, u32 stop requested, u32 stopped, u32 queue
// size, u64 next available entry, u64 used index, u64 next sequence number, u64 records written, u64 stalls (no
// buffer posted), u64 start (CLOCK_MONOTONIC ns); from byte 128, one u32 per millisecond since the start: records
// written in it; after those, one u32 per millisecond: the backend's turns in it that found records due but no buffer
// posted (the guest, not the device, held the DMA up then).
import { GuestmemfsError } from '../errors';
import { crc32 } from '../checksum';
import type { Filesystem } from '../fs/filesystem';
import type { Mapping } from '../pool/mapping';
import { MiB } from '../units';

/** Guest-physical layout, as guest/guest.S's driver has it. */
export const DEVICE = {
  queue: 1024,
  avail: 0x20000,
  used: 0x28000,
  descriptors: 0x38000,
  buffers: 0x80000,
  bufferBytes: 64,
  /** Where the driver leaves its counts: consumed, lost, duplicated, corrupted (u64 each). */
  counts: 0x1f000,
  /** Device addresses of the window are guest-physical + this. */
  deviceAddressBase: 2n ** 32n,
  /** The guest-physical range the IOMMU table maps: rings, descriptors and buffers. */
  windowStart: 0x20000,
  windowEnd: 0x90000,
} as const;

const IOMMU_MAGIC = 0x554d4f49; // "IOMU"
const DEVICE_MAGIC = 0x31564544; // "DEV1"
const PAGE_SHIFT = 12;
const IOMMU_HEADER = 64;
export const DEVICE_HEADER = 128;
/** Milliseconds of per-millisecond throughput the device state keeps (beyond them the last bucket counts on). */
const BUCKETS = 240_000;
export const DEVICE_STATE_BYTES = DEVICE_HEADER + 2 * BUCKETS * 4;

export interface DeviceFiles {
  iommuPath: string;
  devicePath: string;
}

/** The device state's fields, by byte offset. */
export const FIELD = {
  magic: 0,
  version: 4,
  backendPid: 8,
  stopRequested: 12,
  stopped: 16,
  queue: 20,
  nextAvail: 24,
  usedIndex: 32,
  nextSeq: 40,
  written: 48,
  stalls: 56,
  startedNs: 64,
} as const;

export interface DeviceStats {
  backendPid: number;
  written: number;
  stalls: number;
  startedNs: bigint;
  stopped: boolean;
}

/** A record's checksum, as the guest's driver computes it: h = seq; h = rol(h ^ w, 17) * golden for each word. */
export function recordChecksum(seq: bigint, words: readonly bigint[]): bigint {
  const mask = (1n << 64n) - 1n;
  let h = seq;
  for (const word of words) {
    h ^= word;
    h = ((h << 17n) | (h >> 47n)) & mask;
    h = (h * 0x9e3779b97f4a7c15n) & mask;
  }
  return h;
}

/**
 * Sets the device up at boot: the IOMMU table and device state files, and in guest RAM the descriptors (device
 * addresses of the buffers) with every buffer posted on the available ring.
 */
export function createDevice(fs: Filesystem, ram: Mapping, files: DeviceFiles): void {
  fs.create(files.iommuPath, { type: 'state' });
  fs.truncate(files.iommuPath, 2 * MiB);
  fs.create(files.devicePath, { type: 'state' });
  fs.truncate(files.devicePath, DEVICE_STATE_BYTES);
  const iommu = fs.map(files.iommuPath);
  const pages = (DEVICE.windowEnd - DEVICE.windowStart) >> PAGE_SHIFT;
  const view = new DataView(iommu.buffer);
  const entries = new BigUint64Array(iommu.buffer, IOMMU_HEADER, pages);
  for (let page = 0; page < pages; page++) entries[page] = BigInt(DEVICE.windowStart + (page << PAGE_SHIFT)) | 1n;
  view.setUint16(4, 1, true);
  view.setUint16(6, PAGE_SHIFT, true);
  view.setBigUint64(8, DEVICE.deviceAddressBase + BigInt(DEVICE.windowStart), true);
  view.setUint32(16, pages, true);
  view.setUint32(20, crc32(new Uint8Array(iommu.buffer, IOMMU_HEADER, pages * 8)), true);
  view.setUint32(0, IOMMU_MAGIC, true); // last: a table is whole once it has its magic
  iommu.unmap();
  const device = fs.map(files.devicePath);
  const state = new DataView(device.buffer);
  state.setUint32(FIELD.version, 1, true);
  state.setUint32(FIELD.queue, DEVICE.queue, true);
  state.setUint32(FIELD.magic, DEVICE_MAGIC, true);
  device.unmap();
  const window = ram.bytes(0, DEVICE.windowEnd);
  const low = new DataView(window.buffer, window.byteOffset, window.byteLength);
  for (let id = 0; id < DEVICE.queue; id++) {
    const descriptor = DEVICE.descriptors + id * 16;
    low.setBigUint64(descriptor, DEVICE.deviceAddressBase + BigInt(DEVICE.buffers + id * DEVICE.bufferBytes), true);
    low.setUint32(descriptor + 8, DEVICE.bufferBytes, true);
    low.setUint32(DEVICE.avail + 0x40 + id * 4, id, true);
  }
  low.setUint32(DEVICE.used, 0, true);
  low.setUint32(DEVICE.avail, DEVICE.queue, true);
}

/** The IOMMU table's translations (page number from the base -> guest-physical), checked; EUCLEAN if damaged. */
export function readIommuTable(mapping: Mapping, path: string): { base: bigint; pages: BigUint64Array } {
  const view = new DataView(mapping.buffer);
  if (view.getUint32(0, true) !== IOMMU_MAGIC || view.getUint16(4, true) !== 1 || view.getUint16(6, true) !== PAGE_SHIFT) {
    throw new GuestmemfsError('EINVAL', `${path} is not an IOMMU table of version 1 with 4 KiB pages`, { path });
  }
  const count = view.getUint32(16, true);
  if (IOMMU_HEADER + count * 8 > mapping.length) throw new GuestmemfsError('EUCLEAN', `${path}: the IOMMU table is truncated`, { path });
  if (crc32(new Uint8Array(mapping.buffer, IOMMU_HEADER, count * 8)) !== view.getUint32(20, true)) {
    throw new GuestmemfsError('EUCLEAN', `${path}: the IOMMU table fails its checksum; the device must not use it`, { path });
  }
  return { base: view.getBigUint64(8, true), pages: new BigUint64Array(mapping.buffer, IOMMU_HEADER, count) };
}

/** The device's state, checked; EINVAL if the file holds none. */
export function readDeviceState(mapping: Mapping, path: string): DeviceStats {
  const view = new DataView(mapping.buffer);
  if (view.getUint32(FIELD.magic, true) !== DEVICE_MAGIC || view.getUint32(FIELD.version, true) !== 1) {
    throw new GuestmemfsError('EINVAL', `${path} holds no device state of version 1`, { path });
  }
  return {
    backendPid: view.getUint32(FIELD.backendPid, true),
    written: Number(view.getBigUint64(FIELD.written, true)),
    stalls: Number(view.getBigUint64(FIELD.stalls, true)),
    startedNs: view.getBigUint64(FIELD.startedNs, true),
    stopped: view.getUint32(FIELD.stopped, true) === 1,
  };
}

/** Records the device wrote in each millisecond since it started. */
export function deviceThroughput(mapping: Mapping): Uint32Array {
  return new Uint32Array(mapping.buffer, DEVICE_HEADER, BUCKETS);
}

/** Turns of the backend in each millisecond that had records due and no buffer to put them in. */
export function deviceStarved(mapping: Mapping): Uint32Array {
  return new Uint32Array(mapping.buffer, DEVICE_HEADER + BUCKETS * 4, BUCKETS);
}

/**
 * What a VMM taking over the guest does with the device: checks its IOMMU table and state (the backend keeps using
 * both meanwhile) and reports it.
 */
export function adoptDevice(fs: Filesystem, files: DeviceFiles): DeviceStats & { iommuPages: number } {
  const iommu = fs.map(files.iommuPath, { writable: false });
  const device = fs.map(files.devicePath, { writable: false });
  try {
    const table = readIommuTable(iommu, files.iommuPath);
    return { ...readDeviceState(device, files.devicePath), iommuPages: table.pages.length };
  } finally {
    iommu.unmap();
    device.unmap();
  }
}

/** The driver's counts, from its COM1 line: consumed, lost, duplicated, corrupted. */
export function driverCounts(line: string): { consumed: number; lost: number; duplicated: number; corrupted: number } | null {
  const match = /^([0-9a-f]{16}) ([0-9a-f]{16}) ([0-9a-f]{16}) ([0-9a-f]{16})$/.exec(line.trim());
  if (!match) return null;
  const [consumed, lost, duplicated, corrupted] = match.slice(1).map((hex) => Number.parseInt(hex, 16));
  return { consumed: consumed!, lost: lost!, duplicated: duplicated!, corrupted: corrupted! };
}
