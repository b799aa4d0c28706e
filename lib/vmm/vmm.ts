// The VMM prototype: a KVM guest whose RAM is a guestmemfs `guest` file and whose vCPU and device state live in a
// `state` file, so that a new VMM process can take it over (live update) without copying guest memory.
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import type { Filesystem } from '../fs/filesystem';
import type { MemfileNotifier } from '../fs/memfile';
import { MEMFILE_F_UNMOVABLE, MEMFILE_F_UNRECLAIMABLE } from '../fs/notifier';
import { adoptRecipeMapping, premapFile } from '../fs/successor';
import type { Extent, Mapping } from '../pool/mapping';
import type { Pool } from '../pool/pool';
import { elapsedMs, KiB } from '../units';
import { type DemoGuestOptions, KvmMachine, type PreparedVm, prepareVm } from './machine';
import { earlyResumeSpec, type EarlyResumeSpec } from './early-resume';
import type { EarlyResume } from './exec-protocol';
import { StateFile } from './state-file';

export interface VmmConfig {
  /** The guest RAM file (type guest) and the VMM state file (type state). */
  ramPath: string;
  statePath: string;
  ramSize: number;
  /** vCPUs of the guest (default 1). */
  vcpus?: number;
}

/** Where a VMM keeps its guest's files: all a resuming VMM needs (the RAM's size is the RAM file's). */
export type VmmFiles = Pick<VmmConfig, 'ramPath' | 'statePath'>;

/** What the state file holds besides the vCPUs' states: its JSON part (see state-file.ts). */
export interface SavedVmm {
  version: 3;
  /** COM1 output so far, per vCPU (the guest's console logs). */
  serials: string[];
  /** CLOCK_MONOTONIC ns when the vCPU stopped, for the blackout measurement. */
  stoppedAtNs: string;
  /** Anything else the caller wants carried over (timings, counters). */
  extra: Record<string, unknown>;
}

/**
 * The state file is sized once, at boot, and saves overwrite it in place (its header records how much is used): its
 * blocks never move, so a successor can map it before the state is written.
 */
export const STATE_CAPACITY = 256 * KiB;
/** Room kept in the state file beyond the serial log for the rest of the JSON. */
const STATE_ROOM_SLACK = 64 * KiB;

/**
 * Guest RAM is mapped by the VMM and, during a transfer-mode update, by its successor at the same time: placed for
 * page-table sharing, the successor's premapping finds every page in place and the two share their page tables.
 */
const RAM_MAP_OPTIONS = { sharePageTables: true } as const;

/** What a successor VMM makes before the guest pauses: see Vmm.prepareResume. */
export interface PreparedResume {
  vm: PreparedVm;
  /** The state file mapped ahead (null if that failed: it is then read after the handover). */
  state: Mapping | null;
}

/** Thrown away when adoption fails: a premapping whose file moved is no use. */
function unmapUnadopted(premapped: Mapping | null | undefined, adopted: Mapping): void {
  if (premapped && premapped !== adopted && premapped.mapped) premapped.unmap();
}

/** The vCPU count of the state saved in a state file mapping, or undefined when it holds none (yet). */
function savedVcpus(state: Mapping, path: string): number | undefined {
  const file = new StateFile(state, path);
  return file.vcpusPublished ? file.vcpuCount : undefined;
}

function decodeJson(file: StateFile): SavedVmm {
  const saved = JSON.parse(new TextDecoder().decode(file.json())) as { version: unknown } & SavedVmm;
  if (saved.version !== 3) {
    throw new GuestmemfsError('EINVAL', `${file.path} holds VMM state of version ${String(saved.version)}; this VMM reads version 3`, {
      path: file.path,
    });
  }
  return saved;
}

export class Vmm {
  readonly #fs: Filesystem | undefined;
  readonly config: VmmConfig;
  readonly ram: Mapping;
  readonly machine: KvmMachine;
  /** COM1 output per vCPU, carried over from earlier VMM processes plus what this one saw. */
  serialLogs: string[];
  #running: Promise<string> | undefined;
  /** The state file, mapped for the VMM's life: saving and restoring are then plain memory copies. */
  #state: StateFile;
  /** Whether a pause saves the vCPUs into the state file on their own threads (armHandover). */
  #armed = false;
  /** The state file's size: what a save may fill before the file has to grow. */
  #stateCapacity: number;
  /**
   * KVM's memory slot as a consumer of the RAM file (the memfile notifier's first user): told before any of the file
   * goes, it cuts the slot first. While this VMM maps the RAM its pin refuses such changes, so this guards the window
   * after the mapping goes and before the VM does.
   */
  readonly slotConsumer: MemfileNotifier | undefined;

