#!/usr/bin/env node
// The guestmemfs command: create, inspect, change, check and hand over pools (pmempool's shape: one binary, subcommands).
//
// Exit codes: 0 success, 1 the operation failed (message on stderr), 2 usage error; `check` answers 0 consistent,
// 3 repaired, 4 inconsistent.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { runHandoverDemo, verifyHandoverDemo } from '../lib/demo/handover-demo';
import { runVmmDemo } from '../lib/demo/vmm-demo';
import { type UpdateMode, updateArgv } from '../lib/vmm/launch';
import { kvmAvailable } from '../lib/vmm/machine';
import { GuestmemfsError } from '../lib/errors';
import { check } from '../lib/fs/check';
import type { Filesystem } from '../lib/fs/filesystem';
import { mkfs, readPoolSuperblock } from '../lib/fs/format';
import type { Stat } from '../lib/fs/types';
import { PoolState } from '../lib/fs/layout';
import { decodeHandoverBlob } from '../lib/handover/blob';
import { parseFdt } from '../lib/handover/fdt';
import { native } from '../lib/native';
import { machineSupport } from '../lib/pool/hugepages';
import { Pool } from '../lib/pool/pool';
import { reserveHugePages } from '../lib/pool/reserve';
import { formatSize, MiB, parseSize } from '../lib/units';
import { backendFor, openPool, withMount, withView } from './pools';

const EXIT = { ok: 0, failed: 1, usage: 2, repaired: 3, inconsistent: 4 } as const;

interface Common {
  json?: boolean;
  quiet?: boolean;
}

const program = new Command();
program
  .name('guestmemfs')
  .description('Persistent in-memory filesystem for VM guest memory over a hugetlbfs pool')
  .option('--debug', 'show stack traces for errors')
  .exitOverride();

/** Adds the flags every command shares, and an example to its help. */
function command(name: string, description: string, example: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--json', 'machine-readable output')
    .option('-q, --quiet', 'print only what was asked for')
    .addHelpText('after', `\nExample:\n  $ ${example}`);
}

function print(options: Common, json: unknown, text: () => string): void {
  if (options.json) process.stdout.write(`${JSON.stringify(json, (_key, value) => (typeof value === 'bigint' ? value.toString() : value), 2)}\n`);
  else {
    const output = text();
    if (output) process.stdout.write(`${output}\n`);
  }
}

function note(options: Common, line: string): void {
  if (!options.quiet && !options.json) process.stderr.write(`${line}\n`);
}

function size(bytes: number, human: boolean | undefined): string {
  return human ? formatSize(bytes).replace(' ', '').replace('iB', '') : String(bytes);
}

function modeString(stat: Stat): string {
  const bits = ['r', 'w', 'x'];
  let out = stat.type === 'directory' ? 'd' : '-';
  for (let shift = 6; shift >= 0; shift -= 3) for (let bit = 0; bit < 3; bit++) out += stat.mode & (1 << (shift + 2 - bit)) ? bits[bit] : '-';
  return out;
}

function describeStat(stat: Stat): Record<string, unknown> {
  return { ...stat, modeOctal: stat.mode.toString(8).padStart(4, '0') };
}

// ------------------------------------------------------------------ commands

command('detect', 'show huge page sizes, free pages, hugetlbfs mounts and what a pool can use here', 'guestmemfs detect --json').action((options: Common) => {
  const support = machineSupport();
  print(options, support, () => {
    const out: string[] = [];
    out.push(`root: ${support.isRoot ? 'yes' : 'no (cannot reserve huge pages or mount hugetlbfs)'}`);
    out.push(`default huge page size: ${formatSize(support.defaultHugePageSize)}`);
    for (const info of support.hugePageSizes) out.push(`${formatSize(info.pageSize)} pages: ${info.total} total, ${info.free} free, ${info.reserved} reserved, ${info.available} available`);
    if (support.hugetlbfsMounts.length === 0) out.push('hugetlbfs mounts: none');
    for (const mount of support.hugetlbfsMounts) out.push(`hugetlbfs mount: ${mount.mountpoint} (${formatSize(mount.pageSize)} pages)`);
    out.push(`4 KiB fallback: always available (shmem THP: ${support.shmemTransparentHugePages ?? 'unknown'})`);
    out.push(`/dev/kvm: ${support.kvm ? 'usable' : 'not usable'}`);
    return out.join('\n');
  });
});

