// guestmemfs quota: set, remove or show the block limits of uids and directory trees.
import type { Command } from 'commander';
import { parseSize } from '../../lib/units';
import { command, type Common, print, quotaLines, usageError } from '../common';
import { withFilesystem, withReader } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'quota',
    'set (SIZE), remove (none) or show the block limit of a uid or a directory tree',
    'guestmemfs quota /dev/hugepages/pool --uid 1000 8G',
  )
    .argument('<pool>')
    .argument('[limit]', 'a size such as 8G, or none to remove the limit; omit to show the limits')
    .option('--uid <uid>', 'limit the files this uid owns')
    .option('--dir <path>', 'limit the files below this directory')
    .action(async (spec: string, limit: string | undefined, options: Common & { uid?: string; dir?: string }) => {
      if (limit === undefined) {
        const quotas = await withReader(spec, (gfs) => gfs.quotas());
        return print(options, quotas, () => quotaLines(quotas).join('\n'));
      }
      if ((options.uid === undefined) === (options.dir === undefined)) throw usageError('name exactly one of --uid or --dir');
      if (options.uid !== undefined && !/^\d+$/.test(options.uid)) throw usageError(`uid "${options.uid}" must be a number`);
      const target = options.uid !== undefined ? { uid: Number(options.uid) } : { dir: options.dir! };
      const bytes = limit === 'none' ? null : parseSize(limit);
      await withFilesystem(spec, (gfs) => gfs.setQuota(target, bytes));
    });
}
