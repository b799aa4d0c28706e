#!/usr/bin/env node
// The guestmemfs command: inspect what the machine offers for pools, and run the demo.
import { Command } from 'commander';
import { runHandoverDemo, verifyHandoverDemo } from '../lib/demo/handover-demo';
import { GuestmemfsError } from '../lib/errors';
import { machineSupport } from '../lib/pool/hugepages';
import { formatSize, MiB, parseSize } from '../lib/units';

const program = new Command();
program
  .name('guestmemfs')
  .description('Persistent in-memory filesystem for VM guest memory over a hugetlbfs pool')
  .option('--debug', 'show stack traces for errors');

program
  .command('detect')
  .description('show huge page sizes, free pages, hugetlbfs mounts and what a pool can use here')
  .option('--json', 'machine-readable output')
  .addHelpText('after', '\nExample:\n  $ guestmemfs detect --json')
  .action((options: { json?: boolean }) => {
    const support = machineSupport();
    if (options.json) {
      process.stdout.write(`${JSON.stringify(support, null, 2)}\n`);
      return;
    }
    const out: string[] = [];
    out.push(`root: ${support.isRoot ? 'yes' : 'no (cannot reserve huge pages or mount hugetlbfs)'}`);
    out.push(`default huge page size: ${formatSize(support.defaultHugePageSize)}`);
    for (const size of support.hugePageSizes) {
      out.push(`${formatSize(size.pageSize)} pages: ${size.total} total, ${size.free} free, ${size.reserved} reserved, ${size.available} available`);
    }
    if (support.hugetlbfsMounts.length === 0) out.push('hugetlbfs mounts: none');
    for (const mount of support.hugetlbfsMounts) out.push(`hugetlbfs mount: ${mount.mountpoint} (${formatSize(mount.pageSize)} pages)`);
    out.push(`4 KiB fallback: always available (shmem THP: ${support.shmemTransparentHugePages ?? 'unknown'})`);
    out.push(`/dev/kvm: ${support.kvm ? 'usable' : 'not usable'}`);
    process.stdout.write(`${out.join('\n')}\n`);
  });

program
  .command('demo')
  .description('live-update demo: write guest RAM into a guestmemfs file, kexec into a new process, prove the same bytes on the same pages')
  .option('--size <size>', 'guest RAM size (K/M/G suffixes)', '512M')
  .addHelpText('after', '\nExample:\n  $ sudo guestmemfs demo --size 1G')
  .action((options: { size: string }) => {
    const size = parseSize(options.size);
    if (size % (2 * MiB) !== 0 || size === 0) throw new GuestmemfsError('EINVAL', `demo size must be a positive multiple of 2 MiB, got ${options.size}`);
    runHandoverDemo({ size, verifierArgv: [process.execPath, __filename, 'demo-verify'] });
  });

program
  .command('demo-verify', { hidden: true })
  .action(() => verifyHandoverDemo());

try {
  program.parse();
} catch (error) {
  const debug = program.opts<{ debug?: boolean }>().debug;
  if (error instanceof GuestmemfsError && !debug) {
    process.stderr.write(`guestmemfs: ${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