command('mkfs', 'create a pool (hugetlbfs file, 4 KiB fallback under /dev/shm, or memfd: handed to a command) and format it', 'sudo guestmemfs mkfs /dev/hugepages/pool --size 8G --reserve')
  .argument('<pool>', 'path of the pool file to create, or memfd:NAME (then give the command to hand it to after --)')
  .argument('[command...]', 'for memfd: pools, the program that gets the pool (fd in GUESTMEMFS_POOL_FD)')
  .requiredOption('--size <size>', 'pool size (K/M/G/T suffixes)')
  .addOption(new Option('--page-size <size>', 'page size').choices(['2M', '1G', '4K']))
  .option('--inodes <n>', 'inodes in the table')
  .option('--reserve', 'as root: raise nr_hugepages and mount a private hugetlbfs at the pool directory when needed')
  .option('--force', 'reformat a pool file that exists')
  .action((poolPath: string, handTo: string[], options: Common & { size: string; pageSize?: string; inodes?: string; reserve?: boolean; force?: boolean }) => {
    const bytes = parseSize(options.size);
    const pageSize = options.pageSize ? parseSize(options.pageSize) : undefined;
    if (poolPath.startsWith('memfd:')) {
      // A memfd pool lives as long as some process holds it: format it, then hand it over to the command at once.
      if (handTo.length === 0) {
        throw new CommanderError(EXIT.usage, 'guestmemfs.usage', 'a memfd: pool lives only while a process holds it: name the program to hand it to after --');
      }
      const pool = Pool.create({ backend: pageSize === 4096 ? 'memfd-4k' : 'memfd-hugetlb', name: poolPath.slice(6) || 'guestmemfs', size: bytes, pageSize });
      mkfs(pool, options.inodes ? { inodes: Number(options.inodes) } : {});
      withMount(`fd:${pool.fd}`, (gfs) => gfs.kexec(handTo));
      return;
    }
    if (handTo.length > 0) throw new CommanderError(EXIT.usage, 'guestmemfs.usage', 'only a memfd: pool takes a command to hand it to');
    const changes: string[] = [];
    if (options.reserve && pageSize !== 4096) {
      const huge = pageSize ?? 2 * MiB;
      const dir = path.dirname(path.resolve(poolPath));
      const onHugetlbfs = fs.existsSync(dir) && fs.statfsSync(dir).type === 0x958458f6;
      const reservation = reserveHugePages({ pageSize: huge, pages: Math.ceil(bytes / huge), mount: onHugetlbfs ? undefined : dir });
      changes.push(...reservation.changes);
    }
    if (options.force) fs.rmSync(poolPath, { force: true });
    const backend = backendFor(poolPath, pageSize);
    const tty = process.stderr.isTTY && !options.quiet && !options.json;
    const pool = Pool.create({
      backend,
      path: poolPath,
      size: bytes,
      pageSize,
      onProgress: tty ? (done, total) => process.stderr.write(`\rreserving pages [${'#'.repeat(Math.round((30 * done) / total)).padEnd(30)}] ${formatSize(done)} / ${formatSize(total)}`) : undefined,
    });
    if (tty) process.stderr.write('\n');
    try {
      const info = mkfs(pool, options.inodes ? { inodes: Number(options.inodes) } : {});
      for (const change of changes) note(options, `changed: ${change}`);
      print(options, { pool: pool.path, backend: pool.backend, uuid: info.uuid, geometry: info.geometry, changes }, () =>
        options.quiet ? '' : `${pool.path}: ${pool.describe()}, ${info.geometry.blockCount - info.geometry.metadataBlocks} blocks of ${formatSize(info.geometry.blockSize)}, ${info.geometry.inodeCount - 1} inodes, uuid ${info.uuid}`,
      );
    } finally {
      pool.close();
    }
  });

