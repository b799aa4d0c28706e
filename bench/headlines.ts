// The headline of every benchmark: one row each (measure, value, baseline, ratio, target, met), read from the results
// files; report.ts lays them out in BENCHMARKS.md and the README.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatSize, GiB } from '../lib/units';
import { BENCHMARKS, type BenchmarkName, type Stats } from './common';
/* eslint-disable
     @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment,
     @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call
     -- results files are JSON written by the benchmarks, read here as they are */
export type Results = Record<string, any>;

export interface Headline {
  benchmark: string;
  measure: string;
  value: string;
  baseline: string;
  ratio: string;
  target: string;
  met: boolean | null;
}

export const fixed = (value: number, digits = 2) => value.toFixed(digits);
export const spread = (s: Stats, digits = 2) => `${fixed(s.median, digits)} [${fixed(s.min, digits)} .. ${fixed(s.max, digits)}]`;

/** Every benchmark's results file in `dir`, read once (a benchmark without one is absent). */
export function loadAll(dir: string): Partial<Record<BenchmarkName, Results>> {
  const all: Partial<Record<BenchmarkName, Results>> = {};
  for (const name of BENCHMARKS) {
    const file = path.join(dir, `${name}.json`);
    if (fs.existsSync(file)) all[name] = JSON.parse(fs.readFileSync(file, 'utf8')) as Results;
  }
  return all;
}

/** How a bench:map configuration reads in tables: size, page size, and what was special about it. */
export function configLabel(config: { size: number; pageSize: number; requestedSize?: number; whileMapped?: boolean }): string {
  const special = [
    config.requestedSize ? `${formatSize(config.requestedSize)} asked, only ${config.size / config.pageSize} pages to be had` : '',
    config.whileMapped ? 'while the previous owner still maps it' : '',
  ].filter(Boolean);
  return `${formatSize(config.size)} of ${formatSize(config.pageSize)} pages${special.length ? ` (${special.join('; ')})` : ''}`;
}

/** The one-line verdicts against the issue's targets, from whichever results exist. */
export function headlines(dir: string): Headline[] {
  return headlinesOf(loadAll(dir));
}

