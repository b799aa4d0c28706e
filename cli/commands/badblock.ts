// guestmemfs badblock: quarantine a block whose memory has failed, by block number or by byte offset in the pool.
import type { Command } from 'commander';
import { parseSize } from '../../lib/units';
import { command, type Common, print, usageError } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'badblock',
    'quarantine a block (root): never allocated again; the file holding it keeps it and is flagged',
    'sudo guestmemfs badblock /dev/hugepages/pool 0x7e00000',
  )
    .argument('<pool>')
    .argument('<where>', 'a block number (7), or a byte offset in the pool: hex (0x7e00000) or with a size suffix (126M)')
    .action((spec: string, where: string, options: Common) =>
      withFilesystem(spec, async (gfs) => {
        const target = parseWhere(where);
        const { blockSize } = await gfs.statfs();
        const block = target.block ?? Math.floor(target.offset! / blockSize);
        const result = await gfs.quarantineBlock(block);
        print(options, { pool: spec, ...result }, () =>
          options.quiet
            ? ''
            : `${spec}: block ${block} ${result.alreadyQuarantined ? 'was quarantined already' : 'quarantined'}` +
              (result.heldBy
                ? `; ${result.heldBy.path} (inode ${result.heldBy.ino}) holds it, keeps it and is flagged`
                : '; it was free and is never allocated again'),
        );
      }),
    );
}

/** A plain number is a block; hex or a size suffix makes it a byte offset in the pool (what a memory-failure report gives). */
function parseWhere(where: string): { block?: number; offset?: number } {
  if (/^\d+$/.test(where)) return { block: Number(where) };
  if (/^0x[0-9a-f]+$/i.test(where)) return { offset: Number.parseInt(where.slice(2), 16) };
  try {
    return { offset: parseSize(where) };
  } catch {
    throw usageError(`"${where}" is neither a block number nor a byte offset (0x7e00000, 126M)`);
  }
}
