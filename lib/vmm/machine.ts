// A KVM virtual machine whose RAM is a guestmemfs guest file mapping: long-mode setup, the demo guest on one or more
// vCPUs, run and pause, and the vCPU state save/restore a live update carries across processes.
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
  /**
   * The gates, 16 bytes per vCPU: a vCPU sets its first word on arriving at its gate step and waits for the VMM to set
   * the second.
   */
  gates: 0x800,
  /** Everything from here to the end of RAM is the guest's work area. */
  workArea: 1 * MiB,
  /** RAM the identity page tables can cover (8 page directories below the work area). */
  maxRam: 8 * GiB,
  /** vCPUs the gate area has room for (below the code at 0x1000). */
  maxVcpus: 64,
} as const;

/** The seed vCPU `index` starts from: the caller's seed for the first, spread by the golden ratio for the rest. */
export function vcpuSeed(seed: bigint, index: number): bigint {
  return (seed + BigInt(index) * 0x9e3779b97f4a7c15n) & ((1n << 64n) - 1n);
}

/** The words of the work area vCPU `index` of `vcpus` works on: [first, first + count). */
export function vcpuSlice(ramBytes: number, vcpus: number, index: number): { first: number; count: number } {
  const count = Math.floor((ramBytes - GUEST.workArea) / 8 / vcpus);
  return { first: index * count, count };
}

function requireVcpuCount(vcpus: number): number {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > GUEST.maxVcpus)
    throw new GuestmemfsError('EINVAL', `a VM has 1 to ${GUEST.maxVcpus} vCPUs, not ${vcpus}`);
  return vcpus;
}

const PRESENT = 1n;
const WRITABLE = 2n;
const HUGE = 1n << 7n;

export interface DemoGuestOptions {
  /** Read-modify-write steps before the guest prints its checksum and halts. */
  steps: number;
  seed: bigint;
  /** Stop at this step (1 or more) until releaseGate(): a point a test pauses the guest at on the guest's own signal. */
  gateAtStep?: number;
  /**
   * With the demo device (device.ts): the last vCPU is its driver instead of a worker, and takes this many records
   * before it prints its counts and halts.
   */
  deviceRecords?: number;
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
  readonly vcpus: readonly number[];
  /** Guest RAM registered as memory slot 0 ahead of time (a premapFile() mapping), if any. */
  readonly ram: Mapping | undefined;
  used: boolean;
}

/**
 * Creates a VM and its vCPU and, given a mapping of guest RAM, registers it with KVM now: with shadow paging the
 * kernel sizes per-page tracking for the whole slot then, about 0.6 ms per GiB here.
 */
export function prepareVm(ram?: Mapping, vcpus = 1): PreparedVm {
  requireVcpuCount(vcpus);
  if (ram && ram.length > GUEST.maxRam)
    throw new GuestmemfsError('EINVAL', `guest RAM of ${ram.length} bytes exceeds the ${GUEST.maxRam}-byte limit of the demo page tables`);
  const vm = native.kvmCreateVm(kvm());
  const made: number[] = [];
  try {
    for (let index = 0; index < vcpus; index++) made.push(native.kvmCreateVcpu(kvm(), vm, index));
    if (ram) native.kvmSetMemory(vm, 0, 0, ram.id, 0, ram.length);
    return { vm, vcpus: made, ram, used: false };
  } catch (error) {
    closeVm(vm, made);
    throw error;
  }
}

/** The earliest of the vCPUs' CLOCK_MONOTONIC stamps that are set (0n: not yet), or 0n when none is. */
function earliestStamp(stamps: readonly bigint[]): bigint {
  return stamps.reduce((earliest, at) => (earliest === 0n || (at !== 0n && at < earliest) ? at : earliest), 0n);
}

/** A VM's run ends 'halted' when every vCPU halted, 'paused' when any was paused, else with the first other reason. */
function overallReason(reasons: string[]): string {
  if (reasons.every((reason) => reason === 'halted')) return 'halted';
  for (const wanted of ['load-failed', 'load-mismatch', 'paused', 'cancelled']) if (reasons.includes(wanted)) return wanted;
  return reasons.find((reason) => reason !== 'halted')!;
}

