// Turns the results files under bench/results/ into charts (bench/charts/) and BENCHMARKS.md: every figure in the
// report is read from a results file, none is typed in. `npm run bench` calls it at the end; `npm run bench:report`
// alone regenerates the report from the committed results.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatSize, TiB } from '../lib/units';
import { renderBarChart, renderLineChart, writeChart } from './charts';
import { BENCHMARKS, type BenchmarkName, stats, type Stats } from './common';
import { configLabel, fixed, type Headline, headlines, headlinesOf, loadAll, type Results, spread } from './headlines';

export { headlines } from './headlines';

/* eslint-disable
     @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment,
     @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return
     -- results files are JSON written by the benchmarks, read here as they are */

export interface ReportOptions {
  resultsDir: string;
  quick: boolean;
  /** Where BENCHMARKS.md goes; charts go to <outDir>/bench/charts (the report links them relative to itself). */
  outDir: string;
}
function charts(all: Partial<Record<BenchmarkName, Results>>, chartDir: string): Record<string, string> {
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
  return made;
}

function machineLine(results: Results): string {
  const m = results.machine;
  return (
    `${m.cpus.join(', ')} x${m.cpuCount}, ${formatSize(m.memoryBytes)} RAM, Linux ${m.kernel}, Node ${m.node}, ` +
    `huge pages ${m.hugePageSizes.map((size: number) => formatSize(size)).join(' and ')}`
  );
}

const runDate = (results: Results) => `${results.machine.date.slice(0, 16).replace('T', ' ')} UTC`;

/** A captioned table of breakdowns: one row per labelled list of breakdowns, one column per key (its median). */
function breakdownTable(caption: string, keys: string[], rows: Array<[string, Array<Record<string, number | null>>]>): string[] {
  return [
    caption,
    '',
    `| update | ${keys.map((key) => key.replace(/Ms$/, '')).join(' | ')} |`,
    `|---|${keys.map(() => '---').join('|')}|`,
    ...rows.map(([label, breakdowns]) => breakdownRow(label, breakdowns, keys)),
  ];
}

/** Median of each part over a list of breakdowns, as a table row. */
function breakdownRow(label: string, breakdowns: Array<Record<string, number | null>>, keys: string[]): string {
  const medianOf = (key: string) =>
    breakdowns.some((b) => typeof b[key] === 'number') ? fixed(stats(breakdowns.map((b) => b[key] ?? 0)).median, 2) : '-';
  return `| ${label} | ${keys.map(medianOf).join(' | ')} |`;
}

/** The verdicts as a Markdown table (BENCHMARKS.md and the README show the same one). */
function headlineTable(rows: Headline[]): string[] {
  return [
    '| benchmark | measure | guestmemfs | baseline | ratio | target | met |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (row) =>
        `| ${row.benchmark} | ${row.measure} | ${row.value} | ${row.baseline} | ${row.ratio} | ${row.target} | ` +
        `${row.met === null ? '-' : row.met ? 'yes' : '**no**'} |`,
    ),
  ];
}

const README_BEGIN = '<!-- bench:begin (generated by npm run bench / bench:report from bench/results) -->';
const README_END = '<!-- bench:end -->';

/** Replaces the README's generated benchmark table (between its markers) with the current headlines. */
export function updateReadme(readme: string, resultsDir: string): boolean {
  const text = fs.readFileSync(readme, 'utf8');
  const begin = text.indexOf(README_BEGIN);
  const end = text.indexOf(README_END);
  if (begin < 0 || end < begin) return false;
  const rows = headlines(resultsDir);
  const table = [README_BEGIN, ...headlineTable(rows), README_END].join('\n');
  fs.writeFileSync(readme, text.slice(0, begin) + table + text.slice(end + README_END.length));
  return true;
}

