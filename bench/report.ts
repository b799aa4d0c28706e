// Turns the results files under bench/results/ into charts (bench/charts/) and BENCHMARKS.md: every figure in the
// report is read from a results file, none is typed in. `npm run bench` calls it at the end; `npm run bench:report`
// alone regenerates the report from the committed results.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatSize, GiB, TiB } from '../lib/units';
import { renderBarChart, renderLineChart, writeChart } from './charts';
import type { Stats } from './common';

/* eslint-disable @typescript-eslint/no-explicit-any -- results files are JSON written by the benchmarks */
type Results = Record<string, any>;

export interface ReportOptions {
  resultsDir: string;
  quick: boolean;
  /** Where BENCHMARKS.md goes; charts go to <outDir>/bench/charts (the report links them relative to itself). */
  outDir: string;
}

export interface Headline {
  benchmark: string;
  measure: string;
  value: string;
  baseline: string;
  ratio: string;
  target: string;
  met: boolean | null;
}

const fixed = (value: number, digits = 2) => value.toFixed(digits);
const spread = (s: Stats, digits = 2) => `${fixed(s.median, digits)} [${fixed(s.min, digits)} .. ${fixed(s.max, digits)}]`;

function load(dir: string, name: string): Results | undefined {
  const file = path.join(dir, `${name}.json`);
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Results) : undefined;
}

/** The one-line verdicts against the targets, from whichever results exist. */
export function headlines(dir: string): Headline[] {
  const rows: Headline[] = [];
  const map = load(dir, 'map');
  if (map) {
    const paired = map.pairedRatios.addon_one_extent_vs_c as Stats;
    rows.push({ benchmark: 'map', measure: `re-map ${formatSize(map.size)} of ${formatSize(map.pageSize)} pages in a new process`, value: `${fixed(map.ms.addon_one_extent.median, 3)} ms`, baseline: `C mmap(MAP_POPULATE) ${fixed(map.ms.c_mmap_populate.median, 3)} ms`, ratio: `${fixed(paired.median)}x`, target: '<= 1.1x', met: paired.median <= 1.1 });
    for (const config of map.configs ?? []) {
      if (config.skipped) continue;
      rows.push({ benchmark: 'map', measure: `re-map ${formatSize(config.size)} of ${formatSize(config.pageSize)} pages`, value: `${fixed(config.ms.addon_one_extent.median, 3)} ms`, baseline: `C ${fixed(config.ms.c_mmap_populate.median, 3)} ms`, ratio: `${fixed(config.pairedRatio.median)}x`, target: '<= 1.1x', met: config.pairedRatio.median <= 1.1 });
    }
  }
  const alloc = load(dir, 'alloc');
  if (alloc) {
    rows.push({ benchmark: 'alloc', measure: `first allocation of a ${formatSize(alloc.size)} guest file (zero + populate)`, value: `${fixed(alloc.ms.guestmemfs_dirty_blocks.median, 1)} ms`, baseline: `C faulting fresh huge pages ${fixed(alloc.ms.c_fault_fresh_hugepages.median, 1)} ms`, ratio: `${fixed(alloc.ratios.dirtyVsC)}x`, target: '<= 1.1x', met: alloc.ratios.dirtyVsC <= 1.1 });
  }
  const access = load(dir, 'access');
  if (access) {
    for (const result of access.results) {
      if (!result.guestmemfs) continue;
      rows.push({ benchmark: 'access', measure: `random 8-byte reads, ${formatSize(access.size)}, ${formatSize(result.pageSize)} pages`, value: `${fixed(1000 / result.guestmemfs.throughputNsPerRead.median, 1)} M reads/s`, baseline: `raw hugetlbfs mmap ${fixed(1000 / result.raw.throughputNsPerRead.median, 1)} M reads/s`, ratio: `${fixed(result.throughputVsRaw, 3)}x`, target: '>= 0.98x', met: result.throughputVsRaw >= 0.98 });
    }
    rows.push({ benchmark: 'access', measure: 'gain of 2 MiB over 4 KiB pages (raw mmap)', value: `${fixed(access.hugeGain.throughput2MiBVs4KiB)}x throughput, ${fixed(access.hugeGain.latency2MiBVs4KiB)}x latency`, baseline: '4 KiB pages', ratio: '-', target: 'report', met: null });
  }
  const handover = load(dir, 'handover');
  if (handover) {
    const at100 = handover.byDescribedSize.find((point: any) => point.describedBytes === 100 * GiB);
    if (at100) rows.push({ benchmark: 'handover', measure: 'serialise + restore, 100 GiB described', value: `${fixed(at100.totalMs.median, 3)} ms`, baseline: 'PKRAM 100 GiB: 13 ms save, 101 ms load', ratio: '-', target: '<= 1 ms', met: at100.totalMs.median <= 1 });
    rows.push({ benchmark: 'handover', measure: 'slopes', value: `${fixed(handover.slopes.msPerThousandFiles)} ms per 1,000 files, ${fixed(handover.slopes.msPerTiBDescribed, 3)} ms per TiB`, baseline: '-', ratio: '-', target: 'report', met: null });
  }
  const fsResults = load(dir, 'fs');
  if (fsResults) {
    for (const op of ['create', 'lookup', 'unlink'] as const) {
      const entry = fsResults.metadataOpsPerSecond[op];
      rows.push({ benchmark: 'fs', measure: `${op} on ${fsResults.files.toLocaleString('en')} files`, value: `${fixed(entry.guestmemfs.median / 1000, 0)}k/s`, baseline: `in-memory model ${fixed(entry.inMemoryModel.median / 1000, 0)}k/s`, ratio: `${fixed(entry.ratio)}x`, target: '>= 200k/s', met: entry.guestmemfs.median >= 200_000 });
    }
  }
  const vmm = load(dir, 'vmm');
  if (vmm) {
    const largest = vmm.results.at(-1);
    const startup = vmm.nodeStartupMs.median as number;
    rows.push({ benchmark: 'vmm', measure: `transfer-mode blackout, ${formatSize(largest.ramBytes)} guest`, value: `${fixed(largest.transferMs.median)} ms (fastest ${fixed(largest.transferMs.min)})`, baseline: `copy save + load ${fixed(largest.copyBaselineMs.median / 1000, 1)} s`, ratio: `${fixed(largest.ratios.transferVsCopy, 5)}x`, target: '<= 2 ms', met: largest.transferMs.median <= 2 });
    rows.push({ benchmark: 'vmm', measure: `exec-mode blackout, ${formatSize(largest.ramBytes)} guest`, value: `${fixed(largest.execMs.median, 1)} ms`, baseline: `Node start-up ${fixed(startup, 1)} ms`, ratio: `${fixed(largest.execMs.median / startup)}x`, target: `<= start-up + 5 = ${fixed(startup + 5, 1)} ms`, met: largest.execMs.median <= startup + 5 });
  }
  return rows;
}

