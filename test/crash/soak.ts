// npm run soak:crash -- --kills N [--seed S]: the crash test at any length, with progress and a JSON summary.
import * as path from 'node:path';
import { KiB, MiB, mkfs, Pool } from '../../lib/index';
import { scratchDirectory } from '../../lib/scratch';
import { runCrashes } from './harness';

const arg = (name: string, fallback: number) => {
  const index = process.argv.indexOf(`--${name}`);
  return index > 0 ? Number(process.argv[index + 1]) : fallback;
};
const kills = arg('kills', 1000);
const seed = arg('seed', Date.now() % 100000);
const B = 64 * KiB;
const scratch = scratchDirectory('/dev/shm', 'guestmemfs-soak');
const pool = Pool.create({ backend: 'shm-4k', path: path.join(scratch.path, 'pool'), size: 4 * MiB });
// Room to grow: the child resizes the pool between 1 and 6 MiB.
mkfs(pool, { blockSize: B, inodes: 24, maxSize: 6 * MiB });
const started = Date.now();
runCrashes({
  pool,
  blockSize: B,
  kills,
  seed,
  onKill: (stats) => {
    if (stats.kills % 500 === 0)
      process.stderr.write(
        `${stats.kills}/${kills} kills, ${stats.insideOperation} inside an operation, ${Math.round((Date.now() - started) / 1000)} s\n`,
      );
  },
})
  .then((stats) => {
    process.stdout.write(`${JSON.stringify({ seed, seconds: Math.round((Date.now() - started) / 1000), ...stats })}\n`);
  })
  .catch((error: Error) => {
    process.stderr.write(`soak failed (seed ${seed}): ${error.message}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    pool.destroy();
    scratch.remove();
  });