function closeVm(vm: number, vcpus: readonly number[]): void {
  for (const vcpu of vcpus) native.kvmCloseVcpu(vcpu);
  native.fdClose(vm);
}

export class KvmMachine {
  readonly vm: number;
  /** The vCPUs, in index order (the first is the bootstrap processor). */
  readonly vcpus: readonly number[];
  readonly ram: Mapping;
  #closed = false;
  #slotBytes: number;

  private constructor(vm: number, vcpus: readonly number[], ram: Mapping) {
    this.vm = vm;
    this.vcpus = vcpus;
    this.ram = ram;
    this.#slotBytes = ram.length;
  }

  /**
   * A VM with `vcpus` vCPUs whose guest-physical RAM [0, ram.length) is the mapping itself (no copy). `prepared` is a
   * VM made earlier by prepareVm(), so that a successor VMM can create it (and register the RAM it premapped) before
   * the guest pauses, outside the blackout; its vCPU count is then the machine's. A prepared VM holding other RAM than
   * `ram` is closed and a fresh one made.
   */
  static create(ram: Mapping, prepared?: PreparedVm, vcpus = prepared?.vcpus.length ?? 1): KvmMachine {
    requireVcpuCount(vcpus);
    if (ram.length > GUEST.maxRam)
      throw new GuestmemfsError(
        'EINVAL',
        `guest RAM of ${ram.length} bytes exceeds the ${GUEST.maxRam}-byte limit of the demo page tables`,
      );
    if (prepared?.used) throw new GuestmemfsError('EINVAL', 'this prepared VM already has guest RAM: prepare one VM per machine');
    if (prepared && ((prepared.ram !== undefined && prepared.ram !== ram) || prepared.vcpus.length !== vcpus)) {
      // KVM cannot move a memory slot to other memory in place; a fresh VM is as quick as deleting and re-adding it.
      prepared.used = true;
      closeVm(prepared.vm, prepared.vcpus);
      prepared = undefined;
    }
    const vm = prepared ?? prepareVm(ram, vcpus);
    vm.used = true;
    if (prepared && prepared.ram === undefined) native.kvmSetMemory(vm.vm, 0, 0, ram.id, 0, ram.length);
    const machine = new KvmMachine(vm.vm, vm.vcpus, ram);
    if (vcpus > 1) machine.spreadVcpus();
    return machine;
  }

  /**
   * Takes over a VM whose vCPUs already run over `ram` (made and started by the exec-mode launcher, early-resume.ts),
   * with its /dev/kvm fd; `running` settles as run()'s promise does.
   */
  static adoptRunning(
    ram: Mapping,
    made: { kvm: number; vm: number; vcpus: readonly number[]; runs: readonly Promise<string>[] },
  ): { machine: KvmMachine; running: Promise<string> } {
    if (kvmFd === undefined) kvmFd = made.kvm;
    else native.fdClose(made.kvm);
    const machine = new KvmMachine(made.vm, made.vcpus, ram);
    return { machine, running: Promise.all(made.runs).then(overallReason) };
  }

  /**
   * Puts vCPU i on the i-th CPU this process may use (modulo their number), as VMMs pin vCPUs: a vCPU never yields its
   * CPU, so two that the scheduler wakes on one CPU take turns in whole time slices (milliseconds) until it moves one.
   */
  spreadVcpus(cpus: readonly number[] = native.threadAffinity()): void {
    this.vcpus.forEach((vcpu, index) => native.kvmSetAffinity(vcpu, [cpus[index % cpus.length]!]));
  }

