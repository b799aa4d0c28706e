// npm run bench:map — re-map a populated 4 GiB 2 MiB-page pool in a fresh process: addon vs one C mmap(MAP_POPULATE).
//
// Each side times its map+populate call alone (open is reported apart). Both children start from the same cache
// state (a 1 GiB sweep, larger than the LLC, before the timed map) and without
// NODE_EXTRA_CA_CERTS, which would make every Node start-up parse a CA bundle on a second core meanwhile.
import * as path from 'node:path';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB } from '../lib/units';
import {
  buildBaseline,
  childEnv,
  quickMode,
  repoRoot,
  reserveBenchPages,
  reserveForBench,
  runJson,
  runsArg,
  stats,
  type Stats,
  writeResults,
} from './common';

const pageSize = 2 * MiB;
const size = quickMode ? 64 * MiB : 4 * GiB;
const runs = runsArg(31);
const sweepBytes = GiB; // larger than the 480 MiB L3 of the machine this was tuned on: both sides start cache-cold

const baseline = buildBaseline('mmap_populate');
const reservation = reserveForBench(pageSize, size / pageSize);
const pool = Pool.create({ backend: 'hugetlbfs', path: path.join(reservation.mountpoint!, 'bench-map'), size });
let headlineReleased = false;
try {
  // Populate once, as a preserved pool would be: every page exists before the timed re-maps.
  pool.mapAll({ populate: true }).unmap();
  const child = path.join(repoRoot, 'dist', 'bench', 'map-child.js');
  const samples: Record<string, number[]> = {
    c_mmap_populate: [],
    addon_one_extent: [],
    addon_one_extent_cold_js: [],
    addon_adjacent_extents: [],
    addon_scattered_extents: [],
    c_mmap_populate_hot_cache: [],
  };
  const calls: Record<string, number> = {};
  const openMs: Record<string, number[]> = { c: [], addon: [] };
  for (let run = 0; run < runs; run++) {
    // Interleave the variants so drift on the machine affects all of them alike.
    const floor = runJson<{ ms: number; openMs: number }>(baseline, [pool.path!, String(size), String(sweepBytes)], childEnv);
    samples.c_mmap_populate!.push(floor.ms);
    openMs.c!.push(floor.openMs);
    samples.c_mmap_populate_hot_cache!.push(runJson<{ ms: number }>(baseline, [pool.path!, String(size), '0'], childEnv).ms);
    for (const mode of ['one', 'one-cold', 'adjacent', 'scattered'] as const) {
      const result = runJson<{ ms: number; openMs: number; mmapCalls: number }>(
        process.execPath,
        ['--expose-gc', child, pool.path!, mode, String(size), String(sweepBytes)],
        childEnv,
      );
      const key = {
        one: 'addon_one_extent',
        'one-cold': 'addon_one_extent_cold_js',
        adjacent: 'addon_adjacent_extents',
        scattered: 'addon_scattered_extents',
      }[mode];
      samples[key]!.push(result.ms);
      if (mode === 'one') openMs.addon!.push(result.openMs);
      calls[key] = result.mmapCalls;
    }
  }
  const summary = Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, stats(values)]));
  const floor = summary.c_mmap_populate!.median;
  const ratios = {
    addon_one_extent_vs_c: summary.addon_one_extent!.median / floor,
    addon_one_extent_cold_js_vs_c: summary.addon_one_extent_cold_js!.median / floor,
    addon_adjacent_extents_vs_c: summary.addon_adjacent_extents!.median / floor,
    addon_scattered_extents_vs_c: summary.addon_scattered_extents!.median / floor,
  };
  // Paired ratios (each addon sample over the C sample of the same round) cancel the machine's drift between rounds.
  const paired = (key: string) => stats(samples[key]!.map((value, index) => value / samples.c_mmap_populate![index]!));
  const pairedRatios = {
    addon_one_extent_vs_c: paired('addon_one_extent'),
    addon_one_extent_cold_js_vs_c: paired('addon_one_extent_cold_js'),
    addon_adjacent_extents_vs_c: paired('addon_adjacent_extents'),
    addon_scattered_extents_vs_c: paired('addon_scattered_extents'),
  };
  pool.destroy();
  reservation.release();
  headlineReleased = true;
  const configs = quickMode
    ? []
    : [
        measureConfig(4 * GiB, 2 * MiB, { whileMapped: true }),
        measureConfig(4 * GiB, GiB, { fewerPagesOk: true }),
        measureConfig(16 * GiB, 2 * MiB),
        measureConfig(16 * GiB, GiB),
      ];
  const file = writeResults(
    'map',
    {
      size,
      pageSize,
      runs,
      cacheSweepBytes: sweepBytes,
      childEnvDrops: ['NODE_EXTRA_CA_CERTS'],
      mmapCalls: { c_mmap_populate: 1, ...calls },
      ms: summary,
      pairedRatios,
      openMs: { c: stats(openMs.c!), addon: stats(openMs.addon!) },
      ratios,
      configs,
      target: 'addon_one_extent_vs_c <= 1.1 (median of paired ratios)',
    },
    quickMode,
  );
  process.stdout.write(`re-map ${formatSize(size)} of ${formatSize(pageSize)} pages in a fresh process (median of ${runs}):\n`);
  for (const [key, value] of Object.entries(summary)) {
    process.stdout.write(
      `  ${key.padEnd(26)} ${value.median.toFixed(3).padStart(9)} ms  [${value.min.toFixed(3)} .. ${value.max.toFixed(3)}]  ` +
        `${calls[key] ?? 1} mmap calls\n`,
    );
  }
  for (const [key, value] of Object.entries(ratios)) {
    const pair = pairedRatios[key as keyof typeof pairedRatios];
    process.stdout.write(
      `  ${key.padEnd(30)} ${value.toFixed(2)}x (ratio of medians), ${pair.median.toFixed(2)}x (median of paired ratios)\n`,
    );
  }
  for (const config of configs) {
    process.stdout.write(
      config.skipped
        ? `  ${formatSize(config.size)} of ${formatSize(config.pageSize)} pages: skipped (${config.skipped})\n`
        : `  ${formatSize(config.size)} of ${formatSize(config.pageSize)} ` +
            `pages${config.whileMapped ? ' (previous owner still maps it)' : ''}: C ${config.ms!.c_mmap_populate.median.toFixed(3)} ms, ` +
            `addon ${config.ms!.addon_one_extent.median.toFixed(3)} ms, ${config.pairedRatio!.median.toFixed(2)}x (median of paired ` +
            `ratios)\n`,
    );
  }
  process.stdout.write(`results: ${path.relative(repoRoot, file)}\n`);
} finally {
  if (!headlineReleased) {
    pool.destroy();
    reservation.release();
  }
}