command('status', 'backend, sizes, used and free blocks and inodes, owner, handover state', 'guestmemfs status /dev/hugepages/pool')
  .argument('<pool>')
  .action((spec: string, options: Common) => {
    const pool = openPool(spec);
    let sb;
    let held = false;
    try {
      sb = readPoolSuperblock(pool);
      // The mount lock tells a live owner from a dead one.
      held = !native.fdLock(pool.fd, false, false);
      if (!held) native.fdUnlock(pool.fd);
    } finally {
      if (!spec.startsWith('fd:')) pool.close();
    }
    const state =
      sb.state === PoolState.Serialised
        ? `serialised for handover at generation ${sb.generation}`
        : sb.state === PoolState.Mounted
          ? held
            ? `live: mounted by pid ${sb.ownerPid}`
            : `not handed over cleanly: its owner (pid ${sb.ownerPid}) died while it was mounted; the next mount (or check --repair) recovers it`
          : 'clean';
    // An unclean pool cannot be viewed consistently until it is recovered; its sizes are left out then.
    let usage: { backend: string; pageSize: number; size: number; statfs: ReturnType<Filesystem['statfs']> | null };
    try {
      usage = withView(spec, (gfs, opened) => ({ backend: opened.backend, pageSize: opened.pageSize, size: opened.size, statfs: gfs.statfs() as ReturnType<Filesystem['statfs']> | null }));
    } catch (error) {
      if (sb.state !== PoolState.Mounted || held) throw error;
      const opened = openPool(spec);
      usage = { backend: opened.backend, pageSize: opened.pageSize, size: opened.size, statfs: null };
      if (!spec.startsWith('fd:')) opened.close();
    }
    const result = { pool: spec, ...usage, uuid: sb.uuid, generation: sb.generation, state: PoolState[sb.state], ownerPid: sb.ownerPid || null, description: state };
    print(options, result, () =>
      [
        `pool:       ${spec}`,
        `backend:    ${usage.backend}, ${formatSize(usage.pageSize)} pages, ${formatSize(usage.size)}`,
        usage.statfs
          ? `blocks:     ${usage.statfs.dataBlocks - usage.statfs.freeBlocks} used, ${usage.statfs.freeBlocks} free of ${usage.statfs.dataBlocks} (${formatSize(usage.statfs.blockSize)} each)`
          : 'blocks:     unknown until recovered',
        usage.statfs ? `inodes:     ${usage.statfs.totalInodes - usage.statfs.freeInodes} used, ${usage.statfs.freeInodes} free` : 'inodes:     unknown until recovered',
        `state:      ${state}`,
        `uuid:       ${sb.uuid}`,
      ].join('\n'),
    );
  });

command('ls', 'list a directory (like ls; -l for long format)', 'guestmemfs ls -lh /dev/hugepages/pool /vms')
  .argument('<pool>')
  .argument('[path]', 'directory inside the pool', '/')
  .option('-l', 'long format')
  .option('-h, --human-readable', 'sizes like 2M')
  .action((spec: string, dir: string, options: Common & { l?: boolean; humanReadable?: boolean }) => {
    withView(spec, (gfs) => {
      const entries = gfs
        .readdirEntries(dir)
        .map((entry) => ({ name: entry.name, ...describeStat(gfs.stat(path.posix.join(dir, entry.name))) }) as Record<string, unknown> & { name: string } & Stat)
        .sort((a, b) => a.name.localeCompare(b.name));
      print(options, entries, () =>
        entries
          .map((entry) =>
            options.l
              ? `${modeString(entry)} ${String(entry.nlink).padStart(2)} ${String(entry.uid).padEnd(5)} ${String(entry.gid).padEnd(5)} ${size(entry.size, options.humanReadable).padStart(10)} ${(entry.fileType ?? 'dir').padEnd(5)} ${new Date(Number(entry.mtimeNs / 1_000_000n)).toISOString().slice(0, 16).replace('T', ' ')} ${entry.name}`
              : entry.name,
          )
          .join('\n'),
      );
    });
  });

