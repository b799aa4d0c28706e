// An exec-mode resume before the VMM loads (lib/vmm/early-resume.ts): the guest resumed from the recipes a paused VMM
// leaves, adopted by the mount that follows, and every recipe that does not fit refused without running the guest.
import * as fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Filesystem, MiB, mkfs, mount, Pool } from '../lib/index';
import { native } from '../lib/native';
import { EARLY_RESUME_ENV, type EarlyResumeSpec, resumeEarly } from '../lib/vmm/early-resume';
import type { EarlyResume } from '../lib/vmm/exec-protocol';
import { demoGuestChecksum, kvmUnavailableReason } from '../lib/vmm/machine';
import { Vmm } from '../lib/vmm/vmm';
import { captureRejection, machine, signalled, skipReason, uniquePath } from './helpers';

const m = machine();
const RAM = 64 * MiB;
const FILES = { ramPath: '/vm0/ram', statePath: '/vm0/state' };
const GUEST = { steps: 150_000, seed: 0x5eedn };

type Made = Exclude<EarlyResume, { error: string }>;

function made(early: EarlyResume | undefined): Made {
  if (!early || 'error' in early) throw new Error(`no early resume: ${early ? early.error : 'no spec'}`);
  return early;
}

describe.skipIf(skipReason(m.skip2M || kvmUnavailableReason()))('resuming a guest before the VMM loads', () => {
  let pool: Pool;
  let spec: EarlyResumeSpec;
  /** Where a byte-for-byte copy of the saved state file lives: a state recipe that is not the state file's. */
  let copyExtents: number[];

  /** Boots a 2-vCPU guest, lets it run a while, pauses and saves it, and hands the pool over as an execve would. */
  beforeEach(async () => {
    pool = Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'early'), size: RAM + 64 * MiB });
    mkfs(pool);
    const gfs = mount(pool);
    gfs.mkdir('/vm0');
    const vmm = Vmm.boot(gfs, { ...FILES, ramSize: RAM, vcpus: 2 }, GUEST);
    const running = vmm.start();
    await signalled(() => vmm.machine.runStartedAt() !== 0n);
    const { stoppedAtNs } = await vmm.pause();
    expect(await running).toBe('paused');
    vmm.saveState(stoppedAtNs, { note: 'saved before the early resume' });
    spec = vmm.earlyResumeSpec();
    vmm.close();
    gfs.create('/vm0/copy', { type: 'state' });
    gfs.write('/vm0/copy', gfs.read(FILES.statePath));
    copyExtents = gfs.extents('/vm0/copy').flatMap((extent) => [extent.offset, extent.length]);
    gfs.serialise();
    gfs.unmount();
  });
  afterEach(() => {
    fs.rmSync(pool.path!, { force: true });
    pool.close();
  });

  const mountHandedOver = (): Filesystem => mount(Pool.open(pool.path!), { requireHandover: true });

  it('runs the guest from the recipes, and the mount adopts its VM and mappings: same checksums as an uninterrupted run', async () => {
    const env: NodeJS.ProcessEnv = { [EARLY_RESUME_ENV]: JSON.stringify(spec) };
    const early = made(resumeEarly(env, process.hrtime.bigint()));
    expect(env[EARLY_RESUME_ENV]).toBeUndefined(); // a later execve must not carry a stale spec
    // It returns with every vCPU in KVM_RUN: the guest runs before anything of the VMM is loaded.
    expect(early.vcpus.every((vcpu) => native.kvmRunStartedAt(vcpu) !== 0n)).toBe(true);
    const gfs = mountHandedOver();
    const { vmm, saved, running } = await Vmm.adoptEarlyResume(gfs, FILES, early);
    expect(saved.extra).toEqual({ note: 'saved before the early resume' });
    // The mount's own map() of both files is the launcher's mapping, pinned by this process.
    expect(vmm.ram.id).toBe(early.ram.made.id);
    expect(vmm.ram.pinned).toBe(true);
    expect(await running).toBe('halted');
    expect(vmm.serial()).toBe(`${demoGuestChecksum(RAM, GUEST, 2)}\n`);
    vmm.close();
    gfs.unmount();
  });

  it('refuses a pool that is not the file the recipes are of, leaving nothing mapped', () => {
    const fds = fs.readdirSync('/proc/self/fd').length;
    const mappings = native.liveMappings();
    const early = resumeEarly({ [EARLY_RESUME_ENV]: JSON.stringify({ ...spec, ino: spec.ino + 1 }) }, 0n);
    expect(early).toEqual({ error: 'the pool is not the file the paused VMM mapped guest RAM from' });
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
    expect(native.liveMappings()).toBe(mappings);
  });

  it.each([
    ['another version', (s: EarlyResumeSpec) => ({ ...s, version: 2 }), /version 2; this launcher reads version 1/],
    ['extents outside the pool', (s: EarlyResumeSpec) => ({ ...s, ram: { ...s.ram, extents: [pool.size, RAM] } }), /EINVAL/],
    ['no JSON', () => '{', /JSON/],
  ])('refuses a spec with %s', (_, change, message) => {
    const changed = change(spec);
    const mappings = native.liveMappings();
    const early = resumeEarly({ [EARLY_RESUME_ENV]: typeof changed === 'string' ? changed : JSON.stringify(changed) }, 0n);
    expect(early && 'error' in early ? early.error : '').toMatch(message);
    expect(native.liveMappings()).toBe(mappings);
  });

  it('a state recipe over memory that holds no saved vCPUs is refused before any vCPU runs, leaving nothing behind', () => {
    const mappings = native.liveMappings();
    // The first block of guest RAM: no saved vCPUs there.
    const wrong = { ...spec, state: { ...spec.state, extents: [spec.ram.extents[0]!, spec.state.extents[1]!] } };
    expect(resumeEarly({ [EARLY_RESUME_ENV]: JSON.stringify(wrong) }, 0n)).toEqual({
      error: 'the state file holds no saved state of 2 vCPUs',
    });
    expect(native.liveMappings()).toBe(mappings);
  });

  it('a state recipe over a copy of the state file runs the guest, and adopting it fails with EIO naming the file', async () => {
    const mappings = native.liveMappings();
    const early = made(
      resumeEarly({ [EARLY_RESUME_ENV]: JSON.stringify({ ...spec, state: { ...spec.state, extents: copyExtents } }) }, 0n),
    );
    const gfs = mountHandedOver();
    const error = await captureRejection(Vmm.adoptEarlyResume(gfs, FILES, early));
    expect(error).toMatchObject({ code: 'EIO', path: FILES.statePath });
    expect(error.message).toMatch(/does not give that file; the guest is stopped/);
    // Stopped, its VM closed and both of the launcher's mappings gone with the mount's own.
    expect(await Promise.all(early.runs)).toEqual(['paused', 'paused']);
    expect(native.liveMappings()).toBe(mappings + 1); // the mount's metadata
    gfs.unmount();
    expect(native.liveMappings()).toBe(mappings);
  });
});