  /**
   * Writes the demo guest and identity page tables into RAM and points every vCPU at it in 64-bit mode, each with its
   * own slice of the work area, seed and gate.
   */
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
    const workers = workerCount(this.vcpus.length, options);
    this.vcpus.forEach((vcpu, index) => {
      native.kvmEnterLongMode(vcpu, GUEST.pml4);
      const regs = native.kvmGetRegs(vcpu);
      regs.fill(0n);
      if (index >= workers) {
        regs[0] = 1n; // rax: the device's driver
        regs[4] = BigInt(options.deviceRecords!); // rsi: records to take
        regs[6] = BigInt(GUEST.code); // rsp (no stack)
        regs[16] = BigInt(GUEST.code); // rip
        regs[17] = 2n;
        native.kvmSetRegs(vcpu, regs);
        return;
      }
      const slice = vcpuSlice(this.ram.length, workers, index);
      regs[4] = BigInt(slice.count); // rsi: words in its slice of the work area
      regs[5] = BigInt(GUEST.workArea + slice.first * 8); // rdi: the slice
      regs[3] = BigInt(options.steps); // rdx: steps
      regs[8] = vcpuSeed(options.seed, index); // r8: seed
      regs[15] = BigInt(options.gateAtStep ?? 0); // r15: the step to wait at
      regs[7] = BigInt(GUEST.gates + 16 * index); // rbp: its gate
      regs[6] = BigInt(GUEST.code); // rsp (the guest uses no stack)
      regs[16] = BigInt(GUEST.code); // rip
      regs[17] = 2n; // rflags: the reserved bit
      native.kvmSetRegs(vcpu, regs);
    });
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

  /**
   * Runs every vCPU, each on a worker thread of its own, until all have halted or been paused: 'halted' when all
   * halted, 'paused' when any was paused, else the first other reason. Misuse (already running, closed) rejects.
   */
  async run(): Promise<string> {
    this.#requireOpen();
    return overallReason(await Promise.all(this.vcpus.map((vcpu) => native.kvmRun(vcpu))));
  }

  /**
   * Runs every vCPU from the handover area at the start of `state` (a VMM state file): each vCPU's thread waits for
   * the area to be published, loads its own slot, waits for the others, and vCPU 0 writes the commit point to
   * `reportFd`; then they run as run() does. 'cancelled' when paused before, 'load-failed' when a vCPU could not load.
   */
  async runFromHandover(state: Mapping, reportFd: number): Promise<string> {
    this.#requireOpen();
    const count = this.vcpus.length;
    return overallReason(await Promise.all(this.vcpus.map((vcpu, index) => native.kvmRun(vcpu, state.id, index, count, reportFd))));
  }

  /** Whether every vCPU of a runFromHandover() is on its thread waiting for the area (it will notice at once). */
  awaitingHandover(): boolean {
    return this.vcpus.every((vcpu) => native.kvmAwaitingHandover(vcpu));
  }

  /** When the first vCPU of a runFromHandover() saw the area published (CLOCK_MONOTONIC ns), or 0n. */
  handoverNoticedAt(): bigint {
    return earliestStamp(this.vcpus.map((vcpu) => native.kvmHandoverNoticedAt(vcpu)));
  }

  /** Asks every vCPU to stop (run() resolves once all have). */
  pause(): void {
    this.#requireOpen();
    for (const vcpu of this.vcpus) native.kvmPause(vcpu);
  }

  /**
   * CLOCK_MONOTONIC ns when the latest run had every vCPU in KVM_RUN (the last one's entry: the guest is whole again
   * then), or 0n while some vCPU has not entered yet.
   */
  runStartedAt(): bigint {
    this.#requireOpen();
    let latest = 0n;
    for (const vcpu of this.vcpus) {
      const at = native.kvmRunStartedAt(vcpu);
      if (at === 0n) return 0n;
      if (at > latest) latest = at;
    }
    return latest;
  }

  /** CLOCK_MONOTONIC ns when the first vCPU of the latest run left KVM_RUN (the guest stopped being whole then). */
  runStoppedAt(): bigint {
    this.#requireOpen();
    return earliestStamp(this.vcpus.map((vcpu) => native.kvmRunStoppedAt(vcpu)));
  }

  /** CLOCK_MONOTONIC ns when the last vCPU of the latest run left KVM_RUN (how far apart a pause stopped them). */
  lastRunStoppedAt(): bigint {
    this.#requireOpen();
    return this.vcpus.reduce((latest, vcpu) => {
      const at = native.kvmRunStoppedAt(vcpu);
      return at > latest ? at : latest;
    }, 0n);
  }