command('stat', 'show an inode', 'guestmemfs stat /dev/hugepages/pool /vms/vm0/ram')
  .argument('<pool>')
  .argument('<path>')
  .action((spec: string, target: string, options: Common) => {
    withView(spec, (gfs) => {
      const stat = gfs.stat(target);
      print(options, { path: target, ...describeStat(stat), extents: gfs.extents(target) }, () =>
        [
          `  File: ${target}`,
          `  Type: ${stat.type}${stat.fileType ? ` (${stat.fileType})` : ''}   Size: ${stat.size}   Blocks: ${stat.blocks} of ${formatSize(stat.blockSize)}   Extents: ${stat.extents}`,
          ` Inode: ${stat.ino}   Links: ${stat.nlink}   Access: (${stat.mode.toString(8).padStart(4, '0')}/${modeString(stat)})   Uid: ${stat.uid}   Gid: ${stat.gid}`,
          `Modify: ${new Date(Number(stat.mtimeNs / 1_000_000n)).toISOString()}`,
        ].join('\n'),
      );
    });
  });

command('df', 'free and used blocks and inodes', 'guestmemfs df -h /dev/hugepages/pool')
  .argument('<pool>')
  .option('-h, --human-readable', 'sizes like 2G')
  .action((spec: string, options: Common & { humanReadable?: boolean }) => {
    withView(spec, (gfs) => {
      const s = gfs.statfs();
      const total = s.dataBlocks * s.blockSize;
      const used = (s.dataBlocks - s.freeBlocks) * s.blockSize;
      print(options, s, () =>
        [
          ['Pool', 'Size', 'Used', 'Avail', 'Use%', 'Inodes', 'IFree'],
          [spec, size(total, options.humanReadable), size(used, options.humanReadable), size(total - used, options.humanReadable), `${Math.round((100 * used) / Math.max(1, total))}%`, String(s.totalInodes), String(s.freeInodes)],
        ]
          .map(([name, ...columns]) => `${name!.padEnd(spec.length)} ${columns.map((column, index) => column.padStart([11, 11, 11, 5, 7, 6][index]!)).join(' ')}`)
          .join('\n'),
      );
    });
  });

command('mkdir', 'create directories', 'guestmemfs mkdir -p /dev/hugepages/pool /vms/vm0')
  .argument('<pool>')
  .argument('<paths...>')
  .option('-p, --parents', 'create parents, accept existing directories')
  .action((spec: string, paths: string[], options: Common & { parents?: boolean }) => {
    withMount(spec, (gfs) => {
      for (const target of paths) gfs.mkdir(target, { recursive: options.parents });
    });
  });

command('touch', 'create empty files of a type (guest RAM, VMM state, plain)', 'guestmemfs touch --type guest /dev/hugepages/pool /vms/vm0/ram')
  .argument('<pool>')
  .argument('<paths...>')
  .addOption(new Option('--type <type>', 'file type').choices(['guest', 'state', 'plain']).default('plain'))
  .action((spec: string, paths: string[], options: Common & { type: 'guest' | 'state' | 'plain' }) => {
    withMount(spec, (gfs) => {
      for (const target of paths) if (!gfs.exists(target)) gfs.create(target, { type: options.type });
    });
  });

command('truncate', 'set file sizes (allocating or freeing blocks)', 'guestmemfs truncate -s 500M /dev/hugepages/pool /vms/vm0/ram')
  .argument('<pool>')
  .argument('<paths...>')
  .requiredOption('-s, --size <size>', 'new size (K/M/G/T suffixes)')
  .action((spec: string, paths: string[], options: Common & { size: string }) => {
    const bytes = parseSize(options.size);
    withMount(spec, (gfs) => {
      for (const target of paths) gfs.truncate(target, bytes);
    });
  });