  private constructor(
    fs: Filesystem | undefined,
    config: VmmConfig,
    ram: Mapping,
    machine: KvmMachine,
    state: Mapping,
    stateCapacity: number,
  ) {
    this.#fs = fs;
    this.config = config;
    this.ram = ram;
    this.machine = machine;
    this.#state = new StateFile(state, config.statePath);
    this.#stateCapacity = stateCapacity;
    this.serialLogs = machine.vcpus.map(() => '');
    this.slotConsumer = fs?.registerNotifier(
      config.ramPath,
      { description: `KVM memory slot 0 of pid ${process.pid}`, invalidate: (start) => machine.shrinkMemory(start) },
      // KVM holds the guest's frames: they must neither move nor be reclaimed.
      MEMFILE_F_UNMOVABLE | MEMFILE_F_UNRECLAIMABLE,
    );
  }

  /** The filesystem this VMM owns the pool through (not for a VMM on a served pool: the service owns it). */
  get fs(): Filesystem {
    if (!this.#fs) {
      throw new GuestmemfsError('EINVAL', 'this VMM works on a pool served by guestmemfs mount: its metadata is the service’s', {
        path: this.config.statePath,
      });
    }
    return this.#fs;
  }

  /**
   * A VMM over guest RAM and a state file that the caller mapped itself (a client of the mount service, whose
   * mappings are pinned): the VM is created over `ram`. Its state file does not grow: it keeps the size it has.
   */
  static fromMappings(files: VmmFiles, ram: Mapping, state: Mapping, vcpus = savedVcpus(state, files.statePath) ?? 1): Vmm {
    return new Vmm(undefined, { ...files, ramSize: ram.length, vcpus }, ram, KvmMachine.create(ram, undefined, vcpus), state, state.length);
  }

  /** Creates the guest's files, loads the demo guest and leaves it ready to start. */
  static boot(fs: Filesystem, config: VmmConfig, guest: DemoGuestOptions): Vmm {
    fs.create(config.ramPath, { type: 'guest' });
    fs.truncate(config.ramPath, config.ramSize);
    fs.create(config.statePath, { type: 'state' });
    fs.truncate(config.statePath, STATE_CAPACITY);
    const ram = fs.map(config.ramPath, RAM_MAP_OPTIONS);
    const machine = KvmMachine.create(ram, undefined, config.vcpus ?? 1);
    machine.loadDemoGuest(guest);
    return new Vmm(fs, config, ram, machine, fs.map(config.statePath), STATE_CAPACITY);
  }

  /**
   * For a successor VMM, before the guest pauses: everything of the takeover that does not depend on the saved state.
   * Maps guest RAM and the state file from a read-only view of the pool the running VMM owns, and creates the VM with
   * that RAM registered. resume() adopts all of it when the files' blocks are unchanged at the handover, and otherwise
   * maps afresh (correct, only slower). A RAM premapping that fails is reported through `ramError`.
   */
  static prepareResume(pool: Pool, files: VmmFiles, vcpus = 1): PreparedResume & { ramError?: string } {
    let ram: Mapping | undefined;
    let ramError: string | undefined;
    try {
      ram = premapFile(pool, files.ramPath, {}, RAM_MAP_OPTIONS);
    } catch (error) {
      ramError = (error as Error).message;
    }
    let state: Mapping | null = null;
    try {
      state = premapFile(pool, files.statePath);
    } catch {
      // Read from the file after the handover instead.
    }
    return { vm: prepareVm(ram, vcpus), state, ...(ramError ? { ramError } : {}) };
  }

  /**
   * Takes over a guest another VMM process saved: attach() and restoreSaved() in one (the state must already be saved).
   */
  static resume(
    fs: Filesystem,
    files: VmmFiles,
    prepared?: PreparedResume,
  ): { vmm: Vmm; saved: SavedVmm; timings: { readStateMs: number; mapMs: number; vcpuMs: number; premapped: boolean } } {
    const { vmm, mapMs, premapped } = Vmm.attach(fs, files, prepared);
    const { saved, readStateMs, vcpuMs } = vmm.restoreSaved();
    return { vmm, saved, timings: { readStateMs, mapMs, vcpuMs, premapped } };
  }