/** Renders the charts and writes BENCHMARKS.md under outDir; returns the report's path. */
export function writeReport(options: ReportOptions): string {
  const { resultsDir, quick, outDir } = options;
  const chartDir = path.join(outDir, 'bench', 'charts');
  const all = loadAll(resultsDir);
  const made = charts(all, chartDir);
  const rows = headlinesOf(all);
  const present = BENCHMARKS.map((name) => [name, all[name]] as const).filter(([, results]) => results);
  const image = (key: string, alt: string) => (made[key] ? `![${alt}](bench/charts/${made[key]}.svg)\n` : '');
  const vmm = all.vmm;
  const device = all.device;
  const access = all.access;
  const lines: string[] = [
    '# Benchmarks',
    '',
    'Generated by `npm run bench` (or `npm run bench:report` from the committed results) from the files in',
    '`bench/results/`; no figure here is typed in. Each benchmark runs the project and its baseline in the same run on',
    'the same machine and reports the median with the spread `[min .. max]`.',
    '',
    ...(quick
      ? [
          '**A quick smoke run** (`--quick`: small sizes, one run each): it checks that the benchmarks work; its figures are not for ' +
            'comparison.',
          '',
        ]
      : []),
    '## Reproduce',
    '',
    '```',
    'npm install                  # builds the addon, the demo guest and the TypeScript',
    'npm run bench                # every benchmark below, then the charts and this file (needs root, huge pages, /dev/kvm)',
    'npm run bench -- --quick     # each benchmark once at a small size (what the test suite runs)',
    'npm run bench -- --only vmm  # one benchmark (map, alloc, access, zero, fs, handover, vmm, device, pins, qemu, service)',
    '```',
    '',
    '## Machine',
    '',
    ...[...new Set(present.map(([, results]) => machineLine(results!)))].map((line) => `- ${line}`),
    '',
    `Runs: ${present.map(([name, results]) => `\`${name}\` ${runDate(results!)}`).join(', ')}.`,
    '',
    '## Against the targets',
    '',
    ...headlineTable(rows),
    '',
  ];
  const map = all.map;
  if (map) {
    lines.push('## Re-map of preserved guest RAM (`bench:map`)', '');
    lines.push(
      `${formatSize(map.size)} of ${formatSize(map.pageSize)} pages, ${map.runs} rounds, ` +
        `each side timing only its map call from the same cache state; ratios are medians of per-round ratios to the C floor.`,
      '',
    );
    lines.push('| variant | ms | mmap calls | vs C |', '|---|---|---|---|');
    for (const [key, value] of Object.entries(map.ms as Record<string, Stats>)) {
      const paired = map.pairedRatios[`${key}_vs_c`] as Stats | undefined;
      lines.push(
        `| ${key} | ${spread(value, 3)} | ${map.mmapCalls[key] ?? 1} | ` +
          `${paired ? `${fixed(paired.median)}x` : key === 'c_mmap_populate' ? '1' : '-'} |`,
      );
    }
    for (const config of map.configs ?? []) {
      lines.push(
        config.skipped
          ? `| ${configLabel(config)} | skipped: ${config.skipped} | | |`
          : `| ${configLabel(config)}: C / addon | ${spread(config.ms.c_mmap_populate, 3)} / ${spread(config.ms.addon_one_extent, 3)} | ` +
              `1 | ${fixed(config.pairedRatio.median)}x |`,
      );
    }
    lines.push('');
  }
  // A table of timed cases, one row per case: the shape of the alloc and zero sections.
  const msSection = (title: string, summary: string, column: string, ms: Record<string, Stats>) => {
    lines.push(title, '', summary, '');
    lines.push(`| ${column} | ms |`, '|---|---|');
    for (const [key, value] of Object.entries(ms)) lines.push(`| ${key} | ${spread(value, 1)} |`);
    lines.push('');
  };
  const alloc = all.alloc;
  if (alloc) {
    const summary = `A ${formatSize(alloc.size)} guest file of ${formatSize(alloc.pageSize)} pages, ${alloc.runs} runs.`;
    msSection('## First allocation (`bench:alloc`)', summary, 'case', alloc.ms);
  }
  const zero = all.zero;
  if (zero)
    msSection(
      '## Zeroing blocks (`bench:zero`)',
      `${formatSize(zero.size)} of ${formatSize(zero.pageSize)} pages, ${zero.runs} runs.`,
      'method',
      zero.ms,
    );
  const qemuSection = all.qemu;
  if (qemuSection) {
    lines.push(
      '## QEMU live update (`bench:qemu`)',
      '',
      `${qemuSection.qemu}, TCG, a Debian 6.1 kernel whose guest fills three quarters of its RAM (less 128 MiB) before the ` +
        `first update, then ${qemuSection.updates} updates in a row of the same guest. guestmemfs RAM: a contiguous guest file ` +
        'as `memory-backend-file,share=on` (cpr-reboot with x-ignore-shared; cpr-transfer with aux-ram-share=on). Anonymous ' +
        'RAM: cpr-reboot copies it into the state file; the transfer baseline is a normal migration to a second QEMU on ' +
        'the same host, started ahead like the cpr-transfer successor. The update runs from the migrate command to the new ' +
        "QEMU running the guest; the downtime is QEMU's own query-migrate figure; moved is what went through the stream.",
      '',
      image('qemu', 'QEMU update time against guest RAM'),
      '| guest RAM | update | guestmemfs RAM (ms) | QEMU downtime (ms) | moved | anonymous RAM (ms) | QEMU downtime (ms) | moved |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const entry of qemuSection.results) {
      for (const [mode, baseline] of [
        ['gmfs-cpr-reboot', 'anonymous-cpr-reboot'],
        ['gmfs-cpr-transfer', 'anonymous-migration'],
      ] as const) {
        const ours = entry[mode];
        const theirs = entry[baseline];
        lines.push(
          `| ${formatSize(entry.ramBytes)} | ${mode.slice(5)} | ${spread(ours.updateMs, 1)} | ${fixed(ours.downtimeMs.median, 0)} | ` +
            `${formatSize(ours.bytes.median)} | ${spread(theirs.updateMs, 0)} | ${fixed(theirs.downtimeMs.median, 0)} | ` +
            `${formatSize(theirs.bytes.median)} |`,
        );
      }
    }
    lines.push('');
  }
  const pinResults = all.pins;
  if (pinResults) {
    lines.push(
      '## Pins (`bench:pins`)',
      '',
      `Mapping ${formatSize(pinResults.ramBytes)} of ${formatSize(pinResults.pageSize)} pages with its pin ` +
        `(an OFD read lock per extent on a description of its own) against the same map without one, ` +
        `${pinResults.runs} interleaved rounds: ` +
        `${spread(pinResults.map.pinnedMs, 3)} ms against ${spread(pinResults.map.unpinnedMs, 3)} ms, ` +
        `${fixed(pinResults.map.ratio.median, 3)}x.`,
      '',
      `The probe before blocks are freed (one F_OFD_GETLK per extent), with other files of the pool pinned, ` +
        `${pinResults.probeOps.toLocaleString('en')} operations each:`,
      '',
      '| pins on the pool | shrink (us) | unlink (us) |',
      '|---|---|---|',
    );
    for (const probe of pinResults.probes)
      lines.push(`| ${probe.pins.toLocaleString('en')} | ${spread(probe.shrinkUs, 1)} | ${spread(probe.unlinkUs, 1)} |`);
    lines.push('');
  }
  const fsResults = all.fs;
  if (fsResults) {
    lines.push(
      '## Metadata operations (`bench:fs`)',
      '',
      `${fsResults.files.toLocaleString('en')} files, ${fsResults.runs} runs; operations per second.`,
      '',
    );
    lines.push('| operation | guestmemfs | in-memory model | ratio |', '|---|---|---|---|');
    for (const [op, entry] of Object.entries(fsResults.metadataOpsPerSecond as Record<string, any>)) {
      lines.push(`| ${op} | ${spread(entry.guestmemfs, 0)} | ${spread(entry.inMemoryModel, 0)} | ${fixed(entry.ratio)}x |`);
    }
    for (const [kind, value] of Object.entries(fsResults.truncate2MiBOpsPerSecond as Record<string, Stats>))
      lines.push(`| truncate to 2 MiB (${kind}) | ${spread(value, 0)} | - | - |`);
    lines.push('');
  }
  if (vmm) {
    lines.push('## Live-update blackout (`bench:vmm`)', '', image('blackout', 'blackout against guest RAM'));
    lines.push(`Median of ${vmm.updatesPerRun} updates per mode and size; bare Node start-up ${spread(vmm.nodeStartupMs, 1)} ms.`, '');
    lines.push('| guest RAM | transfer (ms) | exec (ms) | copy save + load (ms) |', '|---|---|---|---|');
    for (const r of vmm.results)
      lines.push(`| ${formatSize(r.ramBytes)} | ${spread(r.transferMs)} | ${spread(r.execMs, 1)} | ${spread(r.copyBaselineMs, 0)} |`);
    lines.push(
      '',
      ...breakdownTable(
        'Inside the blackout (median of each part, ms). Transfer: stop skew (from the first vCPU stopping to the last), ' +
          "save (from then to the last vCPU's state published, on the vCPU threads), wake-up of the successor's vCPU " +
          'threads, resume (loading every vCPU, the commit point, entering KVM_RUN). ' +
          "Exec: save, closing the VM and guest RAM's mapping, execve + Node start-up, then the launcher's early " +
          'resume: loading the addon, mapping and pinning ' +
          'guest RAM and the state file from the recipes the paused VMM left, creating the VM, its vCPUs and memory slot, and the ' +
          'vCPUs loading their saved states on their threads up to KVM_RUN. The VMM program loads, mounts and adopts the running ' +
          'guest after the blackout.',
        ['stopSkewMs', 'saveMs', 'signalMs', 'resumeMs', 'closeMs', 'execAndStartupMs', 'addonMs', 'mapMs', 'vmMs', 'vcpuRestoreMs'],
        vmm.results.flatMap((r: any) => [
          [`transfer, ${formatSize(r.ramBytes)}`, r.transferBreakdowns],
          [`exec, ${formatSize(r.ramBytes)}`, r.execBreakdowns],
          ...(r.transferColdBreakdowns ? [[`transfer not rehearsed, ${formatSize(r.ramBytes)}`, r.transferColdBreakdowns]] : []),
          ...(r.smp
            ? [
                [`transfer, ${formatSize(r.ramBytes)}, ${r.smp.vcpus} vCPUs`, r.smp.transferBreakdowns],
                [`exec, ${formatSize(r.ramBytes)}, ${r.smp.vcpus} vCPUs`, r.smp.execBreakdowns],
              ]
            : []),
        ]),
      ),
      '',
      ...breakdownTable(
        'Before the pause, the guest still running (median, ms): both modes serialise the filesystem first; exec mode writes the code ' +
          'cache for its successor; in transfer mode the successor restores the filesystem and attaches to guest RAM and the state ' +
          'file, so that only the vCPU state crosses inside the blackout.',
        ['serialiseMs', 'codeCacheMs', 'restoreMs', 'mapMs'],
        vmm.results.flatMap((r: any) => [
          [`transfer, ${formatSize(r.ramBytes)}`, r.transferBeforePause ?? []],
          [`exec, ${formatSize(r.ramBytes)}`, r.execBeforePause ?? []],
        ]),
      ),
    );
    lines.push(
      '',
      ...breakdownTable(
        'After an exec-mode blackout, the guest running again (median, ms): loading the bundled VMM with the code cache its ' +
          'predecessor wrote, mounting the pool from the handover, and adopting the running VM and its mappings.',
        ['loadMs', 'mountMs', 'adoptMs'],
        vmm.results.map((r: any) => [`exec, ${formatSize(r.ramBytes)}`, r.execAfterResume ?? []]),
      ),
    );
    const floor = vmm.results.find((r: any) => r.execFloorMs);
    if (floor) {
      lines.push(
        '',
        `The floor of an exec-mode update of a running guest at ${formatSize(floor.ramBytes)} for any VMM on Node here ` +
          '(`bench/exec-floor.ts`): a process runs the guest, pauses it, saves its vCPUs, closes the VM and execs Node, which ' +
          "maps the RAM, creates a VM, its vCPUs and the memory slot, loads the vCPUs and runs them, with none of guestmemfs's " +
          'code. Measured round by round beside the exec-mode updates, from the first vCPU stopping: ' +
          `${spread(floor.execFloorStartupMs, 1)} ms to the new process's first line, ${spread(floor.execFloorKvmReadyMs, 1)} ms to its ` +
          `VM being ready, ${spread(floor.execFloorMs, 1)} ms to every vCPU in KVM_RUN. Exec mode took ` +
          `${fixed(floor.ratios.execVsFloor)}x that (target <= 1.15x)` +
          `${floor.smp?.execFloorMs ? `, and ${fixed(floor.smp.execVsFloor)}x with ${floor.smp.vcpus} vCPUs` : ''}.`,
      );
    }
    const smp = vmm.results.find((r: any) => r.smp);
    if (smp) {
      lines.push(
        '',
        `With 1 and ${smp.smp.vcpus} vCPUs at ${formatSize(smp.ramBytes)} (every vCPU paused, saved and resumed together): ` +
          `transfer ${spread(smp.transferMs)} and ${spread(smp.smp.transferMs)} ms, exec ${spread(smp.execMs, 1)} and ` +
          `${spread(smp.smp.execMs, 1)} ms.`,
      );
    }
    const cold = vmm.results.find((r: any) => r.transferColdMs);
    if (cold)
      lines.push(
        '',
        `Without rehearsing the update path, the ${formatSize(cold.ramBytes)} transfer takes ${spread(cold.transferColdMs)} ms.`,
      );
    lines.push('');
  }
  if (device) {
    lines.push(
      '## Device DMA through live updates (`bench:device`)',
      '',
      image('deviceDma', 'device DMA around a live update'),
      `A ${formatSize(device.ramBytes)} guest with ${device.vcpus} vCPUs and the demo device, whose backend process writes ` +
        `${device.recordsPerSecond} records/s into buffers the guest posted (through the IOMMU table); ${device.updatesPerRun} ` +
        `updates per mode. DMA in records per ms: in the ${device.windowMs} ms before each blackout (the baseline), inside it, ` +
        `and in the ${device.windowMs} ms after; and the longest run of milliseconds with no DMA within ${device.windowMs} ms of it, ` +
        "counting only those in which the guest had buffers posted (the device's own gaps), and any.",
      '',
      '| mode | blackout (ms) | before | during | after | longest gap, buffers posted (ms) | longest gap, any (ms) |',
      '|---|---|---|---|---|---|---|',
      ...(['exec', 'transfer'] as const).map(
        (mode) =>
          `| ${mode} | ${spread(device[mode].blackoutMs)} | ${spread(device[mode].beforePerMs)} | ${spread(device[mode].duringPerMs)} | ` +
          `${spread(device[mode].afterPerMs)} | ${spread(device[mode].longestDeviceGapMs, 0)} | ${spread(device[mode].longestGapMs, 0)} |`,
      ),
      '',
    );
  }
  const handover = all.handover;
  if (handover) {
    lines.push(
      '## Handover (`bench:handover`)',
      '',
      image('handoverSize', 'handover time against memory described'),
      image('handoverFiles', 'handover time against number of files'),
    );
    lines.push('| described | files | serialise (ms) | restore (ms) | total (ms) |', '|---|---|---|---|---|');
    for (const p of [...handover.byDescribedSize, ...handover.byFileCount])
      lines.push(
        `| ${formatSize(p.describedBytes)} | ${p.files.toLocaleString('en')} | ${spread(p.serialiseMs, 3)} | ${spread(p.restoreMs, 3)} ` +
          `| ${spread(p.totalMs, 3)} |`,
      );
    lines.push(
      '',
      `Slopes (least squares): ${fixed(handover.slopes.msPerThousandFiles)} ms per 1,000 files, ` +
        `${fixed(handover.slopes.msPerTiBDescribed, 3)} ms per TiB described (largest: ` +
        `${formatSize(Math.max(...handover.byDescribedSize.map((p: any) => p.describedBytes)) || TiB)}).`,
      '',
    );
  }
  if (access) {
    lines.push('## Random access (`bench:access`)', '', image('access', 'random-read throughput by page size'));
    lines.push(
      `${access.opsPerRun.toLocaleString('en')} independent and ${(access.dependentOpsPerRun ?? access.opsPerRun).toLocaleString('en')} ` +
        `dependent reads per run, ${access.runs} runs, over ${formatSize(access.size)}; the same loop (native/gmfs_probe_loop.h) on ` +
        `both sides.`,
      '',
    );
    lines.push('| pages | mapping | independent reads (ns/read) | dependent reads (ns/read) |', '|---|---|---|---|');
    for (const r of access.results) {
      if (r.skipped) {
        lines.push(`| ${formatSize(r.pageSize)} | skipped: ${r.skipped} | | |`);
        continue;
      }
      lines.push(`| ${formatSize(r.pageSize)} | raw mmap | ${spread(r.raw.throughputNsPerRead)} | ${spread(r.raw.latencyNsPerRead, 1)} |`);
      if (r.guestmemfs)
        lines.push(
          `| ${formatSize(r.pageSize)} | guestmemfs | ${spread(r.guestmemfs.throughputNsPerRead)} | ` +
            `${spread(r.guestmemfs.latencyNsPerRead, 1)} |`,
        );
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