command('rm', 'remove files (-r: directories too)', 'guestmemfs rm -r /dev/hugepages/pool /vms/old')
  .argument('<pool>')
  .argument('<paths...>')
  .option('-r, --recursive', 'remove directories and their contents')
  .action((spec: string, paths: string[], options: Common & { recursive?: boolean }) => {
    withMount(spec, (gfs) => {
      const remove = (target: string): void => {
        if (gfs.stat(target).type === 'directory') {
          if (!options.recursive) throw new GuestmemfsError('EISDIR', `is a directory, rm '${target}': use -r`, { syscall: 'unlink', path: target });
          for (const name of gfs.readdir(target)) remove(path.posix.join(target, name));
          gfs.rmdir(target);
        } else gfs.unlink(target);
      };
      for (const target of paths) remove(target);
    });
  });

command('mv', 'rename or move a file or directory', 'guestmemfs mv /dev/hugepages/pool /vms/a /vms/b')
  .argument('<pool>')
  .argument('<from>')
  .argument('<to>')
  .action((spec: string, from: string, to: string) => withMount(spec, (gfs) => gfs.rename(from, to)));

command('chmod', 'change permission bits (octal)', 'guestmemfs chmod /dev/hugepages/pool 600 /vms/vm0/ram')
  .argument('<pool>')
  .argument('<mode>')
  .argument('<paths...>')
  .action((spec: string, mode: string, paths: string[]) => {
    if (!/^[0-7]{1,4}$/.test(mode)) throw new GuestmemfsError('EINVAL', `mode "${mode}" must be octal, e.g. 640`);
    withMount(spec, (gfs) => paths.forEach((target) => gfs.chmod(target, Number.parseInt(mode, 8))));
  });

command('chown', 'change owner and group (UID[:GID])', 'guestmemfs chown /dev/hugepages/pool 1000:1000 /vms/vm0')
  .argument('<pool>')
  .argument('<owner>')
  .argument('<paths...>')
  .action((spec: string, owner: string, paths: string[]) => {
    const match = /^(\d*)(?::(\d*))?$/.exec(owner);
    if (!match || (!match[1] && !match[2])) throw new GuestmemfsError('EINVAL', `owner "${owner}" must be UID, UID:GID or :GID (numbers)`);
    const uid = match[1] ? Number(match[1]) : undefined;
    const gid = match[2] ? Number(match[2]) : undefined;
    withMount(spec, (gfs) => paths.forEach((target) => gfs.chown(target, uid, gid)));
  });

command('serialise', 'serialise the filesystem for handover (KHO activate): it is frozen until abort or restore', 'guestmemfs serialise /dev/hugepages/pool --out handover.dtb')
  .argument('<pool>')
  .option('--out <file>', 'also write the blob to a file')
  .action((spec: string, options: Common & { out?: string }) => {
    withMount(
      spec,
      (gfs) => {
        const result = gfs.serialise({ out: options.out });
        print(options, { generation: result.generation, bytes: result.blob.length, files: result.files, mappingBlocks: result.mappingBlocks, out: result.out ?? null }, () =>
          options.quiet ? '' : `${spec}: serialised at generation ${result.generation} (${result.blob.length}-byte blob, ${result.files} inodes${result.out ? `, written to ${result.out}` : ''})`,
        );
      },
      { allowSerialised: true },
    );
  });

command('abort', 'abort a handover (KHO abort): the filesystem can change again', 'guestmemfs abort /dev/hugepages/pool')
  .argument('<pool>')
  .action((spec: string, options: Common) => {
    withMount(
      spec,
      (gfs) => {
        note(options, gfs.restored ? `${spec}: handover of generation ${gfs.restored.generation} aborted` : `${spec}: was not serialised`);
      },
      { allowSerialised: true },
    );
  });

