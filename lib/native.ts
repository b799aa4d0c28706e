// The one place the addon is loaded: a typed view of every native export, with native errors rethrown as GuestmemfsError.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError } from './errors';

export interface NativeFdInfo {
  size: number;
  blocks512: number;
  mode: number;
  dev: number;
  ino: number;
  /** statfs f_type: HUGETLBFS_MAGIC or TMPFS_MAGIC for the backends we support. */
  fsType: number;
  /** statfs f_bsize: the huge page size on hugetlbfs, 4096 on tmpfs. */
  fsBlockSize: number;
  /** True when FD_CLOEXEC is clear, i.e. the fd survives execve. */
  inherit: boolean;
}

/** What mapExtents() reports, read from its result array (slots named by `mapResult`). */
export interface NativeMapResult {
  id: number;
  address: bigint;
  length: number;
  /** mmap(MAP_FIXED) calls made after coalescing adjacent extents. */
  mmapCalls: number;
  /** Whether MADV_HUGEPAGE was requested and accepted. */
  hugepageAdvice: boolean;
}

export type NativeProgress = (done: number, total: number) => void;

export interface NativeBinding {
  // Pool family
  fileOpen(path: string, create: boolean, exclusive: boolean, mode: number): number;
  fdClose(fd: number): void;
  fileResize(fd: number, size: number): void;
  fileAllocate(fd: number, offset: number, length: number): void;
  filePunchHole(fd: number, offset: number, length: number): void;
  fdInfo(fd: number): NativeFdInfo;
  memfdCreate(name: string, hugePageSize: number): number;
  fdSetInherit(fd: number, inherit: boolean): void;
  /** flock: false when another open file description holds a conflicting lock and wait is false. */
  fdLock(fd: number, exclusive: boolean, wait: boolean): boolean;
  fdUnlock(fd: number): void;
  mount(source: string, target: string, fstype: string, data: string): void;
  umount(target: string): void;
  // Map family
  /**
   * Maps [offset, length] pairs of the pool fd into one contiguous range. `flags` combines `mapFlags`; extents and the
   * address are aligned to `alignment` (the page size); a non-zero `congruence` (a power of two up to 1 GiB) places
   * the address congruent to the first extent's offset modulo it, so that the kernel can share page tables with other
   * mappings of the file placed alike. Fills `result` (slots named by `mapResult`).
   */
  /** With largeFd, the extents from pool offset largeFrom on are in that file (of 1 GiB pages), at offset - largeFrom. */
  mapExtents(
    fd: number,
    extents: Float64Array,
    flags: number,
    alignment: number,
    congruence: number,
    result: Float64Array,
    largeFd?: number,
    largeFrom?: number,
  ): void;
  /** Private anonymous memory of `length` bytes (a multiple of 4096), 2 MiB-aligned and THP-advised with hugepage. */
  mapAnonymous(length: number, hugepage: boolean): number;
  /** deferIfBusy: leave the munmap to the last in-flight worker instead of throwing EBUSY (used by the GC path). */
  unmap(id: number, deferIfBusy?: boolean): void;
  /** An external ArrayBuffer over part of a mapping; unmap detaches it. */
  mappingBuffer(id: number, offset: number, length: number): ArrayBuffer;
  madvise(id: number, offset: number, length: number, advice: number): void;
  mlock(id: number, lock: boolean): void;
  zero(id: number, offset: number, length: number): void;
  zeroAsync(id: number, offset: number, length: number, onProgress?: NativeProgress): Promise<void>;
  populateAsync(id: number, offset: number, length: number, onProgress: NativeProgress | undefined, write: boolean): Promise<void>;
  liveMappings(): number;
  /** The mapping takes fd (its pins) and closes it right after it is unmapped, however that happens. */
  mappingAttachPin(id: number, fd: number): void;
  /** Random 8-byte reads over [offset, offset+length) of a mapping, timed natively (bench:access). */
  mapProbe(id: number, offset: number, length: number, ops: number, seed: number, dependent: boolean): { ns: number; sum: bigint };
  readonly mapFlags: Readonly<Record<'populate' | 'writable' | 'dontDump' | 'dontFork' | 'hugepage' | 'lock', number>>;
  readonly mapResult: Readonly<Record<'id' | 'address' | 'length' | 'mmapCalls' | 'hugepageAdvice' | 'slots', number>>;
  readonly advice: Readonly<
    Record<
      | 'MADV_NORMAL'
      | 'MADV_WILLNEED'
      | 'MADV_DONTNEED'
      | 'MADV_DONTFORK'
      | 'MADV_DOFORK'
      | 'MADV_DONTDUMP'
      | 'MADV_DODUMP'
      | 'MADV_HUGEPAGE'
      | 'MADV_NOHUGEPAGE'
      | 'MADV_POPULATE_READ'
      | 'MADV_POPULATE_WRITE',
      number
    >
  >;
  // Sched family
  /** The CPUs the calling thread may run on. */
  threadAffinity(): number[];
  /** Restricts the calling thread (not the process) to these CPUs. */
  setThreadAffinity(cpus: number[]): void;
  /** The calling thread's scheduling policy: SCHED_IDLE, SCHED_OTHER or SCHED_FIFO (priority 1). */
  setThreadPolicy(policy: 'idle' | 'normal' | 'fifo'): void;
  // Locks family: open-file-description byte-range locks over the pool file (pins)
  /** F_OFD_SETLK(W): false when another open file description holds a conflicting lock and wait is false. */
  rangeLock(fd: number, offset: number, length: number, exclusive: boolean, wait: boolean): boolean;
  rangeUnlock(fd: number, offset: number, length: number): void;
  /** F_OFD_GETLK as a write lock: the first lock another description holds over the range, or null. Length 0: to EOF. */
  rangeConflict(fd: number, offset: number, length: number): [offset: number, length: number, shared: boolean] | null;
  /** A new open file description of the same file (/proc/self/fd/N), close-on-exec. */
  fdReopen(fd: number): number;
  // Socket family: UNIX sockets beyond Node's net module
  /** A listening stream socket bound with no wider mode than 0600 at any instant, then given `mode`; close-on-exec. */
  unixListen(path: string, backlog: number, mode: number): number;
  /** A blocking connected stream socket whose reads and writes fail with EAGAIN after timeoutMs; close-on-exec. */
  unixConnect(path: string, timeoutMs: number): number;
  /** SO_PEERCRED and SO_PEERGROUPS: [pid, uid, gid, ...supplementary groups] of the peer, recorded at connect. */
  peerCredentials(fd: number): number[];
  /** One sendmsg with fds attached as SCM_RIGHTS; the bytes written. */
  sendWithFds(fd: number, bytes: Uint8Array, fds: readonly number[]): number;
  /** One recvmsg of at most maxBytes; received fds are close-on-exec. */
  receiveWithFds(fd: number, maxBytes: number): { bytes: Buffer; fds: number[] };
  /** dup(2) with close-on-exec: another descriptor of the same socket (a listener kept across a live update). */
  fdDuplicate(fd: number): number;
  /** One datagram to a UNIX datagram socket ('@name': abstract), as sd_notify sends. */
  datagramSend(path: string, message: string): void;
  /** A connected pair of UNIX stream sockets, both close-on-exec. */
  socketPair(): [number, number];
  /** Whether every copy of the other end of a stream socket has closed (a hang-up), without waiting. */
  socketPeerClosed(fd: number): boolean;
  // Pagemap family
  pagemapEntries(id: number, offset: number, length: number, stride: number): BigUint64Array;
  // NUMA family
  /** mbind(MPOL_BIND, MPOL_MF_STRICT) of a mapping's range to one node: its pages are then allocated there or not at all. */
  numaBind(id: number, offset: number, length: number, node: number): void;
  /** The node of the page at every stride-sized step (move_pages, moving nothing); a negative errno where none is. */
  numaPageNodes(id: number, offset: number, length: number, stride: number): Int32Array;
  // Exec family
  /**
   * execve(file, argv, env), keeping stdio and keepFds open (and stdio blocking); returns only by throwing. With
   * holderEnv, a child that shares this address space keeps it through the exec, until the new program closes the
   * pipe end it inherits; `holderEnv=pid:fd` is added to env, and the new program must close fd and reap pid.
   */
  processExec(file: string, argv: string[], env: string[], keepFds: number[], holderEnv?: string): never;
  /** Resolves a child's exit status (128 + signal when killed) once it has exited; waits on a libuv pool thread. */
  processReap(pid: number): Promise<number>;
  // KVM family
  kvmOpen(): number;
  kvmCreateVm(kvmFd: number): number;
  kvmSetMemory(vmFd: number, slot: number, guestPhys: number, mappingId: number, offset: number, length: number): void;
  kvmDeleteMemory(vmFd: number, slot: number): void;
  kvmCreateVcpu(kvmFd: number, vmFd: number, index: number): number;
  /** kvm_regs order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags. */
  kvmGetRegs(vcpu: number): BigUint64Array;
  kvmSetRegs(vcpu: number, regs: BigUint64Array): void;
  kvmEnterLongMode(vcpu: number, pml4: number): void;
  kvmSaveState(vcpu: number): Uint8Array;
  kvmRestoreState(vcpu: number, state: Uint8Array): void;
  /** Resolves 'halted', 'paused' or 'exit-N (...)' when the vCPU stops. */
  /**
   * Runs the vCPU on a worker thread. With a handover slot (mapping, index, count) it first sleeps until the area at
   * the start of that mapping is published, loads its state from its slot, waits until every vCPU has, and (vCPU 0)
   * writes the commit point to reportFd; 'cancelled' if paused meanwhile, 'load-failed' if any vCPU could not load.
   */
  kvmRun(vcpu: number, mappingId?: number, index?: number, count?: number, reportFd?: number): Promise<string>;
  /** A pause from now on saves the vCPU into its slot on its own thread; the last to do so publishes the area. */
  kvmArmSave(vcpu: number, mappingId: number, index: number, count: number): void;
  kvmDisarmSave(vcpu: number): void;
  /** CLOCK_MONOTONIC ns when the vCPU's loading run saw the area published (0n if it did not wait for one). */
  kvmHandoverNoticedAt(vcpu: number): bigint;
  /** Whether the vCPU's thread is waiting for its handover to be published (a kvmRun with a slot). */
  kvmAwaitingHandover(vcpu: number): boolean;
  /** Bytes of one vCPU's saved state (a slot of the handover area). */
  kvmStateBytes(): number;
  kvmPause(vcpu: number): boolean;
  /** CLOCK_MONOTONIC ns when the latest run entered KVM_RUN (0n until it has). */
  kvmRunStartedAt(vcpu: number): bigint;
  /** CLOCK_MONOTONIC ns when the latest run left KVM_RUN (0n before any ended). */
  kvmRunStoppedAt(vcpu: number): bigint;
  /** The CPUs the vCPU's thread runs on during its runs (EBUSY while it runs). */
  kvmSetAffinity(vcpu: number, cpus: number[]): void;
  /** Sleeps while the 32-bit word at offset of the mapping holds `expected` (shared across processes), up to timeoutMs. */
  futexWait(mappingId: number, offset: number, expected: number, timeoutMs: number): 'woken' | 'timeout';
  /** Wakes every waiter on the word; returns how many woke. */
  futexWake(mappingId: number, offset: number): number;
  kvmSerial(vcpu: number): string;
  kvmCloseVcpu(vcpu: number): void;
  readonly napiVersion: number;
  readonly buildType: 'Release' | 'Debug' | 'Asan';
}