export function headlinesOf(all: Partial<Record<BenchmarkName, Results>>): Headline[] {
  const rows: Headline[] = [];
  const map = all.map;
  if (map) {
    const paired = map.pairedRatios.addon_one_extent_vs_c as Stats;
    rows.push({
      benchmark: 'map',
      measure: `re-map ${formatSize(map.size)} of ${formatSize(map.pageSize)} pages in a new process`,
      value: `${fixed(map.ms.addon_one_extent.median, 3)} ms`,
      baseline: `C mmap(MAP_POPULATE) ${fixed(map.ms.c_mmap_populate.median, 3)} ms`,
      ratio: `${fixed(paired.median, 3)}x (median of per-round ratios)`,
      target: '<= 1.1x',
      met: paired.median <= 1.1,
    });
    for (const config of map.configs ?? []) {
      if (config.skipped) continue;
      rows.push({
        benchmark: 'map',
        measure: `re-map ${configLabel(config)}`,
        value: `${fixed(config.ms.addon_one_extent.median, 3)} ms`,
        baseline: `C ${fixed(config.ms.c_mmap_populate.median, 3)} ms`,
        ratio: `${fixed(config.pairedRatio.median, 3)}x (median of per-round ratios)`,
        target: '<= 1.1x',
        met: config.pairedRatio.median <= 1.1,
      });
    }
  }
  const alloc = all.alloc;
  if (alloc) {
    rows.push({
      benchmark: 'alloc',
      measure: `first allocation of a ${formatSize(alloc.size)} guest file (zero + populate)`,
      value: `${fixed(alloc.ms.guestmemfs_dirty_blocks.median, 1)} ms`,
      baseline: `C faulting fresh huge pages ${fixed(alloc.ms.c_fault_fresh_hugepages.median, 1)} ms`,
      ratio: `${fixed(alloc.ratios.dirtyVsC)}x`,
      target: '<= 1.1x',
      met: alloc.ratios.dirtyVsC <= 1.1,
    });
  }
  const access = all.access;
  if (access) {
    for (const result of access.results) {
      if (!result.guestmemfs) continue;
      rows.push({
        benchmark: 'access',
        measure: `random 8-byte reads, ${formatSize(access.size)}, ${formatSize(result.pageSize)} pages`,
        value: `${fixed(1000 / result.guestmemfs.throughputNsPerRead.median, 1)} M reads/s`,
        baseline: `raw hugetlbfs mmap ${fixed(1000 / result.raw.throughputNsPerRead.median, 1)} M reads/s`,
        ratio: `${fixed(result.throughputVsRaw, 3)}x${result.paired ? ' (median of per-run ratios)' : ''}`,
        target: '>= 0.98x',
        met: result.throughputVsRaw >= 0.98,
      });
    }
    rows.push({
      benchmark: 'access',
      measure: 'gain of 2 MiB over 4 KiB pages (raw mmap)',
      value: `${fixed(access.hugeGain.throughput2MiBVs4KiB)}x throughput, ${fixed(access.hugeGain.latency2MiBVs4KiB)}x latency`,
      baseline: '4 KiB pages',
      ratio: '-',
      target: 'report',
      met: null,
    });
  }
  const handover = all.handover;
  if (handover) {
    const at100 = handover.byDescribedSize.find((point: any) => point.describedBytes === 100 * GiB);
    if (at100)
      rows.push({
        benchmark: 'handover',
        measure: 'serialise + restore, 100 GiB described',
        value: `${fixed(at100.totalMs.median, 3)} ms`,
        baseline: 'PKRAM 100 GiB: 13 ms save, 101 ms load',
        ratio: '-',
        target: '<= 1 ms',
        met: at100.totalMs.median <= 1,
      });
    const most = handover.byFileCount.at(-1);
    const mostV1 = handover.byFileCountVersion1?.at(-1);
    if (most?.recordFloorMs) {
      const onHugePages = handover.byFileCountPool?.startsWith('hugetlbfs');
      rows.push({
        benchmark: 'handover',
        measure: `serialise + restore, ${most.files.toLocaleString('en')} files (${onHugePages ? '2 MiB pages' : '4 KiB pages'})`,
        value: `${fixed(most.totalMs.median)} ms`,
        baseline:
          `record floor (reading the live records' used lines, both sides): ${fixed(most.recordFloorMs.median)} ms` +
          (mostV1 ? `; handover version 1: ${fixed(mostV1.totalMs.median)} ms` : ''),
        ratio: `${fixed(most.totalMs.median / most.recordFloorMs.median)}x floor`,
        target: '<= 20 ms',
        met: onHugePages ? most.totalMs.median <= 20 : null,
      });
    }
    const small = handover.byFileCount4KiB?.at(-1);
    if (small?.recordFloorMs && handover.byFileCountPool?.startsWith('hugetlbfs')) {
      rows.push({
        benchmark: 'handover',
        measure: `serialise + restore, ${small.files.toLocaleString('en')} files (4 KiB fallback)`,
        value: `${fixed(small.totalMs.median)} ms`,
        baseline: `record floor on 4 KiB pages: ${fixed(small.recordFloorMs.median)} ms`,
        ratio: `${fixed(small.totalMs.median / small.recordFloorMs.median)}x floor`,
        target: 'report',
        met: null,
      });
    }
    if (handover.freshProcess) {
      rows.push({
        benchmark: 'handover',
        measure: `restore in a fresh process, ${handover.freshProcess.files.toLocaleString('en')} files (2 MiB pages)`,
        value: `${fixed(handover.freshProcess.restoreMs.median)} ms`,
        baseline: `the same process, warm: ${fixed(most.restoreMs.median)} ms`,
        ratio: `${fixed(handover.freshProcess.restoreMs.median / most.restoreMs.median)}x`,
        target: 'report',
        met: null,
      });
    }
    rows.push({
      benchmark: 'handover',
      measure: 'slopes',
      value: `${fixed(handover.slopes.msPerThousandFiles)} ms per 1,000 files, ${fixed(handover.slopes.msPerTiBDescribed, 3)} ms per TiB`,
      baseline: '-',
      ratio: '-',
      target: 'report',
      met: null,
    });
  }
  const resize = all.resize;
  if (resize) {
    const largest = resize.byAmount.at(-1);
    rows.push({
      benchmark: 'resize',
      measure: `grow a mounted pool by ${formatSize(largest.amountBytes)} (shrink back: ${fixed(largest.shrinkMs.median, 3)} ms)`,
      value: `${fixed(largest.growMs.median)} ms`,
      baseline: `bare ftruncate + fallocate: ${fixed(largest.floorGrowMs.median)} ms`,
      ratio: `${fixed(largest.growMs.median / largest.floorGrowMs.median)}x`,
      target: 'report',
      met: null,
    });
  }
  const hybrid = all.hybrid;
  if (hybrid?.hybrid) {
    rows.push({
      benchmark: 'hybrid',
      measure:
        `random reads over a ${formatSize(hybrid.fileBytes)} file, ${formatSize(hybrid.largeBytes)} of it on 1 GiB pages ` +
        `(map: ${fixed(hybrid.hybrid.mapMs.median)} vs ${fixed(hybrid.pure.mapMs.median)} ms)`,
      value:
        `${fixed(hybrid.hybrid.latencyNsPerRead.median)} ns dependent, ` +
        `${fixed(hybrid.hybrid.throughputNsPerRead.median)} ns independent`,
      baseline: `2 MiB pages only: ${fixed(hybrid.pure.latencyNsPerRead.median)} ns, ${fixed(hybrid.pure.throughputNsPerRead.median)} ns`,
      ratio: `${fixed(hybrid.latencyVsPure)}x, ${fixed(hybrid.throughputVsPure)}x`,
      target: '>= 1x',
      met: hybrid.latencyVsPure >= 1 && hybrid.throughputVsPure >= 1,
    });
  }
  const fsResults = all.fs;
  if (fsResults) {
    for (const op of ['create', 'lookup', 'unlink'] as const) {
      const entry = fsResults.metadataOpsPerSecond[op];
      rows.push({
        benchmark: 'fs',
        measure: `${op} on ${fsResults.files.toLocaleString('en')} files`,
        value: `${fixed(entry.guestmemfs.median / 1000, 0)}k/s`,
        baseline: `in-memory model ${fixed(entry.inMemoryModel.median / 1000, 0)}k/s`,
        ratio: `${fixed(entry.ratio)}x`,
        target: '>= 200k/s',
        met: entry.guestmemfs.median >= 200_000,
      });
    }
  }
  const vmm = all.vmm;
  if (vmm) {
    const largest = vmm.results.at(-1);
    const startup = vmm.nodeStartupMs.median as number;
    rows.push({
      benchmark: 'vmm',
      measure: `transfer-mode blackout, ${formatSize(largest.ramBytes)} guest`,
      value: `${fixed(largest.transferMs.median)} ms (fastest ${fixed(largest.transferMs.min)})`,
      baseline: `copy save + load ${fixed(largest.copyBaselineMs.median / 1000, 1)} s`,
      ratio: `${fixed(1 / largest.ratios.transferVsCopy, 0)}x shorter than copy`,
      target: '<= 2 ms',
      met: largest.transferMs.median <= 2,
    });
    if (largest.smp) {
      rows.push({
        benchmark: 'vmm',
        measure: `transfer-mode blackout, ${formatSize(largest.ramBytes)} guest, ${largest.smp.vcpus} vCPUs`,
        value: `${fixed(largest.smp.transferMs.median)} ms (fastest ${fixed(largest.smp.transferMs.min)})`,
        baseline: `1 vCPU ${fixed(largest.transferMs.median)} ms`,
        ratio: `${fixed(largest.smp.transferMs.median / largest.transferMs.median)}x 1 vCPU`,
        target: '<= 0.6 ms',
        met: largest.smp.transferMs.median <= 0.6,
      });
    }
    // Against its floor, measured round by round beside it: a VM over the same RAM in a freshly exec'd Node.
    for (const [label, result] of [
      ['', largest],
      [`, ${largest.smp?.vcpus} vCPUs`, largest.smp],
    ] as const) {
      if (!result?.execFloorMs) continue;
      const floor = result.execFloorMs.median;
      rows.push({
        benchmark: 'vmm',
        measure: `exec-mode blackout, ${formatSize(largest.ramBytes)} guest${label}`,
        value: `${fixed(result.execMs.median, 1)} ms`,
        baseline: `floor ${fixed(floor, 1)} ms (Node start-up ${fixed(startup, 1)})`,
        ratio: `${fixed(result.execMs.median / floor)}x floor`,
        target: '<= 1.15x floor',
        met: result.execMs.median <= 1.15 * floor,
      });
    }
  }
  const device = all.device;
  if (device) {
    for (const mode of ['exec', 'transfer'] as const) {
      const result = device[mode];
      rows.push({
        benchmark: 'device',
        measure: `device DMA through ${mode === 'exec' ? 'an' : 'a'} ${mode}-mode update (${formatSize(device.ramBytes)}, 2 vCPUs)`,
        value:
          `${fixed(result.duringPerMs.median)} records/ms inside the blackout; longest gap with buffers posted ` +
          `${fixed(result.longestDeviceGapMs.median, 0)} ms (any ${fixed(result.longestGapMs.median, 0)} ms)`,
        baseline: `${fixed(result.beforePerMs.median)} records/ms before it`,
        ratio: `${fixed(result.duringPerMs.median / result.beforePerMs.median)}x`,
        target: 'no gap beyond the blackout',
        met: result.longestDeviceGapMs.median <= Math.ceil(result.blackoutMs.median) + 1,
      });
    }
  }
  const qemuResults = all.qemu;
  if (qemuResults) {
    const largest = qemuResults.results.at(-1);
    for (const [mode, baseline, label] of [
      ['gmfs-cpr-transfer', 'anonymous-migration', 'migration of anonymous RAM (copied)'],
      ['gmfs-cpr-reboot', 'anonymous-cpr-reboot', 'cpr-reboot of anonymous RAM (copied)'],
    ] as const) {
      rows.push({
        benchmark: 'qemu',
        measure: `${mode.slice(5)} update of a ${formatSize(largest.ramBytes)} QEMU guest on guestmemfs RAM`,
        value: `${fixed(largest[mode].updateMs.median, 1)} ms (QEMU downtime ${fixed(largest[mode].downtimeMs.median, 0)} ms)`,
        baseline: `${label} ${fixed(largest[baseline].updateMs.median, 0)} ms`,
        ratio: `${fixed(largest[baseline].updateMs.median / largest[mode].updateMs.median, 0)}x shorter`,
        target: 'report',
        met: null,
      });
    }
  }
  const pins = all.pins;
  if (pins) {
    rows.push({
      benchmark: 'pins',
      measure: `map ${formatSize(pins.ramBytes)} of ${formatSize(pins.pageSize)} pages with its pin`,
      value: `${fixed(pins.map.pinnedMs.median, 3)} ms`,
      baseline: `the same map without a pin ${fixed(pins.map.unpinnedMs.median, 3)} ms`,
      ratio: `${fixed(pins.map.ratio.median, 3)}x (median of per-round ratios)`,
      target: '<= 1.05x',
      met: pins.map.ratio.median <= 1.05,
    });
  }
  const service = all.service;
  if (service) {
    for (const kind of ['stat', 'create-unlink'] as const) {
      const entry = service.operations[kind];
      for (const clients of ['1', '8'] as const) {
        const through = entry.service[clients];
        const floor = entry.floor[clients];
        const ratio = entry.ratio[clients].median;
        rows.push({
          benchmark: 'service',
          measure:
            `${kind} through the mount service, ${clients} client${clients === '1' ? '' : 's'} ` +
            `(p50 ${fixed(through.latencyUs.median, 0)} us, p99 ${fixed(through.latencyUs.p99, 0)} us)`,
          value: `${through.opsPerSec} ops/s`,
          baseline:
            `Node HTTP floor ${floor.opsPerSec} ops/s; in-process ${entry.inProcess.opsPerSec} ops/s; ` +
            `C round trip ${service.kernelRoundTrip.opsPerSec}/s`,
          ratio:
            `${fixed(ratio)}x floor (median of ${service.rounds} paired rounds), ` +
            `${fixed(through.opsPerSec / entry.inProcess.opsPerSec, 3)}x in-process`,
          target: '>= 0.75x floor (50k ops/s is above the C floor)',
          met: ratio >= 0.75,
        });
      }
    }
    rows.push({
      benchmark: 'service',
      measure: 'the service’s own live update: metadata pause',
      value: `${fixed(service.liveUpdatePauseMs.median, 1)} ms`,
      baseline: '—',
      ratio: '—',
      target: 'report',
      met: null,
    });
  }
  return rows;
}
