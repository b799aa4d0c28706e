// A KVM virtual machine whose RAM is a guestmemfs guest file mapping: long-mode setup, the demo guest, run and pause,
// and the vCPU state save/restore a live update carries across processes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import { native, packageRoot } from '../native';
import type { Mapping } from '../pool/mapping';
import { GiB, MiB } from '../units';

/** Guest-physical layout of the demo guest. */
export const GUEST = {
  code: 0x1000,
  pml4: 0x2000,
  pdpt: 0x3000,
  /** One page directory per GiB, from here on. */
  pageDirectories: 0x4000,
  /** The gate: the guest sets the first word on arriving at its gate step and waits for the VMM to set the second. */
  gateArrived: 0x800,
  gateRelease: 0x808,
  /** Everything from here to the end of RAM is the guest's work area. */
  workArea: 1 * MiB,
  /** RAM the identity page tables can cover (8 page directories below the work area). */
  maxRam: 8 * GiB,
} as const;

const PRESENT = 1n;
const WRITABLE = 2n;
const HUGE = 1n << 7n;

export interface DemoGuestOptions {
  /** Read-modify-write steps before the guest prints its checksum and halts. */
  steps: number;
  seed: bigint;
  /** Stop at this step (1 or more) until releaseGate(): a point a test pauses the guest at on the guest's own signal. */
  gateAtStep?: number;
}

let kvmFd: number | undefined;

/** /dev/kvm, opened once per process (and closed with it). */
export function kvm(): number {
  kvmFd ??= native.kvmOpen();
  return kvmFd;
}

/** Why /dev/kvm cannot be used here, or '' when it can. */
export function kvmUnavailableReason(): string {
  try {
    kvm();
    return '';
  } catch (error) {
    return `/dev/kvm is not usable here: ${(error as Error).message}`;
  }
}

/** The flat binary assembled from guest/guest.S by `npm run build:guest`. */
export function demoGuestCode(): Uint8Array {
  const file = path.join(packageRoot(), 'build', 'guest.bin');
  if (!fs.existsSync(file))
    throw new GuestmemfsError('ENOENT', `the demo guest is not built at ${file}: run \`npm run build:guest\` (needs binutils)`, {
      path: file,
    });
  return fs.readFileSync(file);
}

/**
 * A VM and its vCPU, and optionally its guest RAM already registered with KVM: everything of a machine that does not
 * depend on the guest's saved state, made before the guest pauses.
 */
export interface PreparedVm {
  readonly vm: number;
  readonly vcpu: number;
  /** Guest RAM registered as memory slot 0 ahead of time (a premapFile() mapping), if any. */
  readonly ram: Mapping | undefined;
  used: boolean;
}

/**
 * Creates a VM and its vCPU and, given a mapping of guest RAM, registers it with KVM now: with shadow paging the
 * kernel sizes per-page tracking for the whole slot then, about 0.6 ms per GiB here.
 */
export function prepareVm(ram?: Mapping): PreparedVm {
  if (ram && ram.length > GUEST.maxRam)
    throw new GuestmemfsError('EINVAL', `guest RAM of ${ram.length} bytes exceeds the ${GUEST.maxRam}-byte limit of the demo page tables`);
  const vm = native.kvmCreateVm(kvm());
  try {
    const vcpu = native.kvmCreateVcpu(kvm(), vm, 0);
    if (ram) native.kvmSetMemory(vm, 0, 0, ram.id, 0, ram.length);
    return { vm, vcpu, ram, used: false };
  } catch (error) {
    native.fdClose(vm);
    throw error;
  }
}

export class KvmMachine {
  readonly vm: number;
  readonly vcpu: number;
  readonly ram: Mapping;
  #closed = false;
  #slotBytes: number;

  private constructor(vm: number, vcpu: number, ram: Mapping) {
    this.vm = vm;
    this.vcpu = vcpu;
    this.ram = ram;
    this.#slotBytes = ram.length;
  }

  /**
   * A VM with one vCPU whose guest-physical RAM [0, ram.length) is the mapping itself (no copy). `prepared` is a VM made
   * earlier by prepareVm(), so that a successor VMM can create it (and register the RAM it premapped) before the guest
   * pauses, outside the blackout. A prepared VM holding other RAM than `ram` is closed and a fresh one made.
   */
  static create(ram: Mapping, prepared?: PreparedVm): KvmMachine {
    if (ram.length > GUEST.maxRam)
      throw new GuestmemfsError(
        'EINVAL',
        `guest RAM of ${ram.length} bytes exceeds the ${GUEST.maxRam}-byte limit of the demo page tables`,
      );
    if (prepared?.used) throw new GuestmemfsError('EINVAL', 'this prepared VM already has guest RAM: prepare one VM per machine');
    if (prepared && prepared.ram !== undefined && prepared.ram !== ram) {
      // KVM cannot move a memory slot to other memory in place; a fresh VM is as quick as deleting and re-adding it.
      prepared.used = true;
      native.kvmCloseVcpu(prepared.vcpu);
      native.fdClose(prepared.vm);
      prepared = undefined;
    }
    const vm = prepared ?? prepareVm(ram);
    vm.used = true;
    if (prepared && prepared.ram === undefined) native.kvmSetMemory(vm.vm, 0, 0, ram.id, 0, ram.length);
    return new KvmMachine(vm.vm, vm.vcpu, ram);
  }