/** The package's root directory (where binding.gyp is). */
export function packageRoot(): string {
  // Works both from lib/ (vitest runs the sources) and from dist/lib/ (compiled).
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'binding.gyp'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`guestmemfs: cannot find the package root above ${__dirname}`);
    dir = parent;
  }
  return dir;
}

function loadBinding(): NativeBinding {
  const requested = process.env.GUESTMEMFS_BUILD;
  const buildType = requested === 'Debug' || requested === 'Asan' ? requested : 'Release';
  const file = path.join(packageRoot(), 'build', buildType, 'guestmemfs_native.node');
  if (!fs.existsSync(file)) {
    const command = { Release: 'npm install', Debug: 'npm run build:debug', Asan: 'npm run build:asan' }[buildType];
    throw new GuestmemfsError('ENOENT', `native addon not built at ${file}: run \`${command}\``, {
      syscall: 'dlopen',
      path: file,
    });
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const raw = require(file) as Record<string, unknown>;
  const wrapped: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(raw)) {
    wrapped[name] = typeof value === 'function' ? rethrowAsGuestmemfsError(value as (...args: unknown[]) => unknown) : value;
  }
  return Object.freeze(wrapped) as unknown as NativeBinding;
}

function rethrowAsGuestmemfsError(fn: (...args: unknown[]) => unknown): (...args: unknown[]) => unknown {
  const convert = (error: unknown): never => {
    throw GuestmemfsError.from(error);
  };
  return (...args: unknown[]) => {
    try {
      const result = fn(...args);
      return result instanceof Promise ? result.catch(convert) : result;
    } catch (error) {
      return convert(error);
    }
  };
}

export const native: NativeBinding = loadBinding();
