// The KVM layer of the VMM prototype: a real 64-bit guest running from guestmemfs memory on /dev/kvm, paused, its
// vCPU state saved and restored into a new VM, finishing with the checksum of an uninterrupted run.
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Filesystem, MEMFILE_F_UNMOVABLE, MEMFILE_F_UNRECLAIMABLE, MiB, mkfs, mount, Pool, premapFile } from '../lib/index';
import { native } from '../lib/native';
import { StateFile } from '../lib/vmm/state-file';
import { Vmm } from '../lib/vmm/vmm';
import { demoGuestChecksum, demoGuestCode, GUEST, KvmMachine, kvmUnavailableReason, prepareVm } from '../lib/vmm/machine';
import { captureError, captureRejection, machine, signalled, skipReason, uniquePath } from './helpers';

const m = machine();
const RAM = 64 * MiB;
const skip = skipReason(m.skip2M || kvmUnavailableReason());

describe.skipIf(skip)('a KVM guest on guestmemfs memory', () => {
  let pool: Pool;
  let gfs: Filesystem;
  beforeAll(() => {
    pool = Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'kvm'), size: 4 * RAM + 64 * MiB });
    mkfs(pool);
    gfs = mount(pool);
    for (const name of ['/a', '/b', '/c']) {
      gfs.create(name, { type: 'guest' });
      gfs.truncate(name, RAM);
    }
  });
  afterAll(() => {
    gfs.unmount();
    fs.rmSync(pool.path!, { force: true });
    pool.close();
  });

  it('runs the assembled guest to its halt, and its checksum is the one the reference computes', async () => {
    const ram = gfs.map('/a');
    const vm = KvmMachine.create(ram);
    const options = { steps: 200_000, seed: 0x1234n };
    vm.loadDemoGuest(options);
    const before = process.hrtime.bigint();
    const run = vm.run();
    // The vCPU's own thread stamps its entry into KVM_RUN (the end of a blackout), on the clock of process.hrtime.
    await signalled(() => vm.runStartedAt() !== 0n);
    expect(vm.runStartedAt()).toBeGreaterThanOrEqual(before);
    expect(vm.runStartedAt()).toBeLessThanOrEqual(process.hrtime.bigint());
    expect(await run).toBe('halted');
    expect(vm.serial()).toEqual([`${demoGuestChecksum(RAM, options)}\n`]);
    expect(vm.saveState().length).toBeGreaterThan(4096); // halted, not running: the state can be saved
    vm.close();
    ram.unmap();
  });

  it.each([1, 2])(
    'pause, save, a new VM over a new mapping of the same file, restore, resume: same checksums, same frames (%i vCPUs)',
    { timeout: 120_000 },
    async (vcpus) => {
      // kvm-pvm (this machine has no hardware virtualization) executes such a guest at ~6 µs a step: 400k steps run ~2.5 s.
      const options = { steps: 400_000, seed: 0xfeedn };
      // The reference: the same guest, uninterrupted, in its own file.
      const refRam = gfs.map('/b');
      refRam.zero();
      const reference = KvmMachine.create(refRam, undefined, vcpus);
      reference.loadDemoGuest(options);
      expect(await reference.run()).toBe('halted');
      const expected = reference.serial().map((output) => output.replace(/\./g, ''));
      // Each vCPU worked its own slice with its own seed, as the TypeScript reference computes it.
      expect(expected).toEqual(
        demoGuestChecksum(RAM, options, vcpus)
          .split('\n')
          .map((line) => `${line}\n`),
      );
      reference.close();
      refRam.unmap();

      const ram = gfs.map('/c');
      ram.zero();
      const frames = ram.physicalFrames().map(String);
      const first = KvmMachine.create(ram, undefined, vcpus);
      // The guest stops at its gate, half way, and says so: the pause below lands mid-run on the guest's signal.
      first.loadDemoGuest({ ...options, gateAtStep: options.steps / 2 });
      const running = first.run();
      // The successor's VM, with the guest's RAM mapped and registered, is made while the guest still runs, as a
      // transfer-mode successor does before the pause.
      const prepared = prepareVm(premapFile(pool, '/c'), vcpus);
      await signalled(() => first.gateReached());
      expect(captureError(() => first.saveState())).toMatchObject({ code: 'EBUSY' });
      expect(await captureRejection(first.run())).toMatchObject({ code: 'EBUSY' });
      first.pause();
      expect(await running).toBe('paused');
      const state = first.saveState();
      const progress = first.serial();
      first.close();
      ram.unmap();

      const again = gfs.map('/c', { premapped: prepared.ram });
      expect(again).toBe(prepared.ram);
      expect(again.physicalFrames().map(String)).toEqual(frames);
      const second = KvmMachine.create(again, prepared);
      expect(captureError(() => KvmMachine.create(again, prepared))).toMatchObject({
        code: 'EINVAL',
        message: expect.stringMatching(/prepare one VM per machine/),
      });
      second.restoreState(state);
      expect(second.gateReached()).toBe(true); // the restored guest still waits at its gate, in the same RAM
      second.releaseGate();
      expect(await second.run()).toBe('halted');
      const after = second.serial();
      expect(progress.map((output, index) => (output + after[index]!).replace(/\./g, ''))).toEqual(expected);
      expect(captureError(() => second.restoreState(new Uint8Array(10)))).toMatchObject({ code: 'EINVAL' });
      second.close();
      expect(captureError(() => second.pause())).toMatchObject({ code: 'EINVAL' });
      again.unmap();
    },
  );

  it('a prepared VM holding other RAM than the machine is given is replaced by a fresh one', async () => {
    const wrong = prepareVm(premapFile(pool, '/b'));
    const ram = gfs.map('/a');
    ram.zero(); // the first test's guest left its work in /a; the reference checksum starts from zeroed RAM
    const vm = KvmMachine.create(ram, wrong);
    expect(wrong.used).toBe(true);
    // Had the old VM been kept, slot 0 would still hold /b: KVM refuses to move a slot, and the guest would run on /b.
    const options = { steps: 1000, seed: 3n };
    vm.loadDemoGuest(options);
    expect(await vm.run()).toBe('halted');
    expect(vm.serial()).toEqual([`${demoGuestChecksum(RAM, options)}\n`]);
    expect([...ram.bytes(GUEST.code, 4)]).toEqual([...demoGuestCode().subarray(0, 4)]); // loaded into /a, where the guest ran
    expect(captureError(() => KvmMachine.create(ram, wrong))).toMatchObject({ code: 'EINVAL' });
    vm.close();
    ram.unmap();
    wrong.ram!.unmap();
  });

  it('the native handover: armed vCPUs save themselves on the pause, a second VM loads them on its own threads and runs on', async () => {
    const options = { steps: 300_000, seed: 0x77n, gateAtStep: 500 };
    const ram = gfs.map('/a');
    ram.zero();
    const reference = KvmMachine.create(ram, undefined, 2);
    reference.loadDemoGuest({ steps: options.steps, seed: options.seed });
    expect(await reference.run()).toBe('halted');
    const expected = reference.serial();
    reference.close();
    ram.zero();
    gfs.create('/handover-state', { type: 'state' });
    gfs.truncate('/handover-state', 2 * MiB);
    const stateMapping = gfs.map('/handover-state');
    const area = new StateFile(stateMapping, '/handover-state');
    const first = KvmMachine.create(ram, undefined, 2);
    first.loadDemoGuest(options);
    const running = first.run();
    await signalled(() => first.gateReached());
    area.clear(2);
    first.vcpus.forEach((vcpu, index) => native.kvmArmSave(vcpu, stateMapping.id, index, 2));
    // A successor's VM waits for the area; one paused before it is published ends 'cancelled' and loads nothing.
    const early = KvmMachine.create(ram, undefined, 2);
    const cancelled = early.runFromHandover(stateMapping, -1);
    early.pause();
    expect(await cancelled).toBe('cancelled');
    early.close();
    const second = KvmMachine.create(ram, undefined, 2);
    const resumed = second.runFromHandover(stateMapping, -1);
    first.releaseGate();
    first.pause();
    expect(await running).toBe('paused');
    expect(area.vcpusPublished).toBe(true); // by the vCPU threads: no saveState() here
    expect([0, 1].map((index) => area.slotFilled(index))).toEqual([true, true]);
    expect(await resumed).toBe('halted');
    expect(second.handoverNoticedAt()).toBeGreaterThan(0n);
    const progress = first.serial();
    const after = second.serial();
    expect(progress.map((output, index) => output + after[index]!)).toEqual(expected);
    // A VM of another size refuses the slots instead of running a guest from some other moment.
    const mismatched = KvmMachine.create(ram, undefined, 1);
    expect(await mismatched.runFromHandover(stateMapping, -1)).toBe('load-mismatch');
    mismatched.close();
    // Misuse: an index past the count, an area larger than the mapping, a vCPU that does not exist.
    expect(captureError(() => native.kvmArmSave(second.vcpus[0]!, stateMapping.id, 2, 2)).code).toBe('EINVAL');
    expect(captureError(() => native.kvmArmSave(second.vcpus[0]!, stateMapping.id, 0, 1024)).code).toBe('EINVAL');
    expect(captureError(() => native.kvmArmSave(999_999, stateMapping.id, 0, 1)).code).toBe('EINVAL');
    first.close(); // disarms: the state file can be unmapped
    second.close();
    stateMapping.unmap();
    gfs.unlink('/handover-state');
    ram.unmap();
  });

  it('the memory slot consumes the RAM file: no change under a running guest; once unmapped, the slot is cut first', async () => {
    const config = { ramPath: '/slot-ram', statePath: '/slot-state', ramSize: RAM };
    const options = { steps: 300_000, seed: 0x51n, gateAtStep: 1000 };
    const vmm = Vmm.boot(gfs, config, options);
    expect(vmm.slotConsumer?.flags).toBe(MEMFILE_F_UNMOVABLE | MEMFILE_F_UNRECLAIMABLE);
    const running = vmm.start();
    await signalled(() => vmm.machine.gateReached());
    // The VMM's mapping pins the RAM: neither a shrink nor a punch may take it from the guest, and KVM is told nothing.
    expect(captureError(() => gfs.truncate(config.ramPath, RAM / 2)).code).toBe('EBUSY');
    expect(captureError(() => gfs.punch(config.ramPath, 0, 2 * MiB)).code).toBe('EBUSY');
    expect(vmm.machine.slotBytes).toBe(RAM);
    vmm.machine.releaseGate();
    expect(await running).toBe('halted');
    expect(vmm.serial()).toBe(`${demoGuestChecksum(RAM, options)}\n`);
    // get_pfn, the consumer's look at its frames, agrees with the mapping's page map.
    expect(vmm.slotConsumer!.getPfn(4 * MiB).pfn).toBe(vmm.ram.physicalFrames(4 * MiB, 2 * MiB)[0]);
    // With the mapping gone but the VM still there, a shrink reaches KVM before the blocks are freed.
    vmm.ram.unmap();
    gfs.truncate(config.ramPath, RAM / 4);
    expect(vmm.machine.slotBytes).toBe(0);
    gfs.unlink(config.ramPath);
    gfs.unlink(config.statePath);
    vmm.close();
    expect(vmm.slotConsumer!.registered).toBe(false);
  });
});