function charts(dir: string, chartDir: string): Record<string, string> {
  fs.mkdirSync(chartDir, { recursive: true });
  const made: Record<string, string> = {};
  const gib = (bytes: number) => bytes / GiB;
  const vmm = load(dir, 'vmm');
  if (vmm) {
    const startup = vmm.nodeStartupMs.median as number;
    const points = (pick: (result: any) => number) => vmm.results.map((result: any) => ({ x: gib(result.ramBytes), y: pick(result) }));
    writeChart(
      path.join(chartDir, 'blackout'),
      renderLineChart({
        title: 'Live-update blackout against guest RAM (median)',
        xLabel: 'guest RAM (GiB)',
        yLabel: 'blackout (ms, log scale)',
        logX: true,
        logY: true,
        series: [
          { name: 'transfer mode', points: points((r) => r.transferMs.median) },
          { name: 'exec mode', points: points((r) => r.execMs.median) },
          { name: 'copy save + load', points: points((r) => r.copyBaselineMs.median), dashed: true },
          { name: 'bare Node start-up', points: points(() => startup), dashed: true },
        ],
      }),
    );
    made.blackout = 'blackout';
  }
  const handover = load(dir, 'handover');
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
        title: 'Handover (serialise + restore) against number of files',
        xLabel: 'files',
        yLabel: 'ms (log scale)',
        logX: true,
        logY: true,
        formatX: (files) => files.toLocaleString('en'),
        series: [{ name: 'serialise + restore', points: handover.byFileCount.map((p: any) => ({ x: p.files, y: p.totalMs.median })) }],
      }),
    );
    made.handoverSize = 'handover-size';
    made.handoverFiles = 'handover-files';
  }
  const access = load(dir, 'access');
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
    writeChart(path.join(chartDir, 'access'), renderBarChart({ title: `Random 8-byte reads over ${formatSize(access.size)}: throughput by page size`, yLabel: 'million reads per second', groups }));
    made.access = 'access';
  }
  return made;
}

function machineLine(results: Results): string {
  const m = results.machine;
  return `${m.cpus.join(', ')} x${m.cpuCount}, ${formatSize(m.memoryBytes)} RAM, Linux ${m.kernel}, Node ${m.node}, huge pages ${m.hugePageSizes.map((size: number) => formatSize(size)).join(' and ')}; run ${m.date.slice(0, 16).replace('T', ' ')} UTC`;
}

