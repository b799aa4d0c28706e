// guestmemfs vmm: run the VMM prototype: boot the demo guest from a pool and live-update it (exec or transfer mode).
import { type Command, Option } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { native } from '../../lib/native';
import { type UpdateMode, updateArgv } from '../../lib/vmm/launch';
import { parseSize } from '../../lib/units';
import { kvmUnavailableReason } from '../../lib/vmm/machine';
import { command } from '../common';

export function register(program: Command): void {
  command(
    program,
    'vmm',
    'run the VMM prototype: boot the demo guest from a pool and live-update it (exec or transfer mode)',
    'sudo guestmemfs vmm /dev/hugepages/pool --ram 1G --mode transfer --updates 3',
  )
    .argument('<pool>', 'a pool file (it is reformatted)')
    .requiredOption('--ram <size>', 'guest RAM')
    .addOption(new Option('--mode <mode>', 'how to update').choices(['exec', 'transfer']).default('exec'))
    .option('--updates <n>', 'live updates at random points', '3')
    .option('--steps <n>', 'guest work steps', '600000')
    .option('--seed <n>', 'guest seed', '1')
    .option('--vcpus <n>', 'vCPUs of the guest (1 to 64)', '1')
    .action((poolPath: string, options: { ram: string; mode: string; updates: string; steps: string; seed: string; vcpus: string }) => {
      const vcpus = Number(options.vcpus);
      if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 64)
        throw new GuestmemfsError('EINVAL', `--vcpus ${options.vcpus} must be an integer from 1 to 64`);
      const noKvm = kvmUnavailableReason();
      if (noKvm) throw new GuestmemfsError('ENODEV', noKvm);
      const argv = updateArgv({
        mode: options.mode as UpdateMode,
        poolPath,
        ramBytes: parseSize(options.ram),
        steps: Number(options.steps),
        seed: BigInt(options.seed),
        updates: Number(options.updates),
        maxDelayMs: 400,
        vcpus,
      });
      native.processExec(
        process.execPath,
        argv,
        Object.entries(process.env).map(([key, value]) => `${key}=${value}`),
        [],
      );
    });
}
