// guestmemfs inspect: decode a handover blob (from a pool or a file) as JSON or device-tree source.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { readPoolSuperblock } from '../../lib/fs/format';
import { PoolState } from '../../lib/fs/layout';
import { decodeHandoverBlob } from '../../lib/handover/blob-decode';
import { FDT_MAGIC, parseFdt } from '../../lib/handover/fdt';
import type { Pool } from '../../lib/pool/pool';
import { command, type Common, print } from '../common';
import { withPool } from '../pools';

/** The first bytes of a file: enough to tell a blob (FDT magic) from a pool without reading either. */
function readPrefix(file: string, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const prefix = Buffer.alloc(length);
    return prefix.subarray(0, fs.readSync(fd, prefix, 0, length, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/** The blob a serialised pool holds, read through a mapping of just the pages of its handover area that it fills. */
function poolBlob(pool: Pool, source: string): Uint8Array {
  const sb = readPoolSuperblock(pool);
  if (sb.state !== PoolState.Serialised)
    throw new GuestmemfsError('ENOENT', `${source} holds no handover: it is not serialised (run serialise first)`, { path: source });
  const start = Math.floor(sb.geometry.handoverOffset / pool.pageSize) * pool.pageSize;
  const end = Math.ceil((sb.geometry.handoverOffset + sb.handoverBytes) / pool.pageSize) * pool.pageSize;
  const area = pool.map([{ offset: start, length: end - start }], { populate: false, writable: false });
  try {
    return area.bytes(sb.geometry.handoverOffset - start, sb.handoverBytes).slice();
  } finally {
    area.unmap();
  }
}

/** Device-tree source for a blob, as `dtc -I dtb -O dts` prints the parts we use. */
function toDts(blob: Uint8Array): string {
  const parsed = parseFdt(blob);
  const lines = ['/dts-v1/;', ''];
  for (const reservation of parsed.reservations)
    lines.push(`/memreserve/ 0x${reservation.address.toString(16)} 0x${reservation.size.toString(16)};`);
  const printable = (value: Uint8Array) =>
    value.length > 0 && value[value.length - 1] === 0 && value.subarray(0, -1).every((byte) => byte === 0 || (byte >= 0x20 && byte < 0x7f));
  const render = (node: ReturnType<typeof parseFdt>['root'], depth: number): void => {
    const pad = '\t'.repeat(depth);
    lines.push(`${pad}${node.name || '/'} {`);
    for (const [name, value] of node.props) {
      if (value.length === 0) lines.push(`${pad}\t${name};`);
      else if (printable(value))
        lines.push(
          `${pad}\t${name} = ${new TextDecoder()
            .decode(value.subarray(0, -1))
            .split('\0')
            .map((part) => JSON.stringify(part))
            .join(', ')};`,
        );
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

export function register(program: Command): void {
  command(
    program,
    'inspect',
    'decode a handover blob (from a pool or a file) as JSON or device-tree source',
    'guestmemfs inspect --dts handover.dtb',
  )
    .argument('<source>', 'a pool, or a blob file written by serialise --out')
    .option('--dts', 'print device-tree source instead of JSON')
    .action((source: string, options: Common & { dts?: boolean }) => {
      const prefix = source.startsWith('fd:') ? Buffer.alloc(0) : readPrefix(source, 4);
      const isBlob = prefix.length === 4 && prefix.readUInt32BE(0) === FDT_MAGIC;
      const blob = isBlob ? new Uint8Array(fs.readFileSync(source)) : withPool(source, (pool) => poolBlob(pool, source));
      if (options.dts) {
        process.stdout.write(toDts(blob));
        return;
      }
      try {
        const description = decodeHandoverBlob(blob);
        print({ ...options, json: true }, { ...description, liveInodes: Array.from(description.liveInodes) }, () => '');
      } catch (error) {
        throw new GuestmemfsError('EUCLEAN', `not a valid guestmemfs handover blob: ${(error as Error).message}`, { path: source });
      }
    });
}