interface ConfigResult {
  size: number;
  pageSize: number;
  /** The size asked for, when fewer 1 GiB pages could be had and a smaller pool was measured instead. */
  requestedSize?: number;
  /** Whether the bench process kept the pool mapped (through the addon) meanwhile, as a running VMM does for its successor. */
  whileMapped?: boolean;
  runs?: number;
  ms?: { c_mmap_populate: Stats; addon_one_extent: Stats };
  pairedRatio?: Stats;
  skipped?: string;
}

/**
 * The headline comparison (C floor against the addon, one extent, warm JS) at another size and page size.
 * `whileMapped`: this process keeps the pool mapped meanwhile, as the running VMM keeps guest RAM mapped while its
 * successor maps it; the addon places mappings so that Linux can then share their page tables (see Pool.map).
 * `fewerPagesOk`: if the kernel cannot give all the pages (1 GiB pages fragment away), measure the largest pool it can.
 */
function measureConfig(
  requestedSize: number,
  configPageSize: number,
  options: { whileMapped?: boolean; fewerPagesOk?: boolean } = {},
): ConfigResult {
  const configRuns = Math.min(runs, 15); // fewer than the headline: each 16 GiB round is long
  let configReservation;
  let configSize = requestedSize;
  for (;;) {
    try {
      configReservation = reserveBenchPages(configPageSize, configSize / configPageSize);
      break;
    } catch (error) {
      if (!options.fewerPagesOk || configSize / configPageSize <= 2) {
        return {
          size: requestedSize,
          pageSize: configPageSize,
          skipped: `${requestedSize / configPageSize} pages of ${formatSize(configPageSize)} not available: ${(error as Error).message}`,
        };
      }
      configSize -= configPageSize;
    }
  }
  const configPool = Pool.create({
    backend: 'hugetlbfs',
    path: path.join(configReservation.mountpoint!, 'bench-map'),
    size: configSize,
    pageSize: configPageSize,
  });
  // As a running VMM maps guest RAM (Vmm uses sharePageTables), when the successor maps it meanwhile.
  const owner = configPool.mapAll({ populate: true, sharePageTables: options.whileMapped === true });
  if (!options.whileMapped) owner.unmap();
  try {
    const child = path.join(repoRoot, 'dist', 'bench', 'map-child.js');
    const c: number[] = [];
    const addon: number[] = [];
    for (let run = 0; run < configRuns; run++) {
      c.push(runJson<{ ms: number }>(baseline, [configPool.path!, String(configSize), String(sweepBytes)], childEnv).ms);
      const mode = options.whileMapped ? 'one-shared' : 'one';
      addon.push(
        runJson<{ ms: number }>(
          process.execPath,
          ['--expose-gc', child, configPool.path!, mode, String(configSize), String(sweepBytes)],
          childEnv,
        ).ms,
      );
    }
    return {
      size: configSize,
      pageSize: configPageSize,
      ...(configSize !== requestedSize ? { requestedSize } : {}),
      ...(options.whileMapped ? { whileMapped: true } : {}),
      runs: configRuns,
      ms: { c_mmap_populate: stats(c), addon_one_extent: stats(addon) },
      pairedRatio: stats(addon.map((value, index) => value / c[index]!)),
    };
  } finally {
    if (owner.mapped) owner.unmap();
    configPool.destroy();
    configReservation.release();
  }
}
