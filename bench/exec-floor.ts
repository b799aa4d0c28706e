// bench:vmm child: the floor of an exec-mode live update for any VMM written for Node on this machine, with none of
// guestmemfs's own code: a process holding a VM over guest RAM closes it and execve's Node, which maps the same RAM and
// creates a VM, a vCPU and the memory slot. Reports when the new process ran its first line (execve + Node start-up)
// and when KVM was ready (a VM with as many vCPUs as the VMM's guest).
//
//   node exec-floor.js before <pool> <ramBytes> [vcpus]        (execs itself as `after`)
// Before anything is loaded: in the `after` stage, the end of execve + Node start-up.
const startedAt = process.hrtime.bigint();
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a bare require, as the launcher loads it
import path = require('node:path');
import type { NativeBinding } from '../lib/native';
// The raw addon, loaded after the stamp (an import would run first): loading it is part of what any VMM needs for
// KVM, but lib/native's error wrapping is guestmemfs's own, so it stays out of the floor.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'guestmemfs_native.node')) as NativeBinding;

const [stage, poolPath, ramText, vcpusText, stoppedText] = process.argv.slice(2) as [string, string, string, string?, string?];
const ramBytes = Number(ramText);
const vcpuCount = Number(vcpusText ?? 1);
const PAGE = 2 * 1024 * 1024;
const MAP_FLAGS = native.mapFlags.populate | native.mapFlags.writable;

/** Guest RAM mapped from the pool file and registered as memory slot 0 of a new VM with its vCPUs. */
function vmOverRam(): { vm: number; vcpus: number[]; ram: number } {
  const fd = native.fileOpen(poolPath, false, false, 0);
  const result = new Float64Array(native.mapResult.slots);
  native.mapExtents(fd, new Float64Array([0, ramBytes]), MAP_FLAGS, PAGE, 0, result);
  const kvm = native.kvmOpen();
  const vm = native.kvmCreateVm(kvm);
  const vcpus = Array.from({ length: vcpuCount }, (_, index) => native.kvmCreateVcpu(kvm, vm, index));
  const ram = result[native.mapResult.id]!;
  native.kvmSetMemory(vm, 0, 0, ram, 0, ramBytes);
  return { vm, vcpus, ram };
}

if (stage === 'before') {
  const { vm, vcpus } = vmOverRam();
  const stoppedAt = process.hrtime.bigint(); // where a VMM's blackout would start
  for (const vcpu of vcpus) native.kvmCloseVcpu(vcpu);
  native.fdClose(vm);
  const env = Object.entries({ ...process.env }).map(([key, value]) => `${key}=${value}`);
  native.processExec(
    process.execPath,
    [process.execPath, __filename, 'after', poolPath, ramText, String(vcpuCount), stoppedAt.toString()],
    env,
    [],
  );
} else {
  vmOverRam();
  const ready = process.hrtime.bigint();
  const stoppedAt = BigInt(stoppedText!);
  process.stdout.write(
    `${JSON.stringify({ startupMs: Number(startedAt - stoppedAt) / 1e6, kvmReadyMs: Number(ready - stoppedAt) / 1e6 })}\n`,
  );
}
