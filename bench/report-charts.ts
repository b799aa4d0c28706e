// The charts of BENCHMARKS.md (bench/charts/*.svg), each drawn from a results file: which exist depends on which
// benchmarks have results.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatSize } from '../lib/units';
import { renderBarChart, renderLineChart, writeChart } from './charts';
import type { BenchmarkName } from './common';
import { fixed, type Results } from './headlines';

/* eslint-disable
     @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment,
     @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return
     -- results files are JSON written by the benchmarks, read here as they are */

/** Writes every chart the results allow into chartDir; returns chart key -> file stem. */
export function charts(all: Partial<Record<BenchmarkName, Results>>, chartDir: string): Record<string, string> {
  fs.mkdirSync(chartDir, { recursive: true });
  const made: Record<string, string> = {};
  const vmm = all.vmm;
  if (vmm) {
    const startup = vmm.nodeStartupMs.median as number;
    const points = (pick: (result: any) => number) => vmm.results.map((result: any) => ({ x: result.ramBytes, y: pick(result) }));
    writeChart(
      path.join(chartDir, 'blackout'),
      renderLineChart({
        title: 'Live-update blackout against guest RAM (median)',
        xLabel: 'guest RAM',
        yLabel: 'blackout (ms, log scale)',
        logX: true,
        logY: true,
        formatX: (bytes) => formatSize(bytes),
        series: [
          { name: 'transfer mode', points: points((r) => r.transferMs.median) },
          { name: 'exec mode', points: points((r) => r.execMs.median) },
          { name: 'copy save + load', points: points((r) => r.copyBaselineMs.median), dashed: true },
          { name: 'bare Node start-up', points: points(() => startup), dashed: true },
          { name: 'transfer target (2 ms)', points: points(() => 2), dashed: true },
        ],
      }),
    );
    made.blackout = 'blackout';
  }
  const device = all.device;
  if (device) {
    const timeline = (mode: 'exec' | 'transfer') =>
      (device[mode].timelineAroundFirstUpdate as number[]).map((count, ms) => ({ x: ms - 2 * device.windowMs, y: count }));
    writeChart(
      path.join(chartDir, 'device-dma'),
      renderLineChart({
        title: 'Device DMA around a live update (records per ms; the blackout starts at 0)',
        xLabel: 'ms from the pause',
        yLabel: 'records written per ms',
        formatX: (ms) => `${ms}`,
        series: [
          { name: `exec mode (blackout ${fixed(device.exec.perUpdate[0].blackoutMs, 1)} ms)`, points: timeline('exec') },
          { name: `transfer mode (blackout ${fixed(device.transfer.perUpdate[0].blackoutMs)} ms)`, points: timeline('transfer') },
        ],
      }),
    );
    made.deviceDma = 'device-dma';
  }
  const handover = all.handover;
  if (handover) {
    writeChart(
      path.join(chartDir, 'handover-size'),
      renderLineChart({
        title: 'Handover (serialise + restore) against memory described',
        xLabel: 'guest memory described by the handover',
        yLabel: 'ms',
        logX: true,
        formatX: (bytes) => formatSize(bytes),
        series: [
          { name: 'serialise + restore', points: handover.byDescribedSize.map((p: any) => ({ x: p.describedBytes, y: p.totalMs.median })) },
          { name: 'serialise', points: handover.byDescribedSize.map((p: any) => ({ x: p.describedBytes, y: p.serialiseMs.median })) },
          { name: 'restore', points: handover.byDescribedSize.map((p: any) => ({ x: p.describedBytes, y: p.restoreMs.median })) },
        ],
      }),
    );
    writeChart(
      path.join(chartDir, 'handover-files'),
      renderLineChart({
        title: 'Handover (serialise + restore) against number of files, 2 MiB pages',
        xLabel: 'files',
        yLabel: 'ms (log scale)',
        logX: true,
        logY: true,
        formatX: (files) => files.toLocaleString('en'),
        series: [
          { name: 'version 2', points: handover.byFileCount.map((p: any) => ({ x: p.files, y: p.totalMs.median })) },
          { name: 'version 1', points: (handover.byFileCountVersion1 ?? []).map((p: any) => ({ x: p.files, y: p.totalMs.median })) },
          {
            name: 'record floor',
            points: handover.byFileCount.filter((p: any) => p.recordFloorMs).map((p: any) => ({ x: p.files, y: p.recordFloorMs.median })),
          },
        ].filter((line) => line.points.length > 0),
      }),
    );
    made.handoverSize = 'handover-size';
    made.handoverFiles = 'handover-files';
  }
  const access = all.access;
  if (access) {
    const groups = access.results
      .filter((result: any) => !result.skipped)
      .map((result: any) => ({
        label: `${formatSize(result.pageSize)} pages`,
        bars: [
          { name: 'raw mmap', value: 1000 / result.raw.throughputNsPerRead.median },
          ...(result.guestmemfs ? [{ name: 'guestmemfs mapping', value: 1000 / result.guestmemfs.throughputNsPerRead.median }] : []),
        ],
      }));
    writeChart(
      path.join(chartDir, 'access'),
      renderBarChart({
        title: `Random 8-byte reads over ${formatSize(access.size)}: throughput by page size`,
        yLabel: 'million reads per second',
        groups,
      }),
    );
    made.access = 'access';
  }
  const qemu = all.qemu;
  if (qemu) {
    const points = (variant: string) => qemu.results.map((entry: any) => ({ x: entry.ramBytes, y: entry[variant].updateMs.median }));
    writeChart(
      path.join(chartDir, 'qemu'),
      renderLineChart({
        title: 'QEMU live update time against guest RAM (median)',
        xLabel: 'guest RAM',
        yLabel: 'update (ms, log scale)',
        logX: true,
        logY: true,
        formatX: (bytes) => formatSize(bytes),
        series: [
          { name: 'cpr-transfer, gmfs', points: points('gmfs-cpr-transfer') },
          { name: 'cpr-reboot, gmfs', points: points('gmfs-cpr-reboot') },
          { name: 'migration, anon RAM', points: points('anonymous-migration'), dashed: true },
          { name: 'cpr-reboot, anon RAM', points: points('anonymous-cpr-reboot'), dashed: true },
        ],
      }),
    );
    made.qemu = 'qemu';
  }
  const hybrid = all.hybrid;
  if (hybrid?.hybrid) {
    writeChart(
      path.join(chartDir, 'hybrid'),
      renderBarChart({
        title: `A ${formatSize(hybrid.fileBytes)} guest file: hybrid pages against 2 MiB pages only (median)`,
        yLabel: 'ns per read / ms per map',
        groups: [
          { label: 'dependent read (ns)', pick: 'latencyNsPerRead' },
          { label: 'independent read (ns)', pick: 'throughputNsPerRead' },
          { label: 'map, pre-faulted (ms)', pick: 'mapMs' },
        ].map(({ label, pick }) => ({
          label,
          bars: [
            { name: 'hybrid', value: hybrid.hybrid[pick].median },
            { name: '2 MiB only', value: hybrid.pure[pick].median },
          ],
        })),
      }),
    );
    made.hybrid = 'hybrid';
  }
  const resize = all.resize;
  if (resize) {
    const amountPoints = (pick: (point: any) => number) => resize.byAmount.map((point: any) => ({ x: point.amountBytes, y: pick(point) }));
    writeChart(
      path.join(chartDir, 'resize'),
      renderLineChart({
        title: `Online resize of a mounted ${formatSize(resize.basePoolBytes)} pool against the amount (median)`,
        xLabel: 'memory added, then given back',
        yLabel: 'ms (log scale)',
        logX: true,
        logY: true,
        formatX: (bytes) => formatSize(bytes),
        series: [
          { name: 'grow', points: amountPoints((point) => point.growMs.median) },
          { name: 'floor: fallocate', points: amountPoints((point) => point.floorGrowMs.median), dashed: true },
          { name: 'shrink', points: amountPoints((point) => point.shrinkMs.median) },
          { name: 'floor: ftruncate', points: amountPoints((point) => point.floorShrinkMs.median), dashed: true },
        ],
      }),
    );
    made.resize = 'resize';
  }
  return made;
}