  /**
   * The first half of a takeover, which needs the filesystem but not the guest's saved state: maps guest RAM and the
   * state file (adopting what prepareResume() premapped when its blocks are unchanged) and sets up the VM, with the
   * vCPU not yet restored. A transfer-mode successor does this while the guest still runs in the previous VMM, then
   * waitForSavedState() and restoreSaved(). `premapped` says whether the RAM premapping was adopted.
   */
  static attach(fs: Filesystem, files: VmmFiles, prepared?: PreparedResume): { vmm: Vmm; mapMs: number; premapped: boolean } {
    const started = process.hrtime.bigint();
    const state = fs.map(files.statePath, { premapped: prepared?.state ?? undefined });
    unmapUnadopted(prepared?.state, state);
    const premappedRam = prepared?.vm.ram;
    const ram = fs.map(files.ramPath, { ...RAM_MAP_OPTIONS, premapped: premappedRam });
    // A state already saved says how many vCPUs it holds (exec mode); a transfer-mode successor prepared its VM with them.
    const vcpus = prepared?.vm.vcpus.length ?? savedVcpus(state, files.statePath) ?? 1;
    const machine = KvmMachine.create(ram, prepared?.vm, vcpus);
    unmapUnadopted(premappedRam, ram);
    const vmm = new Vmm(fs, { ...files, ramSize: ram.length, vcpus }, ram, machine, state, fs.stat(files.statePath).size);
    return { vmm, mapMs: elapsedMs(started), premapped: premappedRam === ram };
  }

  /**
   * Takes over the guest the exec-mode launcher resumed before this program loaded (early-resume.ts): its mappings of
   * the state file and guest RAM, which must be exactly what the mounted metadata gives those files, and its running
   * VM. A mismatch pauses the guest and throws: it would be running on memory the filesystem does not give it.
   */
  static async adoptEarlyResume(
    fs: Filesystem,
    files: VmmFiles,
    early: Exclude<EarlyResume, { error: string }>,
  ): Promise<{ vmm: Vmm; saved: SavedVmm; running: Promise<string> }> {
    const stateMade = adoptRecipeMapping(fs, early.state.made, early.state.recipe);
    const ramMade = adoptRecipeMapping(fs, early.ram.made, early.ram.recipe);
    const { machine, running } = KvmMachine.adoptRunning(ramMade, early);
    let state: Mapping | undefined;
    let ram: Mapping | undefined;
    try {
      state = fs.map(files.statePath, { premapped: stateMade });
      ram = fs.map(files.ramPath, { ...RAM_MAP_OPTIONS, premapped: ramMade });
      if (state !== stateMade || ram !== ramMade) {
        const path = state === stateMade ? files.ramPath : files.statePath;
        throw new GuestmemfsError(
          'EIO',
          `the guest was resumed on extents of ${path} that the handover does not give that file; the guest is stopped: ` +
            'restart it from its last good state',
          { path },
        );
      }
    } catch (error) {
      // Stopped, then nothing of it kept: neither the VM nor any mapping of either file.
      machine.pause();
      await running.catch(() => undefined);
      machine.close();
      for (const mapping of new Set([state, ram, stateMade, ramMade])) if (mapping?.mapped) mapping.unmap();
      throw error;
    }
    const vmm = new Vmm(
      fs,
      { ...files, ramSize: ram.length, vcpus: machine.vcpus.length },
      ram,
      machine,
      state,
      fs.stat(files.statePath).size,
    );
    vmm.#running = running;
    return { vmm, saved: vmm.adoptSavedJson(), running };
  }

  /**
   * Waits until the state file holds the guest's saved vCPUs, for a successor that attach()ed while the guest still
   * ran elsewhere (see StateFile.waitFor: it spins with a CPU to spare and sleeps on a futex with `sleep`).
   */
  waitForSavedState(options: { timeoutMs?: number; abandoned?: () => boolean; sleep?: boolean } = {}): void {
    this.#state.waitFor('vcpus', options);
    this.#state.waitFor('json', { ...options, sleep: true });
  }

