// guestmemfs status: backend, sizes, used and free blocks and inodes, owner, handover state.
import type { Command } from 'commander';
import { readPoolSuperblock } from '../../lib/fs/format';
import { numaNodeOf, PoolState } from '../../lib/fs/layout';
import { lockIsHeldByOther } from '../../lib/fs/registry';
import type { QuotaReport } from '../../lib/fs/quota';
import type { StatFs } from '../../lib/fs/types';
import { poolIdentityOf, servedSocket } from '../../lib/service/discovery';
import { formatSize } from '../../lib/units';
import { pinHolders } from '../../lib/pool/pins';
import { command, type Common, fragmentationLine, pinLines, print, quotaLines } from '../common';
import { withPool, withView } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'status',
    'backend, sizes, used and free blocks and inodes, owner, handover state',
    'guestmemfs status /dev/hugepages/pool',
  )
    .argument('<pool>')
    .action((spec: string, options: Common) => {
      // The mount lock tells a live owner from a dead one; every process that maps pool memory holds a pin the kernel
      // keeps, read from /proc whoever owns the metadata.
      const { sb, held, pins, socket } = withPool(spec, (pool) => ({
        sb: readPoolSuperblock(pool),
        held: lockIsHeldByOther(pool),
        pins: pinHolders(pool),
        socket: servedSocket(poolIdentityOf(pool)),
      }));
      const state =
        sb.state === PoolState.Serialised
          ? `serialised for handover at generation ${sb.generation}`
          : sb.state === PoolState.Mounted
            ? held
              ? `live: mounted by pid ${sb.ownerPid}`
              : `not handed over cleanly: its owner (pid ${sb.ownerPid}) died while it was mounted; the next mount (or check --repair) ` +
                `recovers it`
            : 'clean';
      // An unclean pool cannot be viewed consistently until it is recovered; its sizes are left out then.
      let usage: {
        backend: string;
        pageSize: number;
        size: number;
        statfs: StatFs | null;
        pinnedOrphans: Array<{ ino: number; blocks: number }>;
        quotas: QuotaReport[];
      };
      try {
        usage = withView(spec, (gfs, opened) => ({
          backend: opened.backend,
          pageSize: opened.pageSize,
          size: opened.size,
          statfs: gfs.statfs(),
          pinnedOrphans: gfs.pinnedOrphans().map(({ ino, blocks }) => ({ ino, blocks })),
          quotas: gfs.quotas(),
        }));
      } catch (error) {
        if (sb.state !== PoolState.Mounted || held) throw error;
        usage = withPool(spec, (opened) => ({
          backend: opened.backend,
          pageSize: opened.pageSize,
          size: opened.size,
          statfs: null,
          pinnedOrphans: [],
          quotas: [],
        }));
      }
      const result = {
        pool: spec,
        pins,
        ...usage,
        uuid: sb.uuid,
        numaNode: numaNodeOf(sb) ?? null,
        badBlocks: sb.badBlocks,
        generation: sb.generation,
        state: PoolState[sb.state],
        ownerPid: sb.ownerPid || null,
        socket: held ? (socket ?? null) : null,
        description: state,
      };
      const orphans = usage.pinnedOrphans.map((orphan) => `inode ${orphan.ino} (${orphan.blocks} blocks)`).join(', ');
      print(options, result, () =>
        [
          `pool:       ${spec}`,
          `backend:    ${usage.backend}, ${formatSize(usage.pageSize)} pages, ${formatSize(usage.size)}` +
            (sb.geometry.maxBlockCount > sb.geometry.blockCount
              ? ` (may grow to ${formatSize(sb.geometry.maxBlockCount * sb.geometry.blockSize)})`
              : '') +
            (result.numaNode === null ? '' : `, on NUMA node ${result.numaNode}`),
          usage.statfs
            ? `blocks:     ${usage.statfs.dataBlocks - usage.statfs.freeBlocks} used, ` +
              `${usage.statfs.freeBlocks} free of ${usage.statfs.dataBlocks} (${formatSize(usage.statfs.blockSize)} each)`
            : 'blocks:     unknown until recovered',
          usage.statfs
            ? `inodes:     ${usage.statfs.totalInodes - usage.statfs.freeInodes} used, ${usage.statfs.freeInodes} free`
            : 'inodes:     unknown until recovered',
          ...(usage.statfs ? [`free space: ${fragmentationLine(usage.statfs)}`] : []),
          ...(usage.statfs && usage.statfs.largePages.total > 0
            ? [
                `1 GiB:      ${usage.statfs.largePages.free} of ${usage.statfs.largePages.total} pages free (a hybrid pool: ` +
                  `${formatSize(sb.largeFromBlock * sb.geometry.blockSize)} of ${formatSize(usage.pageSize)} pages, then 1 GiB pages)`,
              ]
            : []),
          `state:      ${state}`,
          ...(held && socket ? [`served on:  ${socket}`] : []),
          `uuid:       ${sb.uuid}`,
          ...(sb.badBlocks.length > 0 ? [`bad blocks: ${sb.badBlocks.length} quarantined (${sb.badBlocks.join(', ')})`] : []),
          ...(usage.pinnedOrphans.length > 0 ? [`unlinked:   ${orphans}, held by pins`] : []),
          ...pinLines(pins).map((line) => line.replace('  Pins: ', 'pins:       ')),
          ...(usage.quotas.length > 0 ? quotaLines(usage.quotas).map((line) => line.replace(/^Quota /, 'quota:      ')) : []),
        ].join('\n'),
      );
    });
}
