// bench:vmm child: the floor of an exec-mode live update of a running guest for any VMM written for Node on this
// machine, with none of guestmemfs's code in the new process. The `before` process runs the demo guest over the guest
// RAM file's blocks, pauses it, saves its vCPUs into a memfd, closes the VM and execve's Node; the `after` process maps
// the same RAM, creates a VM, its vCPUs and the memory slot, loads the vCPUs and runs them. Reports when the new
// process ran its first line (execve + Node start-up), when KVM was ready, and when every vCPU was in KVM_RUN (where a
// blackout ends).
//
//   node exec-floor.js before <pool> <vcpus>        (execs itself as `after`)
// Before anything is loaded: in the `after` stage, the end of execve + Node start-up.
const startedAt = process.hrtime.bigint();
// eslint-disable-next-line @typescript-eslint/no-require-imports -- bare requires, as the launcher loads them
import fs = require('node:fs');
// eslint-disable-next-line @typescript-eslint/no-require-imports
import path = require('node:path');
import type * as MountModule from '../lib/fs/mount';
import type * as NativeModule from '../lib/native';
import type { NativeBinding } from '../lib/native';
import type * as PoolModule from '../lib/pool/pool';
import type * as MachineModule from '../lib/vmm/machine';
import type * as UpdateCommonModule from '../lib/vmm/update-common';

const PAGE = 2 * 1024 * 1024;
/** How long the guest runs before the pause: long enough to have touched its RAM, as a guest being updated has. */
const RUN_BEFORE_MS = 300;

interface Handoff {
  extents: number[];
  vcpus: number;
  stateFd: number;
  stoppedAtNs: string;
}

/** The new process: nothing but the raw addon (lib/native's error wrapping is guestmemfs's own). */
function after(poolPath: string, handoff: Handoff): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'guestmemfs_native.node')) as NativeBinding;
  const fd = native.fileOpen(poolPath, false, false, 0);
  const result = new Float64Array(native.mapResult.slots);
  const flags = native.mapFlags.populate | native.mapFlags.writable;
  native.mapExtents(fd, new Float64Array(handoff.extents), flags, PAGE, 0, result);
  const ramBytes = result[native.mapResult.length]!;
  const kvm = native.kvmOpen();
  const vm = native.kvmCreateVm(kvm);
  const vcpus = Array.from({ length: handoff.vcpus }, (_, index) => native.kvmCreateVcpu(kvm, vm, index));
  native.kvmSetMemory(vm, 0, 0, result[native.mapResult.id]!, 0, ramBytes);
  const ready = process.hrtime.bigint();
  const states = Buffer.allocUnsafe(fs.fstatSync(handoff.stateFd).size);
  fs.readSync(handoff.stateFd, states, 0, states.length, 0);
  const each = native.kvmStateBytes();
  const cpus = native.threadAffinity();
  vcpus.forEach((vcpu, index) => {
    native.kvmRestoreState(vcpu, states.subarray(index * each, (index + 1) * each));
    if (vcpus.length > 1) native.kvmSetAffinity(vcpu, [cpus[index % cpus.length]!]);
  });
  const runs = vcpus.map((vcpu) => native.kvmRun(vcpu));
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while (vcpus.some((vcpu) => native.kvmRunStartedAt(vcpu) === 0n)) Atomics.wait(nap, 0, 0, 0.05);
  const running = vcpus.reduce((latest, vcpu) => (native.kvmRunStartedAt(vcpu) > latest ? native.kvmRunStartedAt(vcpu) : latest), 0n);
  const stoppedAt = BigInt(handoff.stoppedAtNs);
  for (const vcpu of vcpus) native.kvmPause(vcpu);
  // The old image's address space goes once the guest runs, as the VMM lets it go (EXEC_HOLDER_ENV, lib/process.ts).
  const holder = /^(\d+):(\d+)$/.exec(process.env.GUESTMEMFS_EXEC_HOLDER ?? '');
  if (holder) native.fdClose(Number(holder[2]));
  void Promise.all([...runs, holder ? native.processReap(Number(holder[1])) : undefined]).then(() => {
    const ms = (at: bigint) => Number(at - stoppedAt) / 1e6;
    process.stdout.write(`${JSON.stringify({ startupMs: ms(startedAt), kvmReadyMs: ms(ready), runningMs: ms(running) })}\n`);
  });
}

/** The old process: runs the guest (guestmemfs's code is fine here, none of it is measured but the close). */
async function before(poolPath: string, vcpuCount: number): Promise<void> {
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded only in this stage, after the stamp */
  const { mount } = require('../lib/fs/mount') as typeof MountModule;
  const { native } = require('../lib/native') as typeof NativeModule;
  const { Pool } = require('../lib/pool/pool') as typeof PoolModule;
  const { KvmMachine } = require('../lib/vmm/machine') as typeof MachineModule;
  const { CONFIG } = require('../lib/vmm/update-common') as typeof UpdateCommonModule;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const pool = Pool.open(poolPath);
  const view = mount(pool, { readOnly: true });
  const extents = view.extents(CONFIG.ramPath);
  view.unmount();
  const ram = pool.map(extents, { writable: true, populate: true });
  const machine = KvmMachine.create(ram, undefined, vcpuCount);
  machine.loadDemoGuest({ steps: 2 ** 40, seed: 1n });
  const running = machine.run();
  await new Promise((resolve) => setTimeout(resolve, RUN_BEFORE_MS));
  machine.pause();
  await running;
  const stoppedAt = machine.runStoppedAt(); // where a VMM's blackout starts
  const stateFd = native.memfdCreate('exec-floor-vcpus', 0);
  fs.writeSync(stateFd, machine.saveState());
  native.fdSetInherit(stateFd, true);
  machine.close();
  ram.unmap();
  const handoff: Handoff = {
    extents: extents.flatMap((e) => [e.offset, e.length]),
    vcpus: vcpuCount,
    stateFd,
    stoppedAtNs: stoppedAt.toString(),
  };
  const env = Object.entries({ ...process.env }).map(([key, value]) => `${key}=${value}`);
  // The same deferred teardown as the VMM's exec (kexec's deferTeardown): a floor must not pay what the VMM does not.
  const argv = [process.execPath, __filename, 'after', poolPath, JSON.stringify(handoff)];
  native.processExec(process.execPath, argv, env, [stateFd], 'GUESTMEMFS_EXEC_HOLDER');
}

const [stage, poolPath, arg] = process.argv.slice(2) as [string, string, string];
if (stage === 'before') {
  before(poolPath, Number(arg)).catch((error: Error) => {
    process.stderr.write(`${error.stack ?? error.message}\n`);
    process.exit(1);
  });
} else {
  after(poolPath, JSON.parse(arg) as Handoff);
}
