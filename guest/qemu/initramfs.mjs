// Writes the QEMU guest's initramfs: a newc cpio archive holding busybox (static) as /bin/busybox and init.sh as /init.
// node guest/qemu/initramfs.mjs BUSYBOX INIT OUT
import { Buffer } from 'node:buffer';
import * as fs from 'node:fs';
import process from 'node:process';

const [busybox, init, out] = process.argv.slice(2);
let ino = 1;
const parts = [];

/** One newc entry: a 110-byte ASCII header, the NUL-terminated name, then the data, each padded to 4 bytes. */
function entry(name, mode, data = Buffer.alloc(0)) {
  const hex = (value) => value.toString(16).padStart(8, '0');
  const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
  const header = Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii');
  const pad = (length) => Buffer.alloc((4 - (length % 4)) % 4);
  const nameBytes = Buffer.from(`${name}\0`, 'ascii');
  parts.push(header, nameBytes, pad(header.length + nameBytes.length), data, pad(data.length));
}

for (const dir of ['bin', 'dev', 'proc', 'work']) entry(dir, 0o040755);
entry('bin/busybox', 0o100755, fs.readFileSync(busybox));
entry('init', 0o100755, fs.readFileSync(init));
entry('TRAILER!!!', 0);
fs.writeFileSync(out, Buffer.concat(parts));
