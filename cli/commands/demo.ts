// guestmemfs demo: a KVM guest on guestmemfs memory live-updated in exec and transfer modes (without KVM: the
// filesystem handover alone).
import * as path from 'node:path';
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { runHandoverDemo } from '../../lib/demo/handover-demo';
import { runServedDemo } from '../../lib/demo/served-demo';
import { runVmmDemo } from '../../lib/demo/vmm-demo';
import { MiB, parseSize } from '../../lib/units';
import { kvmUnavailableReason } from '../../lib/vmm/machine';
import { command } from '../common';

export function register(program: Command): void {
  command(
    program,
    'demo',
    'live-update demo: a KVM guest updated in exec and transfer modes, then two VMMs sharing one served pool ' +
      '(without KVM: the filesystem handover)',
    'sudo guestmemfs demo',
  )
    .option('--size <size>', 'guest RAM size (K/M/G suffixes)', '1G')
    .option('--steps <n>', 'guest work steps (this VM runs ~6 µs each under kvm-pvm)', '600000')
    .option('--updates <n>', 'live updates per mode', '3')
    .option('--no-vm', 'run only the filesystem handover demo (no KVM guest)')
    .option('--no-shared', 'skip the part with two VMMs sharing one pool that guestmemfs mount serves')
    .action(async (options: { size: string; steps: string; updates: string; vm: boolean; shared: boolean }) => {
      const bytes = parseSize(options.size);
      if (bytes % (2 * MiB) !== 0 || bytes === 0)
        throw new GuestmemfsError('EINVAL', `demo size must be a positive multiple of 2 MiB, got ${options.size}`);
      const noKvm = kvmUnavailableReason();
      if (options.vm && !noKvm) {
        runVmmDemo({ ramBytes: bytes, steps: Number(options.steps), updates: Number(options.updates) });
        // Two smaller guests: they share the machine's two CPUs, and each takes a slot of the pool.
        if (options.shared && !(await runServedDemo({ ramBytes: Math.max(16 * MiB, bytes / 8), steps: Number(options.steps) }))) {
          process.exitCode = 1;
        }
        return;
      }
      if (options.vm) process.stdout.write(`(${noKvm}: showing the filesystem handover without a guest)\n`);
      // The new process image runs this CLI again, to its hidden demo-verify command.
      runHandoverDemo({ size: bytes, verifierArgv: [process.execPath, path.join(__dirname, '..', 'guestmemfs.js'), 'demo-verify'] });
    });
}
