// guestmemfs ls: list a directory (like ls; -l for long format).
import type { Command } from 'commander';
import * as path from 'node:path';
import type { Stat } from '../../lib/fs/types';
import { badBlockNote, command, type Common, describeStat, modeString, print, size } from '../common';
import { withReader } from '../pools';

export function register(program: Command): void {
  command(program, 'ls', 'list a directory (like ls; -l for long format)', 'guestmemfs ls -lh /dev/hugepages/pool /vms')
    .argument('<pool>')
    .argument('[path]', 'directory inside the pool', '/')
    .option('-l', 'long format')
    .option('-h, --human-readable', 'sizes like 2M')
    .action((spec: string, dir: string, options: Common & { l?: boolean; humanReadable?: boolean }) =>
      withReader(spec, async (gfs) => {
        const entries: Array<Record<string, unknown> & { name: string } & Stat> = [];
        for (const entry of await gfs.readdirEntries(dir)) {
          const stat = await gfs.stat(path.posix.join(dir, entry.name));
          entries.push({ name: entry.name, ...describeStat(stat) } as Record<string, unknown> & { name: string } & Stat);
        }
        entries.sort((a, b) => a.name.localeCompare(b.name));
        print(options, entries, () =>
          entries
            .map((entry) =>
              options.l
                ? `${modeString(entry)} ${String(entry.nlink).padStart(2)} ${String(entry.uid).padEnd(5)} ` +
                  `${String(entry.gid).padEnd(5)} ${size(entry.size, options.humanReadable).padStart(10)} ` +
                  `${(entry.fileType ?? 'dir').padEnd(5)} ` +
                  `${new Date(Number(entry.mtimeNs / 1_000_000n)).toISOString().slice(0, 16).replace('T', ' ')} ${entry.name}` +
                  badBlockNote(entry)
                : entry.name + badBlockNote(entry),
            )
            .join('\n'),
        );
      }),
    );
}
