// The VMM prototype: a KVM guest whose RAM is a guestmemfs `guest` file and whose vCPU and device state live in a
// `state` file, so that a new VMM process can take it over (live update) without copying guest memory.
import { GuestmemfsError } from '../errors';
import type { Filesystem } from '../fs/filesystem';
import type { Mapping } from '../pool/mapping';
import { type DemoGuestOptions, KvmMachine, type PreparedVm } from './machine';

export interface VmmConfig {
  /** The guest RAM file (type guest) and the VMM state file (type state). */
  ramPath: string;
  statePath: string;
  ramSize: number;
}

/** Where a VMM keeps its guest's files: all a resuming VMM needs (the RAM's size is the RAM file's). */
export type VmmFiles = Pick<VmmConfig, 'ramPath' | 'statePath'>;

/** What the state file holds besides the vCPU blob. */
export interface SavedVmm {
  version: 1;
  /** COM1 output so far (the guest's console log). */
  serial: string;
  /** CLOCK_MONOTONIC ns when the vCPU stopped, for the blackout measurement. */
  stoppedAtNs: string;
  /** Anything else the caller wants carried over (timings, counters). */
  extra: Record<string, unknown>;
}

const STATE_MAGIC = 0x564d4d31; // "VMM1"

export class Vmm {
  readonly fs: Filesystem;
  readonly config: VmmConfig;
  readonly ram: Mapping;
  readonly machine: KvmMachine;
  /** COM1 output carried over from earlier VMM processes plus what this one saw. */
  serialLog = '';
  #running: Promise<string> | undefined;

  private constructor(fs: Filesystem, config: VmmConfig, ram: Mapping, machine: KvmMachine) {
    this.fs = fs;
    this.config = config;
    this.ram = ram;
    this.machine = machine;
  }

  /** Creates the guest's files, loads the demo guest and leaves it ready to start. */
  static boot(fs: Filesystem, config: VmmConfig, guest: DemoGuestOptions): Vmm {
    fs.create(config.ramPath, { type: 'guest' });
    fs.truncate(config.ramPath, config.ramSize);
    fs.create(config.statePath, { type: 'state' });
    const ram = fs.map(config.ramPath);
    const machine = KvmMachine.create(ram);
    machine.loadDemoGuest(guest);
    return new Vmm(fs, config, ram, machine);
  }

  /**
   * Takes over a guest another VMM process saved: maps the same RAM and restores the vCPU from the state file, into
   * `prepared` when the caller made the VM ahead of time.
   */
  static resume(fs: Filesystem, files: VmmFiles, prepared?: PreparedVm): { vmm: Vmm; saved: SavedVmm; timings: { mapMs: number; vcpuMs: number } } {
    const { saved, vcpu } = Vmm.readState(fs, files.statePath);
    const started = process.hrtime.bigint();
    const ram = fs.map(files.ramPath);
    const mapped = process.hrtime.bigint();
    const machine = KvmMachine.create(ram, prepared);
    machine.restoreState(vcpu);
    const restored = process.hrtime.bigint();
    const vmm = new Vmm(fs, { ...files, ramSize: ram.length }, ram, machine);
    vmm.serialLog = saved.serial;
    return { vmm, saved, timings: { mapMs: Number(mapped - started) / 1e6, vcpuMs: Number(restored - mapped) / 1e6 } };
  }

  static readState(fs: Filesystem, statePath: string): { saved: SavedVmm; vcpu: Uint8Array } {
    const bytes = fs.read(statePath);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length < 12 || view.getUint32(0, true) !== STATE_MAGIC) {
      throw new GuestmemfsError('EINVAL', `${statePath} holds no saved VMM state`, { path: statePath });
    }
    const jsonLength = view.getUint32(4, true);
    const vcpuLength = view.getUint32(8, true);
    if (12 + jsonLength + vcpuLength !== bytes.length) throw new GuestmemfsError('EUCLEAN', `${statePath}: saved VMM state is truncated`, { path: statePath });
    const saved = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + jsonLength))) as SavedVmm;
    return { saved, vcpu: bytes.slice(12 + jsonLength) };
  }

  /** Runs the vCPU (on a worker thread); resolves with 'halted' or 'paused'. */
  start(): Promise<string> {
    this.#running = this.machine.run();
    return this.#running;
  }

  /** Stops the vCPU and waits until it has stopped; returns the stop time (CLOCK_MONOTONIC ns). */
  async pause(): Promise<{ reason: string; stoppedAtNs: bigint }> {
    if (!this.#running) throw new GuestmemfsError('EINVAL', 'the guest is not running');
    this.machine.pause();
    const reason = await this.#running;
    this.#running = undefined;
    return { reason, stoppedAtNs: process.hrtime.bigint() };
  }

  /** COM1 output since the start of the guest (across VMM processes). */
  serial(): string {
    this.serialLog += this.machine.serial();
    return this.serialLog;
  }

  /** Writes the vCPU and device state into the state file (before the filesystem is serialised). */
  saveState(stoppedAtNs: bigint, extra: Record<string, unknown> = {}): void {
    // No pagemap read here: it would sit inside the blackout; the runners read frames outside it for their proof.
    const saved: SavedVmm = { version: 1, serial: this.serial(), stoppedAtNs: stoppedAtNs.toString(), extra };
    const json = new TextEncoder().encode(JSON.stringify(saved));
    const vcpu = this.machine.saveState();
    const bytes = new Uint8Array(12 + json.length + vcpu.length);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, STATE_MAGIC, true);
    view.setUint32(4, json.length, true);
    view.setUint32(8, vcpu.length, true);
    bytes.set(json, 12);
    bytes.set(vcpu, 12 + json.length);
    this.fs.truncate(this.config.statePath, 0);
    this.fs.write(this.config.statePath, bytes);
  }

  /** Lets go of the VM and the RAM mapping (the guest's memory stays in its file). */
  close(): void {
    this.machine.close();
    this.ram.unmap();
  }
}
