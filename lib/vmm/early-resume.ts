// An exec-mode update's resume before the VMM is loaded: the new process image maps and pins guest RAM and the state
// file from the recipes the old image left, creates the VM and its memory slot, loads the vCPUs from their saved
// slots and runs them, all with nothing loaded but the addon (and this module, bundled). The VMM program adopts the
// running guest once it has mounted.
//
// The recipes come from the same serialised metadata the handover blob carries: the mount checks them against the
// blob afterwards, and a mismatch stops the guest (see Vmm.adoptEarlyResume).
import { native } from '../native';
import type { Mapping } from '../pool/mapping';
import type { Pool } from '../pool/pool';
import { mapFromRecipe, type MappingRecipe } from '../pool/remap';
import type { EarlyResume } from './exec-protocol';
import { type StateBytes, StateFile } from './state-file';

/** Carries the EarlyResumeSpec (JSON) from the process image that paused the guest to the one that resumes it. */
export const EARLY_RESUME_ENV = 'GUESTMEMFS_EARLY_RESUME';

/** What the paused VMM leaves for its successor's launcher. */
export interface EarlyResumeSpec {
  version: 1;
  /** The pool: the inherited fd of a memfd pool, or a path pool's path. */
  pool: { fd: number } | { path: string };
  /** The pool file's device and inode, checked before anything is mapped (a path may name another file by now). */
  dev: number;
  ino: number;
  ram: MappingRecipe;
  state: MappingRecipe;
  vcpus: number;
}

/** The spec for resuming `vcpus` vCPUs over these mappings of the pool (in the paused VMM, just before its execve). */
export function earlyResumeSpec(pool: Pool, ram: Mapping, state: Mapping, vcpus: number): EarlyResumeSpec {
  const { dev, ino } = native.fdInfo(pool.fd);
  return {
    version: 1,
    pool: pool.path === undefined ? { fd: pool.fd } : { path: pool.path },
    dev,
    ino,
    ram: ram.recipe,
    state: state.recipe,
    vcpus,
  };
}

/** How long the launcher sleeps on the vCPUs' way into KVM_RUN before it loads the VMM anyway (a run that failed). */
const RUNNING_WAIT_MS = 100;

/**
 * Sleeps until every vCPU is in KVM_RUN: loading the VMM meanwhile would take a CPU from a vCPU's worker thread that
 * has not reached its own CPU yet (3 to 4 ms of a 2-vCPU resume, measured).
 */
function waitUntilRunning(vcpus: readonly number[]): void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const deadline = process.hrtime.bigint() + BigInt(RUNNING_WAIT_MS * 1e6);
  while (!vcpus.every((vcpu) => native.kvmRunStartedAt(vcpu) !== 0n) && process.hrtime.bigint() < deadline) Atomics.wait(nap, 0, 0, 0.05);
}

/** A native mapping read as a StateFile reads a Mapping (no Mapping object: the mount makes the one that owns it). */
function bareMapping(id: number, length: number): StateBytes {
  return { id, length, bytes: (offset = 0, bytes = length - offset) => new Uint8Array(native.mappingBuffer(id, offset, bytes)) };
}

function openPool(spec: EarlyResumeSpec): { fd: number; owned: boolean } {
  if ('fd' in spec.pool) return { fd: spec.pool.fd, owned: false };
  return { fd: native.fileOpen(spec.pool.path, false, false, 0), owned: true };
}

/**
 * Resumes the guest the spec in the environment describes (and removes it from the environment), or says why not:
 * then nothing of it is left behind and the VMM program resumes the guest the usual way, from the state file.
 */
export function resumeEarly(env: NodeJS.ProcessEnv, launchedAtNs: bigint): EarlyResume | undefined {
  // This module's import loaded the addon.
  const addonNs = process.hrtime.bigint();
  const text = env[EARLY_RESUME_ENV];
  delete env[EARLY_RESUME_ENV];
  if (text === undefined) return undefined;
  const made: { ram?: number; state?: number; kvm?: number; vm?: number; vcpus: number[] } = { vcpus: [] };
  try {
    const spec = JSON.parse(text) as EarlyResumeSpec;
    if (spec.version !== 1) return { error: `${EARLY_RESUME_ENV} has version ${String(spec.version)}; this launcher reads version 1` };
    const pool = openPool(spec);
    let ram, state;
    try {
      const info = native.fdInfo(pool.fd);
      if (info.dev !== spec.dev || info.ino !== spec.ino) return { error: 'the pool is not the file the paused VMM mapped guest RAM from' };
      state = mapFromRecipe(pool.fd, spec.state);
      made.state = state.id;
      ram = mapFromRecipe(pool.fd, spec.ram);
      made.ram = ram.id;
    } finally {
      if (pool.owned) native.fdClose(pool.fd);
    }
    const mappedNs = process.hrtime.bigint();
    made.kvm = native.kvmOpen();
    made.vm = native.kvmCreateVm(made.kvm);
    for (let index = 0; index < spec.vcpus; index++) made.vcpus.push(native.kvmCreateVcpu(made.kvm, made.vm, index));
    native.kvmSetMemory(made.vm, 0, 0, ram.id, 0, ram.length);
    // One vCPU to a CPU, as KvmMachine.spreadVcpus() places them (set before they run: a running vCPU refuses).
    if (spec.vcpus > 1) {
      const cpus = native.threadAffinity();
      made.vcpus.forEach((vcpu, index) => native.kvmSetAffinity(vcpu, [cpus[index % cpus.length]!]));
    }
    const vmNs = process.hrtime.bigint();
    // Loaded here, one after the other, before any runs: a vCPU that cannot load fails the whole resume, and the VMM
    // then resumes the guest from the same slots itself. (On their own threads they would wait for each other, a
    // chain of wake-ups that cost more than the loads.)
    const saved = new StateFile(bareMapping(state.id, state.length), 'the state file');
    if (!saved.vcpusPublished || saved.vcpuCount !== spec.vcpus)
      throw new Error(`the state file holds no saved state of ${spec.vcpus} vCPUs`);
    made.vcpus.forEach((vcpu, index) => native.kvmRestoreState(vcpu, saved.slot(index)));
    const runs = made.vcpus.map((vcpu) => native.kvmRun(vcpu));
    waitUntilRunning(made.vcpus);
    return {
      kvm: made.kvm,
      vm: made.vm,
      vcpus: made.vcpus,
      ram: { made: ram, recipe: spec.ram },
      state: { made: state, recipe: spec.state },
      runs,
      stampsNs: { launched: launchedAtNs, addon: addonNs, mapped: mappedNs, vm: vmNs },
    };
  } catch (error) {
    for (const vcpu of made.vcpus) native.kvmCloseVcpu(vcpu);
    for (const fd of [made.vm, made.kvm]) if (fd !== undefined) native.fdClose(fd);
    for (const id of [made.ram, made.state]) if (id !== undefined) native.unmap(id);
    return { error: (error as Error).message };
  }
}
