// The main demo (npm start) when /dev/kvm works: boot the demo guest on guestmemfs memory, live-update it several times
// in each mode (exec and transfer), and print every blackout with its breakdown and the proof that nothing was lost;
// then the same with 2 vCPUs and the demo device, whose backend keeps doing DMA through every update.
import { GuestmemfsError } from '../errors';
import { formatSize } from '../units';
import { runUpdates } from '../vmm/launch';
import { driverCounts } from '../vmm/device';
import { demoGuestChecksum } from '../vmm/machine';
import { choosePool, log, undo } from './handover-demo';

export interface VmmDemoOptions {
  ramBytes: number;
  steps: number;
  updates: number;
}

const fixed = (value: unknown) => (typeof value === 'number' ? value.toFixed(1) : '-');
const fixed2 = (value: unknown) => (typeof value === 'number' ? value.toFixed(2) : '-');
/** Without NODE_EXTRA_CA_CERTS: it makes every Node start-up (inside the exec-mode blackout) parse a CA bundle the VMM
 * never uses. bench:vmm drops it too. */
function vmmEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

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
      const env = vmmEnv();
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
          const after = event.afterResume as { loadMs: number; mountMs: number; adoptMs: number } | undefined;
          const parts =
            mode === 'exec' && after
              ? `save ${fixed(b.saveMs)}, close ${fixed(b.closeMs)}, exec + Node start-up ${fixed(b.execAndStartupMs)}, ` +
                `addon ${fixed(b.addonMs)}, map ` +
                `${fixed(b.mapMs)}, VM ${fixed(b.vmMs)}, vCPUs ${fixed(b.vcpuRestoreMs)} ms; serialised before the pause in ` +
                `${fixed(before.serialiseMs)} ms; the VMM loaded, mounted and adopted the running guest after it in ` +
                `${fixed(after.loadMs + after.mountMs + after.adoptMs)} ms`
              : mode === 'exec'
                ? `save ${fixed(b.saveMs)}, exec + Node start-up ${fixed(b.execAndStartupMs)}, load ${fixed(b.loadMs)}, restore ` +
                  `${fixed(b.restoreMs)}, state ${fixed(b.readStateMs)}, map ${fixed(b.mapMs)}, vCPU ${fixed(b.vcpuRestoreMs)}, other ` +
                  `${fixed(b.otherMs)} ms; serialised before the pause in ${fixed(before.serialiseMs)} ms`
                : `stop skew ${fixed2(b.stopSkewMs)}, save ${fixed2(b.saveMs)}, wake-up ${fixed2(b.signalMs)}, ` +
                  `resume ${fixed2(b.resumeMs)} ms on the vCPU threads; ` +
                  `before the pause: serialise ${fixed(before.serialiseMs)}, restore ${fixed(before.restoreMs)}, ` +
                  `map ${fixed(before.mapMs)} ms`;
          failed ||= event.sameFrames === false;
          const frames =
            event.sameFrames === null
              ? 'frames not compared (needs root)'
              : event.sameFrames
                ? 'same physical pages'
                : 'PHYSICAL PAGES CHANGED';
          const blackout = mode === 'exec' ? fixed(event.blackoutMs) : fixed2(event.blackoutMs);
          log(`    update ${++count} -> pid ${String(event.pid)}: blackout ${blackout} ms (${parts}); ${frames}`);
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
    failed = !runDevicePart(cleanup.poolPath, options) || failed;
  } finally {
    undo(cleanup);
  }
  if (failed) process.exitCode = 1;
}

/** Records the demo device's driver takes: about two seconds at the device's rate. */
const DEVICE_RECORDS = 10_000;
/** Below the ~12k records/s the driver (a vCPU of kvm-pvm here) takes, so that the guest keeps its buffers posted. */
const DEVICE_RATE = 5_000;

/** A 2-vCPU guest with the demo device, updated twice in each mode; true when every record arrived intact. */
function runDevicePart(poolPath: string, options: VmmDemoOptions): boolean {
  log(
    `  2 vCPUs and the demo device: a backend process DMAs ${DEVICE_RATE} records/s into guest buffers through an IOMMU ` +
      'table in a state file; vCPU 1 checks each',
  );
  const seed = 7;
  const guest = { steps: Math.min(options.steps, 300_000), seed: BigInt(seed), deviceRecords: DEVICE_RECORDS };
  const expected = demoGuestChecksum(options.ramBytes, guest, 2);
  let ok = true;
  for (const mode of ['exec', 'transfer'] as const) {
    const run = runUpdates(
      {
        mode,
        poolPath,
        ramBytes: options.ramBytes,
        steps: guest.steps,
        seed,
        updates: 2,
        maxDelayMs: 400,
        vcpus: 2,
        device: { records: DEVICE_RECORDS, recordsPerSecond: DEVICE_RATE },
      },
      { env: vmmEnv() },
    );
    if (run.status !== 0) throw new GuestmemfsError('EIO', `the ${mode}-mode device run failed: ${run.stderr.trim()}`);
    const backend = run.events.find((event) => event.event === 'device-ready')?.pid;
    log(`    ${mode} mode, device backend pid ${String(backend)}:`);
    for (const event of run.events) {
      if (event.event === 'update') {
        const device = event.device as { written: number; backendPid: number };
        ok &&= device.backendPid === backend;
        log(
          `      update -> pid ${String(event.pid)}: blackout ${mode === 'exec' ? fixed(event.blackoutMs) : fixed2(event.blackoutMs)} ms ` +
            `(2 vCPUs); the new VMM adopted the device with ${device.written} records written, backend pid ${device.backendPid}`,
        );
      } else if (event.event === 'done') {
        const [worker, driver] = String(event.serial).replace(/\./g, '').split('\n');
        const counts = driverCounts(driver ?? '');
        const intact =
          worker === expected && counts?.consumed === DEVICE_RECORDS && counts.lost + counts.duplicated + counts.corrupted === 0;
        ok &&= intact;
        log(
          `      guest halted: vCPU 0's checksum ${worker === expected ? 'matches' : 'DIFFERS FROM'} an uninterrupted run; ` +
            `the driver took ${counts?.consumed ?? '?'} records: ${counts?.lost ?? '?'} lost, ${counts?.duplicated ?? '?'} duplicated, ` +
            `${counts?.corrupted ?? '?'} corrupted`,
        );
      }
    }
  }
  return ok;
}
