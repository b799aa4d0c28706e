// guestmemfs mkfs: create a pool (hugetlbfs file, 4 KiB fallback under /dev/shm, or memfd: handed to a command) and format it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { mkfs } from '../../lib/fs/format';
import { LARGE_PAGE_SIZE, Pool, SMALL_PAGE_SIZE } from '../../lib/pool/pool';
import { reserveHugePages } from '../../lib/pool/reserve';
import { HUGETLBFS_MAGIC } from '../../lib/pool/hugepages';
import { formatSize, MiB, parseSize } from '../../lib/units';
import { command, type Common, note, print, progressBar, usageError } from '../common';
import { backendFor, withMount } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'mkfs',
    'create a pool (hugetlbfs file, 4 KiB fallback under /dev/shm, or memfd: handed to a command) and format it',
    'sudo guestmemfs mkfs /dev/hugepages/pool --size 8G --reserve',
  )
    .argument('<pool>', 'path of the pool file to create, or memfd:NAME (then give the command to hand it to after --)')
    .argument('[command...]', 'for memfd: pools, the program that gets the pool (fd in GUESTMEMFS_POOL_FD)')
    .requiredOption('--size <size>', 'pool size (K/M/G/T suffixes)')
    .addOption(new Option('--page-size <size>', 'page size').choices(['2M', '1G', '4K']))
    .option('--inodes <n>', 'inodes in the table')
    .option('--max-size <size>', 'the size the pool may later grow to (guestmemfs resize): its metadata is sized for that now')
    .option('--reserve', 'as root: raise nr_hugepages and mount a private hugetlbfs at the pool directory when needed')
    .option('--force', 'reformat a pool file that exists')
    .option('--node <n>', 'NUMA node to allocate every page on (with --reserve, its huge pages are reserved on that node)')
    .option(
      '--large-size <size>',
      'a hybrid pool: this much more in 1 GiB pages, in a second file (the pool itself: whole GiB of 2 MiB pages)',
    )
    .option('--large-path <path>', "a hybrid hugetlbfs pool's 1 GiB-page file, on a hugetlbfs mount of 1 GiB pages (made with --reserve)")
    .action(
      (
        poolPath: string,
        handTo: string[],
        options: Common & {
          size: string;
          pageSize?: string;
          inodes?: string;
          maxSize?: string;
          reserve?: boolean;
          force?: boolean;
          node?: string;
          largeSize?: string;
          largePath?: string;
        },
      ) => {
        const bytes = parseSize(options.size);
        const formatOptions = {
          ...(options.inodes ? { inodes: Number(options.inodes) } : {}),
          ...(options.maxSize ? { maxSize: parseSize(options.maxSize) } : {}),
        };
        const pageSize = options.pageSize ? parseSize(options.pageSize) : undefined;
        const node = options.node === undefined ? undefined : parseNode(options.node);
        if (options.largePath !== undefined && options.largeSize === undefined) throw usageError('--large-path needs --large-size');
        const large = options.largeSize === undefined ? undefined : { size: parseSize(options.largeSize), path: options.largePath };
        if (poolPath.startsWith('memfd:')) {
          // A memfd pool lives as long as some process holds it: format it, then hand it over to the command at once.
          if (handTo.length === 0) {
            throw usageError('a memfd: pool lives only while a process holds it: name the program to hand it to after --');
          }
          const pool = Pool.create({
            backend: pageSize === SMALL_PAGE_SIZE ? 'memfd-4k' : 'memfd-hugetlb',
            name: poolPath.slice(6) || 'guestmemfs',
            size: bytes,
            pageSize,
            node,
            large,
          });
          mkfs(pool, formatOptions);
          withMount(`fd:${pool.fd}${pool.large ? `+${pool.large.fd}` : ''}`, (gfs) => gfs.kexec(handTo));
          return;
        }
        if (handTo.length > 0) throw usageError('only a memfd: pool takes a command to hand it to');
        const changes: string[] = [];
        if (options.reserve && pageSize !== SMALL_PAGE_SIZE) {
          const huge = pageSize ?? 2 * MiB;
          const dir = path.dirname(path.resolve(poolPath));
          const onHugetlbfs = fs.existsSync(dir) && fs.statfsSync(dir).type === HUGETLBFS_MAGIC;
          const reservation = reserveHugePages({
            pageSize: huge,
            pages: Math.ceil(bytes / huge),
            mount: onHugetlbfs ? undefined : dir,
            node,
          });
          changes.push(...reservation.changes);
          if (large) {
            const largeDir = path.dirname(path.resolve(large.path ?? poolPath));
            const largeOnHugetlbfs = fs.existsSync(largeDir) && fs.statfsSync(largeDir).type === HUGETLBFS_MAGIC;
            const largeReservation = reserveHugePages({
              pageSize: LARGE_PAGE_SIZE,
              pages: Math.ceil(large.size / LARGE_PAGE_SIZE),
              mount: largeOnHugetlbfs ? undefined : largeDir,
              node,
            });
            changes.push(...largeReservation.changes);
          }
        }
        if (options.force) fs.rmSync(poolPath, { force: true });
        const backend = backendFor(poolPath, pageSize);
        const onProgress = progressBar(options, 'reserving pages');
        if (options.force && large?.path) fs.rmSync(large.path, { force: true });
        const pool = Pool.create({ backend, path: poolPath, size: bytes, pageSize, onProgress, node, large });
        if (onProgress) process.stderr.write('\n');
        try {
          const info = mkfs(pool, formatOptions);
          for (const change of changes) note(options, `changed: ${change}`);
          const result = {
            pool: pool.path,
            backend: pool.backend,
            uuid: info.uuid,
            geometry: info.geometry,
            node: info.node ?? null,
            changes,
          };
          print(options, result, () =>
            options.quiet
              ? ''
              : `${pool.path}: ${pool.describe()}${info.node === undefined ? '' : ` on NUMA node ${info.node}`}, ` +
                `${info.geometry.blockCount - info.geometry.metadataBlocks} blocks of ` +
                `${formatSize(info.geometry.blockSize)}, ${info.geometry.inodeCount - 1} inodes, ` +
                (info.geometry.maxBlockCount > info.geometry.blockCount
                  ? `may grow to ${formatSize(info.geometry.maxBlockCount * info.geometry.blockSize)}, `
                  : '') +
                `uuid ${info.uuid}`,
          );
        } finally {
          pool.close();
        }
      },
    );
}

/** --node takes a node number; whether the host has that node is Pool.create's to say, before anything is created. */
function parseNode(value: string): number {
  if (!/^\d+$/.test(value)) throw usageError(`--node takes a NUMA node number, not "${value}"`);
  return Number(value);
}