  /** Writes the demo guest and identity page tables into RAM and points the vCPU at it in 64-bit mode. */
  loadDemoGuest(options: DemoGuestOptions): void {
    const low = this.ram.bytes(0, GUEST.workArea);
    low.fill(0);
    low.set(demoGuestCode(), GUEST.code);
    const view = new DataView(low.buffer, low.byteOffset, low.byteLength);
    const gibs = Math.ceil(this.ram.length / GiB);
    view.setBigUint64(GUEST.pml4, BigInt(GUEST.pdpt) | PRESENT | WRITABLE, true);
    for (let g = 0; g < gibs; g++) {
      const directory = GUEST.pageDirectories + g * 0x1000;
      view.setBigUint64(GUEST.pdpt + g * 8, BigInt(directory) | PRESENT | WRITABLE, true);
      for (let entry = 0; entry < 512; entry++) {
        view.setBigUint64(
          directory + entry * 8,
          (BigInt(g) * BigInt(GiB) + BigInt(entry) * BigInt(2 * MiB)) | PRESENT | WRITABLE | HUGE,
          true,
        );
      }
    }
    native.kvmEnterLongMode(this.vcpu, GUEST.pml4);
    const regs = native.kvmGetRegs(this.vcpu);
    regs.fill(0n);
    regs[4] = BigInt((this.ram.length - GUEST.workArea) / 8); // rsi: words in the work area
    regs[5] = BigInt(GUEST.workArea); // rdi: the work area
    regs[3] = BigInt(options.steps); // rdx: steps
    regs[8] = options.seed; // r8: seed
    regs[15] = BigInt(options.gateAtStep ?? 0); // r15: the step to wait at
    regs[6] = BigInt(GUEST.code); // rsp (the guest uses no stack)
    regs[16] = BigInt(GUEST.code); // rip
    regs[17] = 2n; // rflags: the reserved bit
    native.kvmSetRegs(this.vcpu, regs);
  }

  /** Bytes of guest RAM memory slot 0 covers (all of `ram` until a consumer invalidation shrinks it). */
  get slotBytes(): number {
    return this.#slotBytes;
  }

  /**
   * Cuts guest RAM to its first `bytes` (none: the slot goes), for the memfile notifier's invalidation: KVM must stop
   * using memory before the filesystem frees it. KVM cannot resize a slot, so it is deleted and added again.
   */
  shrinkMemory(bytes: number): void {
    this.#requireOpen();
    if (bytes >= this.#slotBytes) return;
    native.kvmDeleteMemory(this.vm, 0);
    const keep = bytes - (bytes % (2 * MiB));
    if (keep > 0 && this.ram.mapped) native.kvmSetMemory(this.vm, 0, 0, this.ram.id, 0, keep);
    this.#slotBytes = keep > 0 && this.ram.mapped ? keep : 0;
  }

  /** Runs the vCPU on a worker thread until it halts or is paused; misuse (already running, closed) rejects. */
  async run(): Promise<string> {
    this.#requireOpen();
    return native.kvmRun(this.vcpu);
  }

  pause(): void {
    this.#requireOpen();
    native.kvmPause(this.vcpu);
  }

  /** CLOCK_MONOTONIC ns when the latest run() entered KVM_RUN, or 0n while it has not yet. */
  runStartedAt(): bigint {
    this.#requireOpen();
    return native.kvmRunStartedAt(this.vcpu);
  }

  /** True once the guest has arrived at its gate (see DemoGuestOptions.gateAtStep) and waits there. */
  gateReached(): boolean {
    return this.#gateWords()[0] === 1n;
  }

  /** Lets a guest waiting at its gate go on (the word lives in guest RAM, so it crosses a save and restore). */
  releaseGate(): void {
    this.#gateWords()[1] = 1n;
  }

  #gateWords(): BigUint64Array {
    const bytes = this.ram.bytes(GUEST.gateArrived, 16);
    return new BigUint64Array(bytes.buffer, bytes.byteOffset, 2);
  }

  /** COM1 output since the last call. */
  serial(): string {
    return native.kvmSerial(this.vcpu);
  }

  saveState(): Uint8Array {
    return native.kvmSaveState(this.vcpu);
  }

  restoreState(state: Uint8Array): void {
    native.kvmRestoreState(this.vcpu, state);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.kvmCloseVcpu(this.vcpu);
    native.fdClose(this.vm);
  }

  #requireOpen(): void {
    if (this.#closed) throw new GuestmemfsError('EINVAL', 'the virtual machine was closed');
  }
}

/** What the demo guest computes, in TypeScript: the reference its serial output is checked against. */
export function demoGuestChecksum(ramBytes: number, options: DemoGuestOptions): string {
  const words = BigInt((ramBytes - GUEST.workArea) / 8);
  const mask = (1n << 64n) - 1n;
  const rol = (value: bigint, bits: bigint) => ((value << bits) | (value >> (64n - bits))) & mask;
  const memory = new Map<bigint, bigint>();
  let x = options.seed;
  let sum = 0n;
  for (let step = 0; step < options.steps; step++) {
    x = (x * 6364136223846793005n + 1442695040888963407n) & mask;
    const index = (((x >> 32n) * words) & mask) >> 32n;
    const value = rol(((memory.get(index) ?? 0n) + x) & mask, 13n);
    memory.set(index, value);
    sum = rol(sum ^ value, 7n);
  }
  return sum.toString(16).padStart(16, '0');
}