  /** The second half of a takeover: reads the saved state through the state file's mapping and restores the vCPUs. */
  restoreSaved(): { saved: SavedVmm; readStateMs: number; vcpuMs: number } {
    const started = process.hrtime.bigint();
    const file = this.#state;
    if (!file.vcpusPublished) throw new GuestmemfsError('EINVAL', `${file.path} holds no saved vCPUs`, { path: file.path });
    this.#requireVcpuCount(file.vcpuCount);
    const saved = decodeJson(file);
    const read = process.hrtime.bigint();
    this.machine.vcpus.forEach((_, index) => this.machine.restoreVcpu(index, file.slot(index)));
    this.serialLogs = saved.serials;
    return { saved, readStateMs: elapsedMs(started, read), vcpuMs: elapsedMs(read) };
  }

  /**
   * The successor's blackout, with no JavaScript in it: each vCPU, on its own thread, sleeps until the sender's vCPUs
   * have published their states, loads its own, waits until all have, and the first writes the commit point to
   * `reportFd`; then they run. Resolves like start() once the run ends ('cancelled' if paused before the handover,
   * 'load-failed' if a vCPU could not load: the guest then never ran here). The rest of the state is read with
   * adoptSavedJson() once the vCPUs run.
   */
  resumeFromHandover(reportFd: number): Promise<string> {
    const running = this.machine.runFromHandover(this.#state.mapping, reportFd);
    this.#running = running;
    return running;
  }

  /** When the first of this VMM's vCPUs saw the handover published (CLOCK_MONOTONIC ns). */
  handoverNoticedAt(): bigint {
    return this.machine.handoverNoticedAt();
  }

  /** When the sender's vCPUs were published in the state file (CLOCK_MONOTONIC ns). */
  get savedAtNs(): bigint {
    return this.#state.publishedNs;
  }

  /** After resumeFromHandover(): waits for the sender's JSON part and takes its console logs and the rest. */
  adoptSavedJson(options: { timeoutMs?: number; abandoned?: () => boolean } = {}): SavedVmm {
    this.#state.waitFor('json', { ...options, sleep: true });
    const saved = decodeJson(this.#state);
    // What the vCPUs printed here so far is still in their buffers: it comes after the sender's.
    this.serialLogs = saved.serials;
    return saved;
  }

  /**
   * Marks the state file as holding no saved state, before a handover whose successor will wait for the next save
   * (waitForSavedState): a state left from an earlier update must not pass for the coming one.
   */
  clearSavedState(): void {
    this.#state.clear(this.machine.vcpus.length);
  }

  /**
   * For a transfer-mode sender, before the pause: clears the state file and arms every vCPU to save itself into its
   * slot when the pause stops it, the last one publishing them (saveState() then adds only the JSON part).
   */
  armHandover(): void {
    this.clearSavedState();
    const count = this.machine.vcpus.length;
    this.machine.vcpus.forEach((vcpu, index) => native.kvmArmSave(vcpu, this.#state.mapping.id, index, count));
    this.#armed = true;
  }

  #disarm(): void {
    if (!this.#armed) return;
    for (const vcpu of this.machine.vcpus) native.kvmDisarmSave(vcpu);
    this.#armed = false;
  }

  /**
   * Grows the state file now, while the filesystem can still change, if the next save might not fit: a save made
   * after the filesystem was serialised can only overwrite the file in place.
   */
  ensureStateRoom(): void {
    // The serial log is the part that grows; JSON at most doubles it (escapes). The rest is a few KiB.
    const needed = StateFile.bytesFor(this.machine.vcpus.length, 2 * this.serial().length + STATE_ROOM_SLACK);
    if (needed > this.#stateCapacity) this.#growState(Math.max(needed * 2, STATE_CAPACITY));
  }

  #growState(capacity: number): void {
    if (!this.#fs) {
      throw new GuestmemfsError('ENOSPC', `${this.config.statePath}: the state needs ${capacity} bytes; create the state file larger`, {
        path: this.config.statePath,
      });
    }
    this.#disarm();
    this.#state.mapping.unmap();
    this.#stateCapacity = capacity;
    this.#fs.truncate(this.config.statePath, capacity);
    this.#state = new StateFile(this.#fs.map(this.config.statePath), this.config.statePath);
  }

  #requireVcpuCount(saved: number): void {
    if (saved !== this.machine.vcpus.length) {
      throw new GuestmemfsError(
        'EINVAL',
        `${this.config.statePath} holds ${saved} vCPUs, this VM has ${this.machine.vcpus.length}: prepare the successor with ${saved}`,
        { path: this.config.statePath },
      );
    }
  }

  /** Where the state file's blocks are in the pool (for a pin that must hold them while no mapping does). */
  get stateExtents(): readonly Extent[] {
    return this.#state.mapping.extents;
  }

  /** What an exec-mode successor's launcher needs to resume this (paused, saved) guest before it loads a VMM. */
  earlyResumeSpec(): EarlyResumeSpec {
    return earlyResumeSpec(this.fs.pool, this.ram, this.#state.mapping, this.machine.vcpus.length);
  }

  /** Runs the vCPU (on a worker thread); resolves with 'halted' or 'paused'. */
  start(): Promise<string> {
    this.#running = this.machine.run();
    return this.#running;
  }

  /**
   * When the vCPU of the current run entered KVM_RUN (CLOCK_MONOTONIC ns, as process.hrtime.bigint()): the end of a
   * blackout, taken on the vCPU's own thread. Resolves within a millisecond of it.
   */
  async runningSince(options: { abandoned?: () => boolean } = {}): Promise<bigint> {
    const running = this.#running;
    if (!running) throw new GuestmemfsError('EINVAL', 'the guest is not running: start() it first');
    let settled = false;
    running.then(
      () => (settled = true),
      () => (settled = true),
    );
    for (;;) {
      const at = this.machine.runStartedAt();
      if (at !== 0n) return at;
      if (settled) throw new GuestmemfsError('EIO', 'the vCPU run ended before it entered KVM_RUN');
      // A run waiting for a handover whose sender is gone: its vCPUs end with 'cancelled'.
      if (options.abandoned?.()) this.machine.pause();
      // Sleep, do not spin: the vCPU's worker thread may be waiting for this thread's CPU. The time itself comes from
      // the worker, so polling late does not change it.
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Stops every vCPU and waits until all have stopped; returns when the first stopped (CLOCK_MONOTONIC ns). */
  async pause(): Promise<{ reason: string; stoppedAtNs: bigint }> {
    if (!this.#running) throw new GuestmemfsError('EINVAL', 'the guest is not running');
    this.machine.pause();
    const reason = await this.#running;
    this.#running = undefined;
    // The first vCPU's own stop, stamped on its thread: from then on the guest is not whole.
    return { reason, stoppedAtNs: this.machine.runStoppedAt() };
  }

  /** COM1 output since the start of the guest (across VMM processes), each vCPU's after the one before. */
  serial(): string {
    this.machine.serial().forEach((output, index) => (this.serialLogs[index] += output));
    return this.serialLogs.join('');
  }

  /**
   * Writes the vCPU and device state into the state file. Returns when the vCPUs became visible to a successor
   * (CLOCK_MONOTONIC ns): published by the last vCPU thread to save itself when armed (armHandover), else here.
   */
  saveState(stoppedAtNs: bigint, extra: Record<string, unknown> = {}): bigint {
    // No pagemap read here: it would sit inside the blackout; the runners read frames outside it for their proof.
    this.serial();
    const saved: SavedVmm = { version: 3, serials: this.serialLogs, stoppedAtNs: stoppedAtNs.toString(), extra };
    const json = new TextEncoder().encode(JSON.stringify(saved));
    const needed = StateFile.bytesFor(this.machine.vcpus.length, json.length);
    // Overwritten in place through the mapping, never shrunk: its blocks stay where a successor may have mapped them.
    // Only a state larger than the file grows it (and may move its blocks).
    if (needed > this.#stateCapacity) this.#growState(Math.max(needed * 2, STATE_CAPACITY));
    const file = this.#state;
    if (!this.#armed) file.clear(this.machine.vcpus.length);
    this.#disarm();
    let publishedAt = file.publishedNs;
    if (!file.vcpusPublished) {
      // A vCPU that halted before the pause, or failed to save itself, is saved from this thread.
      this.machine.vcpus.forEach((_, index) => {
        if (!file.slotFilled(index)) file.slot(index).set(this.machine.saveVcpu(index));
      });
      publishedAt = file.publishVcpus();
    }
    file.publishJson(json);
    return publishedAt;
  }

  /** Lets go of the VM and the RAM mapping (the guest's memory stays in its file). */
  close(): void {
    this.slotConsumer?.unregister();
    this.machine.close(); // disarms the vCPUs too
    this.#armed = false;
    if (this.ram.mapped) this.ram.unmap();
    if (this.#state.mapping.mapped) this.#state.mapping.unmap();
  }
}
