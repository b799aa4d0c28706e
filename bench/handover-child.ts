// bench:handover child: a fresh process restores a handed-over pool, as the successor of a live update does (cold JIT,
// fresh heap), timing mount() alone; then it serialises again so that the next child restores too.
import { mount } from '../lib/fs/mount';
import { Pool } from '../lib/pool/pool';

const pool = Pool.open(process.argv[2]!);
const started = process.hrtime.bigint();
const fs = mount(pool, { requireHandover: true });
const restoreMs = Number(process.hrtime.bigint() - started) / 1e6;
const serialised = process.hrtime.bigint();
const { files } = fs.serialise();
const serialiseMs = Number(process.hrtime.bigint() - serialised) / 1e6;
fs.unmount();
pool.close();
process.stdout.write(`${JSON.stringify({ restoreMs, serialiseMs, files })}\n`);
