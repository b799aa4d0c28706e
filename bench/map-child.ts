// bench:map child: a fresh process that opens the pool and maps it through the addon; the map is timed apart from the open.
import { Pool } from '../lib/pool/pool';

const [poolPath, mode, lengthText, sweepText] = process.argv.slice(2);
const length = Number(lengthText);
// Same cache state as the C baseline (see baselines/mmap_populate.c): sweep a buffer larger than the LLC.
const sweep = Number(sweepText);
if (sweep > 0) {
  // Through a mapping the addon writes and unmaps synchronously, as the C side's memset and free: a JavaScript buffer
  // would be freed by V8 on a background thread, whose munmap of the whole sweep could then hold this process's
  // address-space lock during the timed map.
  const sweepPool = Pool.create({ backend: 'memfd-4k', size: sweep });
  const sweepMapping = sweepPool.mapAll({ populate: false });
  sweepMapping.zero();
  sweepMapping.unmap();
  sweepPool.close();
}
// The pool is opened first, as a VMM opens it long before it maps guest RAM: its Pool object's fields (sizes beyond
// V8's small integers) then shape the code the warm-up compiles, which would otherwise be thrown away (deoptimized,
// ~15 us) at the first map of this pool.
const openStarted = process.hrtime.bigint();
const pool = Pool.open(poolPath!);
const openMs = Number(process.hrtime.bigint() - openStarted) / 1e6;
// 'cold' variants time the very first call (V8 compiles map() and Mapping lazily: ~0.5 ms once per process, and the
// second call still costs ~80 us); the others first run the same JS, single- and multi-extent, with the same options,
// on a throwaway 4 KiB memfd until it is compiled (~10 us a call), leaving the measured pool's kernel state untouched.
const cold = mode!.endsWith('-cold');
const shared = mode!.endsWith('-shared');
if (!cold) {
  const scratch = Pool.create({ backend: 'memfd-4k', size: 8192 });
  for (let round = 0; round < 200; round++) {
    scratch.map([{ offset: 0, length: 8192 }], { populate: true, sharePageTables: shared }).unmap();
    scratch
      .map(
        [
          { offset: 4096, length: 4096 },
          { offset: 0, length: 4096 },
        ],
        { populate: true, sharePageTables: shared },
      )
      .unmap();
  }
  scratch.close();
}
const pageSize = pool.pageSize;
const count = length / pageSize;
// 'one'/'one-cold'/'one-shared' (placed for page-table sharing): a single extent; 'adjacent': one extent per page,
// coalesced by the addon; 'scattered': one per page in reverse order, so nothing coalesces and every page costs an
// mmap call.
const extents = mode!.startsWith('one')
  ? [{ offset: 0, length }]
  : Array.from({ length: count }, (_, i) => ({ offset: (mode === 'scattered' ? count - 1 - i : i) * pageSize, length: pageSize }));
const started = process.hrtime.bigint();
const mapping = pool.map(extents, { populate: true, sharePageTables: shared });
const ms = Number(process.hrtime.bigint() - started) / 1e6;
// Windows at both ends: a whole view of more than 4 GiB is more than JavaScript allows.
if (mapping.bytes(0, 1)[0] === undefined || mapping.bytes(length - 1, 1)[0] === undefined) throw new Error('mapping not readable');
process.stdout.write(`${JSON.stringify({ ms, openMs, mmapCalls: mapping.mmapCalls })}\n`);
mapping.unmap();
pool.close();