/** Renders the charts and writes BENCHMARKS.md under outDir; returns the report's path. */
export function writeReport(options: ReportOptions): string {
  const { resultsDir, quick, outDir } = options;
  const chartDir = path.join(outDir, 'bench', 'charts');
  const made = charts(resultsDir, chartDir);
  const rows = headlines(resultsDir);
  const names = ['map', 'alloc', 'access', 'zero', 'fs', 'handover', 'vmm'];
  const present = names.map((name) => [name, load(resultsDir, name)] as const).filter(([, results]) => results);
  const image = (key: string, alt: string) => (made[key] ? `![${alt}](bench/charts/${made[key]}.svg)\n` : '');
  const vmm = load(resultsDir, 'vmm');
  const access = load(resultsDir, 'access');
  const lines: string[] = [
    '# Benchmarks',
    '',
    'Generated by `npm run bench` (or `npm run bench:report` from the committed results) from the files in',
    '`bench/results/`; no figure here is typed in. Each benchmark runs the project and its baseline in the same run on',
    'the same machine and reports the median with the spread `[min .. max]`.',
    '',
    ...(quick ? ['**A quick smoke run** (`--quick`: small sizes, one run each): it checks that the benchmarks work; its figures are not for comparison.', ''] : []),
    '## Reproduce',
    '',
    '```',
    'npm install                  # builds the addon, the demo guest and the TypeScript',
    'npm run bench                # every benchmark below, then the charts and this file (needs root, huge pages, /dev/kvm)',
    'npm run bench -- --quick     # each benchmark once at a small size (what the test suite runs)',
    'npm run bench -- --only vmm  # one benchmark (map, alloc, access, zero, fs, handover, vmm)',
    '```',
    '',
    '## Machine',
    '',
    ...present.map(([name, results]) => `- \`${name}\`: ${machineLine(results!)}`),
    '',
    '## Against the targets',
    '',
    '| benchmark | measure | guestmemfs | baseline | ratio | target | met |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((row) => `| ${row.benchmark} | ${row.measure} | ${row.value} | ${row.baseline} | ${row.ratio} | ${row.target} | ${row.met === null ? '-' : row.met ? 'yes' : '**no**'} |`),
    '',
  ];
  if (vmm) {
    lines.push('## Live-update blackout (`bench:vmm`)', '', image('blackout', 'blackout against guest RAM'));
    lines.push(`Median of ${vmm.updatesPerRun} updates per mode and size; bare Node start-up ${spread(vmm.nodeStartupMs, 1)} ms.`, '');
    lines.push('| guest RAM | transfer (ms) | exec (ms) | copy save + load (ms) |', '|---|---|---|---|');
    for (const r of vmm.results) lines.push(`| ${formatSize(r.ramBytes)} | ${spread(r.transferMs)} | ${spread(r.execMs, 1)} | ${spread(r.copyBaselineMs, 0)} |`);
    const cold = vmm.results.find((r: any) => r.transferColdMs);
    if (cold) lines.push('', `Without rehearsing the update path, the ${formatSize(cold.ramBytes)} transfer takes ${spread(cold.transferColdMs)} ms.`);
    lines.push('');
  }
  const handover = load(resultsDir, 'handover');
  if (handover) {
    lines.push('## Handover (`bench:handover`)', '', image('handoverSize', 'handover time against memory described'), image('handoverFiles', 'handover time against number of files'));
    lines.push('| described | files | serialise (ms) | restore (ms) | total (ms) |', '|---|---|---|---|---|');
    for (const p of [...handover.byDescribedSize, ...handover.byFileCount]) lines.push(`| ${formatSize(p.describedBytes)} | ${p.files.toLocaleString('en')} | ${spread(p.serialiseMs, 3)} | ${spread(p.restoreMs, 3)} | ${spread(p.totalMs, 3)} |`);
    lines.push('', `Slopes (least squares): ${fixed(handover.slopes.msPerThousandFiles)} ms per 1,000 files, ${fixed(handover.slopes.msPerTiBDescribed, 3)} ms per TiB described (largest: ${formatSize(Math.max(...handover.byDescribedSize.map((p: any) => p.describedBytes)) || TiB)}).`, '');
  }
  if (access) {
    lines.push('## Random access (`bench:access`)', '', image('access', 'random-read throughput by page size'));
    lines.push(`${access.opsPerRun.toLocaleString('en')} independent and ${(access.dependentOpsPerRun ?? access.opsPerRun).toLocaleString('en')} dependent reads per run, ${access.runs} runs, over ${formatSize(access.size)}; the same loop (native/gmfs_probe_loop.h) on both sides.`, '');
    lines.push('| pages | mapping | independent reads (ns/read) | dependent reads (ns/read) |', '|---|---|---|---|');
    for (const r of access.results) {
      if (r.skipped) {
        lines.push(`| ${formatSize(r.pageSize)} | skipped: ${r.skipped} | | |`);
        continue;
      }
      lines.push(`| ${formatSize(r.pageSize)} | raw mmap | ${spread(r.raw.throughputNsPerRead)} | ${spread(r.raw.latencyNsPerRead, 1)} |`);
      if (r.guestmemfs) lines.push(`| ${formatSize(r.pageSize)} | guestmemfs | ${spread(r.guestmemfs.throughputNsPerRead)} | ${spread(r.guestmemfs.latencyNsPerRead, 1)} |`);
    }
    lines.push('');
  }
  const link = (name: string) => path.relative(outDir, path.join(resultsDir, `${name}.json`));
  lines.push('## Raw results', '', ...present.map(([name]) => `- [\`${link(name)}\`](${link(name)})`), '');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'BENCHMARKS.md');
  fs.writeFileSync(file, lines.join('\n'));
  return file;
}
