// The main demo (npm start) when /dev/kvm works: boot the demo guest on guestmemfs memory, live-update it several times
// in each mode (exec and transfer), and print every blackout with its breakdown and the proof that nothing was lost.
import { GuestmemfsError } from '../errors';
import { formatSize } from '../units';
import { runUpdates } from '../vmm/launch';
import { demoGuestChecksum } from '../vmm/machine';
import { choosePool, log, undo } from './handover-demo';

export interface VmmDemoOptions {
  ramBytes: number;
  steps: number;
  updates: number;
}

const fixed = (value: unknown) => (typeof value === 'number' ? value.toFixed(1) : '-');

export function runVmmDemo(options: VmmDemoOptions): void {
  log(
    `guestmemfs VMM demo: a KVM guest with ${formatSize(options.ramBytes)} of RAM in a guestmemfs file, ` +
      `live-updated ${options.updates} times in each mode`,
  );
  const { pool, cleanup } = choosePool(options.ramBytes);
  pool.close();
  const seed = 20261121;
  const expected = demoGuestChecksum(options.ramBytes, { steps: options.steps, seed: BigInt(seed) });
  let failed = false;
  try {
    for (const mode of ['exec', 'transfer'] as const) {
      // Without NODE_EXTRA_CA_CERTS: it makes every Node start-up (inside the exec-mode blackout) parse a CA bundle the
      // VMM never uses. bench:vmm drops it too.
      const env = { ...process.env };
      delete env.NODE_EXTRA_CA_CERTS;
      const run = runUpdates(
        {
          mode,
          poolPath: cleanup.poolPath,
          ramBytes: options.ramBytes,
          steps: options.steps,
          seed,
          updates: options.updates,
          maxDelayMs: 400,
        },
        { env },
      );
      if (run.status !== 0) throw new GuestmemfsError('EIO', `the ${mode}-mode run failed: ${run.stderr.trim()}`);
      const { events } = run;
      log(`  ${mode} mode (guest pid ${String(events[0]!.pid)}):`);
      let count = 0;
      for (const event of events) {
        if (event.event === 'update') {
          const b = event.breakdown as Record<string, number>;
          const before = event.beforePause as Record<string, number>;
          const parts =
            mode === 'exec'
              ? `save ${fixed(b.saveMs)}, exec + Node start-up ${fixed(b.execAndStartupMs)}, load ${fixed(b.loadMs)}, restore ` +
                `${fixed(b.restoreMs)}, state ${fixed(b.readStateMs)}, map ${fixed(b.mapMs)}, vCPU ${fixed(b.vcpuRestoreMs)}, other ` +
                `${fixed(b.otherMs)} ms; serialised before the pause in ${fixed(before.serialiseMs)} ms`
              : `save ${fixed(b.saveMs)}, wake-up ${fixed(b.signalMs)}, state ${fixed(b.readStateMs)}, vCPU ${fixed(b.vcpuRestoreMs)}, ` +
                `other ${fixed(b.otherMs)} ms; before the pause: serialise ${fixed(before.serialiseMs)}, restore ` +
                `${fixed(before.restoreMs)}, map ${fixed(before.mapMs)} ms`;
          failed ||= event.sameFrames === false;
          const frames =
            event.sameFrames === null
              ? 'frames not compared (needs root)'
              : event.sameFrames
                ? 'same physical pages'
                : 'PHYSICAL PAGES CHANGED';
          log(`    update ${++count} -> pid ${String(event.pid)}: blackout ${fixed(event.blackoutMs)} ms (${parts}); ${frames}`);
        } else if (event.event === 'done') {
          const serial = String(event.serial).replace(/\./g, '').trim();
          const same = serial === expected;
          failed ||= !same || event.sameFrames === false;
          const pages =
            event.sameFrames === null
              ? 'physical pages not compared (needs root)'
              : event.sameFrames
                ? 'guest RAM on the same physical pages throughout'
                : 'PHYSICAL PAGES CHANGED';
          log(`    guest halted: checksum ${serial} ${same ? 'matches' : 'DIFFERS FROM'} an uninterrupted run; ${pages}`);
        }
      }
    }
  } finally {
    undo(cleanup);
  }
  if (failed) process.exitCode = 1;
}
