// guestmemfs detect: show huge page sizes, free pages, hugetlbfs mounts and what a pool can use here.
import type { Command } from 'commander';
import { machineSupport } from '../../lib/pool/hugepages';
import { formatSize } from '../../lib/units';
import { command, type Common, print } from '../common';

export function register(program: Command): void {
  command(
    program,
    'detect',
    'show huge page sizes, free pages, hugetlbfs mounts and what a pool can use here',
    'guestmemfs detect --json',
  ).action((options: Common) => {
    const support = machineSupport();
    print(options, support, () => {
      const out: string[] = [];
      out.push(`root: ${support.isRoot ? 'yes' : 'no (cannot reserve huge pages or mount hugetlbfs)'}`);
      out.push(`default huge page size: ${formatSize(support.defaultHugePageSize)}`);
      for (const info of support.hugePageSizes)
        out.push(
          `${formatSize(info.pageSize)} pages: ${info.total} total, ${info.free} free, ${info.reserved} reserved, ` +
            `${info.available} available`,
        );
      if (support.hugetlbfsMounts.length === 0) out.push('hugetlbfs mounts: none');
      for (const mount of support.hugetlbfsMounts) out.push(`hugetlbfs mount: ${mount.mountpoint} (${formatSize(mount.pageSize)} pages)`);
      out.push(`4 KiB fallback: always available (shmem THP: ${support.shmemTransparentHugePages ?? 'unknown'})`);
      out.push(`/dev/kvm: ${support.kvm ? 'usable' : 'not usable'}`);
      return out.join('\n');
    });
  });
}