  /** True once every vCPU has arrived at its gate (see DemoGuestOptions.gateAtStep) and waits there. */
  gateReached(): boolean {
    return this.vcpus.every((_, index) => this.#gateWords(index)[0] === 1n);
  }

  /** Lets every vCPU waiting at its gate go on (the words live in guest RAM, so they cross a save and restore). */
  releaseGate(): void {
    this.vcpus.forEach((_, index) => (this.#gateWords(index)[1] = 1n));
  }

  #gateWords(index: number): BigUint64Array {
    const bytes = this.ram.bytes(GUEST.gates + 16 * index, 16);
    return new BigUint64Array(bytes.buffer, bytes.byteOffset, 2);
  }

  /** Each vCPU's COM1 output since the last call, in vCPU order. */
  serial(): string[] {
    return this.vcpus.map((vcpu) => native.kvmSerial(vcpu));
  }

  /** One vCPU's state (it must be stopped). */
  saveVcpu(index: number): Uint8Array {
    return native.kvmSaveState(this.#vcpu(index));
  }

  /** Loads one vCPU's state, as saveVcpu() gave it. */
  restoreVcpu(index: number, state: Uint8Array): void {
    native.kvmRestoreState(this.#vcpu(index), state);
  }

  #vcpu(index: number): number {
    const vcpu = this.vcpus[index];
    if (vcpu === undefined) throw new GuestmemfsError('EINVAL', `this VM has ${this.vcpus.length} vCPUs, not one numbered ${index}`);
    return vcpu;
  }

  /** Every vCPU's state, one fixed-size record after another in vCPU order (all must be stopped). */
  saveState(): Uint8Array {
    const states = this.vcpus.map((vcpu) => native.kvmSaveState(vcpu));
    const out = new Uint8Array(states.reduce((total, state) => total + state.length, 0));
    let offset = 0;
    for (const state of states) {
      out.set(state, offset);
      offset += state.length;
    }
    return out;
  }

  /** Restores what saveState() returned: as many records as this VM has vCPUs. */
  restoreState(state: Uint8Array): void {
    const each = state.length / this.vcpus.length;
    if (!Number.isInteger(each)) {
      throw new GuestmemfsError('EINVAL', `vCPU state of ${state.length} bytes does not divide among ${this.vcpus.length} vCPUs`, {
        syscall: 'ioctl',
      });
    }
    this.vcpus.forEach((vcpu, index) => native.kvmRestoreState(vcpu, state.subarray(index * each, (index + 1) * each)));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeVm(this.vm, this.vcpus);
  }

  #requireOpen(): void {
    if (this.#closed) throw new GuestmemfsError('EINVAL', 'the virtual machine was closed');
  }
}

/**
 * What the demo guest prints, in TypeScript: the reference its serial output is checked against. With several vCPUs,
 * each vCPU's checksum, in vCPU order, one per line.
 */
export function demoGuestChecksum(ramBytes: number, options: DemoGuestOptions, vcpus = 1): string {
  const lines: string[] = [];
  const workers = workerCount(vcpus, options);
  for (let index = 0; index < workers; index++) {
    lines.push(sliceChecksum(vcpuSlice(ramBytes, workers, index).count, options.steps, vcpuSeed(options.seed, index)));
  }
  return lines.join('\n');
}

/** The vCPUs that do the guest's work: all, or all but the last when it drives the demo device. */
export function workerCount(vcpus: number, options: Pick<DemoGuestOptions, 'deviceRecords'>): number {
  if (!options.deviceRecords) return vcpus;
  if (vcpus < 2) throw new GuestmemfsError('EINVAL', 'the demo device needs a vCPU of its own: give the guest at least 2');
  return vcpus - 1;
}

function sliceChecksum(wordCount: number, steps: number, seed: bigint): string {
  const words = BigInt(wordCount);
  const mask = (1n << 64n) - 1n;
  const rol = (value: bigint, bits: bigint) => ((value << bits) | (value >> (64n - bits))) & mask;
  const memory = new Map<bigint, bigint>();
  let x = seed;
  let sum = 0n;
  for (let step = 0; step < steps; step++) {
    x = (x * 6364136223846793005n + 1442695040888963407n) & mask;
    const index = (((x >> 32n) * words) & mask) >> 32n;
    const value = rol(((memory.get(index) ?? 0n) + x) & mask, 13n);
    memory.set(index, value);
    sum = rol(sum ^ value, 7n);
  }
  return sum.toString(16).padStart(16, '0');
}