command('check', 'check a pool (not mounted anywhere) and optionally repair it', 'guestmemfs check --repair /dev/hugepages/pool')
  .argument('<pool>')
  .option('--repair', 'repair what can be repaired')
  .option('--dry-run', 'report only (the default)')
  .action((spec: string, options: Common & { repair?: boolean; dryRun?: boolean }) => {
    if (options.repair && options.dryRun) throw new CommanderError(EXIT.usage, 'guestmemfs.usage', '--repair and --dry-run exclude each other');
    const pool = openPool(spec);
    let result;
    try {
      result = check(pool, { repair: options.repair === true });
    } finally {
      if (!spec.startsWith('fd:')) pool.close();
    }
    print(options, { pool: spec, ...result }, () => {
      const lines = [`${spec}: ${result.state}`];
      for (const fix of result.fixes) lines.push(`  fixed: ${fix}`);
      if (result.state !== 'repaired') for (const problem of result.problems) lines.push(`  ${problem}`);
      if (result.state === 'inconsistent') lines.push(result.repairable ? '  (repairable: run with --repair)' : '  (cannot be repaired: the pool was left as it was)');
      return lines.join('\n');
    });
    process.exitCode = { consistent: EXIT.ok, repaired: EXIT.repaired, inconsistent: EXIT.inconsistent }[result.state];
  });

command('inspect', 'decode a handover blob (from a pool or a file) as JSON or device-tree source', 'guestmemfs inspect --dts handover.dtb')
  .argument('<source>', 'a pool, or a blob file written by serialise --out')
  .option('--dts', 'print device-tree source instead of JSON')
  .action((source: string, options: Common & { dts?: boolean }) => {
    let blob: Uint8Array;
    const header = fs.readFileSync(source, { flag: 'r' }).subarray(0, 4);
    if (header.length === 4 && header.readUInt32BE(0) === 0xd00dfeed) blob = new Uint8Array(fs.readFileSync(source));
    else {
      const pool = openPool(source);
      try {
        const sb = readPoolSuperblock(pool);
        if (sb.state !== PoolState.Serialised) throw new GuestmemfsError('ENOENT', `${source} holds no handover: it is not serialised (run serialise first)`, { path: source });
        const area = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false, writable: false });
        blob = area.bytes(sb.geometry.handoverOffset, sb.handoverBytes).slice();
        area.unmap();
      } finally {
        pool.close();
      }
    }
    if (options.dts) {
      process.stdout.write(toDts(blob));
      return;
    }
    try {
      print({ ...options, json: true }, decodeHandoverBlob(blob), () => '');
    } catch (error) {
      throw new GuestmemfsError('EUCLEAN', `not a valid guestmemfs handover blob: ${(error as Error).message}`, { path: source });
    }
  });

command('kexec', 'serialise and exec a command with the pool handed over (GUESTMEMFS_POOL / GUESTMEMFS_POOL_FD)', 'guestmemfs kexec /dev/hugepages/pool -- node vmm.js')
  .argument('<pool>')
  .argument('<command...>')
  .action((spec: string, argv: string[]) => {
    withMount(spec, (gfs) => gfs.kexec(argv), { allowSerialised: true });
  });

command('demo', 'live-update demo: a KVM guest on guestmemfs memory updated in exec and transfer modes (without KVM: the filesystem handover)', 'sudo guestmemfs demo')
  .option('--size <size>', 'guest RAM size (K/M/G suffixes)', '1G')
  .option('--steps <n>', 'guest work steps (this VM runs ~6 µs each under kvm-pvm)', '600000')
  .option('--updates <n>', 'live updates per mode', '3')
  .option('--no-vm', 'run only the filesystem handover demo (no KVM guest)')
  .action((options: { size: string; steps: string; updates: string; vm: boolean }) => {
    const bytes = parseSize(options.size);
    if (bytes % (2 * MiB) !== 0 || bytes === 0) throw new GuestmemfsError('EINVAL', `demo size must be a positive multiple of 2 MiB, got ${options.size}`);
    const noKvm = kvmAvailable();
    if (options.vm && !noKvm) {
      runVmmDemo({ ramBytes: bytes, steps: Number(options.steps), updates: Number(options.updates) });
      return;
    }
    if (options.vm) process.stdout.write(`(${noKvm}: showing the filesystem handover without a guest)\n`);
    runHandoverDemo({ size: bytes, verifierArgv: [process.execPath, __filename, 'demo-verify'] });
  });

