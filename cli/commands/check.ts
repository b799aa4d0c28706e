// guestmemfs check: check a pool (not mounted anywhere) and optionally repair it.
import type { Command } from 'commander';
import { check } from '../../lib/fs/check';
import { command, type Common, EXIT, print, usageError } from '../common';
import { withPool } from '../pools';

export function register(program: Command): void {
  command(program, 'check', 'check a pool (not mounted anywhere) and optionally repair it', 'guestmemfs check --repair /dev/hugepages/pool')
    .argument('<pool>')
    .option('--repair', 'repair what can be repaired')
    .option('--dry-run', 'report only (the default)')
    .action((spec: string, options: Common & { repair?: boolean; dryRun?: boolean }) => {
      if (options.repair && options.dryRun) throw usageError('--repair and --dry-run exclude each other');
      const result = withPool(spec, (pool) => check(pool, { repair: options.repair === true }));
      print(options, { pool: spec, ...result }, () => {
        const lines = [`${spec}: ${result.state}`];
        for (const fix of result.fixes) lines.push(`  fixed: ${fix}`);
        if (result.state !== 'repaired') for (const problem of result.problems) lines.push(`  ${problem}`);
        if (result.state === 'inconsistent')
          lines.push(result.repairable ? '  (repairable: run with --repair)' : '  (cannot be repaired: the pool was left as it was)');
        for (const { block, ino } of result.quarantined)
          lines.push(`  quarantined: block ${block}, ${ino === null ? 'out of service' : `held by inode ${ino}, which is flagged`}`);
        return lines.join('\n');
      });
      process.exitCode = { consistent: EXIT.ok, repaired: EXIT.repaired, inconsistent: EXIT.inconsistent }[result.state];
    });
}