describe('thread affinity (the sched family the transfer-mode VMMs use to stay on separate CPUs)', () => {
  it("reads and sets the calling thread's CPUs, and refuses bad input leaving them as they were", () => {
    const allowed = native.threadAffinity();
    expect(allowed.length).toBeGreaterThan(0);
    expect(allowed.every((cpu) => Number.isInteger(cpu) && cpu >= 0)).toBe(true);
    try {
      native.setThreadAffinity([allowed[0]!]);
      expect(native.threadAffinity()).toEqual([allowed[0]]);
      for (const bad of [[], [-1], [1.5], ['0'], [4096]] as unknown as number[][]) {
        expect(captureError(() => native.setThreadAffinity(bad))).toMatchObject({ code: 'EINVAL', syscall: 'sched_setaffinity' });
      }
      expect(captureError(() => (native.setThreadAffinity as (cpus: unknown) => void)('0'))).toMatchObject({ code: 'EINVAL' });
      // A CPU number the kernel does not have: refused by the kernel itself.
      expect(captureError(() => native.setThreadAffinity([1023]))).toMatchObject({ code: 'EINVAL', syscall: 'sched_setaffinity' });
      expect(native.threadAffinity()).toEqual([allowed[0]]);
    } finally {
      native.setThreadAffinity(allowed);
    }
    expect(native.threadAffinity()).toEqual(allowed);
  });
});