command('vmm', 'run the VMM prototype: boot the demo guest from a pool and live-update it (exec or transfer mode)', 'sudo guestmemfs vmm /dev/hugepages/pool --ram 1G --mode transfer --updates 3')
  .argument('<pool>', 'a pool file (it is reformatted)')
  .requiredOption('--ram <size>', 'guest RAM')
  .addOption(new Option('--mode <mode>', 'how to update').choices(['exec', 'transfer']).default('exec'))
  .option('--updates <n>', 'live updates at random points', '3')
  .option('--steps <n>', 'guest work steps', '600000')
  .option('--seed <n>', 'guest seed', '1')
  .action((poolPath: string, options: { ram: string; mode: string; updates: string; steps: string; seed: string }) => {
    const noKvm = kvmAvailable();
    if (noKvm) throw new GuestmemfsError('ENODEV', noKvm);
    const argv = updateArgv({ mode: options.mode as UpdateMode, poolPath, ramBytes: parseSize(options.ram), steps: Number(options.steps), seed: BigInt(options.seed), updates: Number(options.updates), maxDelayMs: 400 });
    native.processExec(process.execPath, argv, Object.entries(process.env).map(([key, value]) => `${key}=${value}`), []);
  });

program.command('demo-verify', { hidden: true }).action(() => verifyHandoverDemo());

/** Device-tree source for a blob, as `dtc -I dtb -O dts` prints the parts we use. */
function toDts(blob: Uint8Array): string {
  const parsed = parseFdt(blob);
  const lines = ['/dts-v1/;', ''];
  for (const reservation of parsed.reservations) lines.push(`/memreserve/ 0x${reservation.address.toString(16)} 0x${reservation.size.toString(16)};`);
  const printable = (value: Uint8Array) => value.length > 0 && value[value.length - 1] === 0 && value.subarray(0, -1).every((byte) => byte === 0 || (byte >= 0x20 && byte < 0x7f));
  const render = (node: ReturnType<typeof parseFdt>['root'], depth: number): void => {
    const pad = '\t'.repeat(depth);
    lines.push(`${pad}${node.name || '/'} {`);
    for (const [name, value] of node.props) {
      if (value.length === 0) lines.push(`${pad}\t${name};`);
      else if (printable(value)) lines.push(`${pad}\t${name} = ${new TextDecoder().decode(value.subarray(0, -1)).split('\0').map((part) => JSON.stringify(part)).join(', ')};`);
      else if (value.length % 4 === 0) {
        const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
        const cells = Array.from({ length: value.length / 4 }, (_, index) => `0x${view.getUint32(index * 4).toString(16)}`);
        lines.push(`${pad}\t${name} = <${cells.join(' ')}>;`);
      } else lines.push(`${pad}\t${name} = [${Array.from(value, (byte) => byte.toString(16).padStart(2, '0')).join(' ')}];`);
    }
    for (const child of node.children) render(child, depth + 1);
    lines.push(`${pad}};`);
  };
  render(parsed.root, 0);
  return `${lines.join('\n')}\n`;
}

try {
  program.parse();
} catch (error) {
  const debug = process.argv.includes('--debug');
  if (error instanceof CommanderError) {
    if (error.exitCode === 0) process.exit(0);
    if (error.code === 'guestmemfs.usage') process.stderr.write(`guestmemfs: ${error.message}\n`);
    process.exit(EXIT.usage);
  }
  if (error instanceof GuestmemfsError && !debug) {
    process.stderr.write(`guestmemfs: ${error.message}\n`);
    process.exit(EXIT.failed);
  }
  throw error;
}
