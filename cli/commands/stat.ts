// guestmemfs stat: show an inode.
import type { Command } from 'commander';
import { formatSize } from '../../lib/units';
import { badBlockNote, command, type Common, describeStat, modeString, pinLines, print } from '../common';
import { withReader } from '../pools';

export function register(program: Command): void {
  command(program, 'stat', 'show an inode', 'guestmemfs stat /dev/hugepages/pool /vms/vm0/ram')
    .argument('<pool>')
    .argument('<path>')
    .action((spec: string, target: string, options: Common) =>
      withReader(spec, async (gfs) => {
        const stat = await gfs.stat(target);
        const pins = stat.type === 'file' ? await gfs.pins(target) : [];
        print(options, { path: target, ...describeStat(stat), extents: await gfs.extents(target), pins }, () =>
          [
            `  File: ${target}`,
            `  Type: ${stat.type}${stat.fileType ? ` (${stat.fileType})` : ''}   Size: ${stat.size}   Blocks: ${stat.blocks} of ` +
              `${formatSize(stat.blockSize)}   Extents: ${stat.extents}`,
            ` Inode: ${stat.ino}   Links: ${stat.nlink}   Access: (${stat.mode.toString(8).padStart(4, '0')}/${modeString(stat)}) ` +
              `  Uid: ${stat.uid}   Gid: ${stat.gid}`,
            `Modify: ${new Date(Number(stat.mtimeNs / 1_000_000n)).toISOString()}${stat.contiguous ? '   (contiguous)' : ''}` +
              badBlockNote(stat),
            ...pinLines(pins),
          ].join('\n'),
        );
      }),
    );
}
