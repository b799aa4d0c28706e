// npm run bench — the whole suite: every benchmark in its own process (each measures guestmemfs and its baseline in the
// same run), then the charts and BENCHMARKS.md from the results files.
//
//   npm run bench [-- --quick] [-- --only NAME[,NAME]] [-- --report-only]
//
// --quick runs each benchmark once at a small size and writes its results and report under build/bench-quick/, so the
// committed results and BENCHMARKS.md stay as they are (the test suite runs this). A benchmark that cannot run
// here (exit 3: no huge pages, no /dev/kvm) is reported as skipped with its reason.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { BENCHMARKS, quickMode, quickOutputDir, repoRoot, resultsDir } from './common';
import { headlines, updateReadme, writeReport } from './report';

function selected(): string[] {
  const index = process.argv.indexOf('--only');
  if (index < 0) return [...BENCHMARKS];
  const names = (process.argv[index + 1] ?? '').split(',').filter(Boolean);
  const unknown = names.filter((name) => !(BENCHMARKS as readonly string[]).includes(name));
  if (unknown.length > 0 || names.length === 0) {
    process.stderr.write(`--only takes a comma-separated list of ${BENCHMARKS.join(', ')} (got "${process.argv[index + 1] ?? ''}")\n`);
    process.exit(2);
  }
  return names;
}

const outcomes: Array<{ name: string; status: 'ran' | 'skipped' | 'failed'; seconds: number; reason?: string }> = [];
if (!process.argv.includes('--report-only')) {
  for (const name of selected()) {
    process.stdout.write(`\n== bench:${name}${quickMode ? ' (quick)' : ''}\n`);
    const started = Date.now();
    const child = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'bench', `${name}.js`), ...(quickMode ? ['--quick'] : [])], {
      stdio: ['ignore', 'inherit', 'pipe'],
      encoding: 'utf8',
    });
    process.stderr.write(child.stderr);
    const seconds = (Date.now() - started) / 1000;
    // The error line, not Node's closing "Node.js vX" banner.
    const reason = child.stderr
      .trim()
      .split('\n')
      .filter((line) => line.trim() && !line.startsWith('Node.js v'))
      .at(-1);
    outcomes.push({
      name,
      seconds,
      status: child.status === 0 ? 'ran' : child.status === 3 ? 'skipped' : 'failed',
      ...(child.status === 0 ? {} : { reason }),
    });
  }
}

const sourceDir = quickMode ? path.join(quickOutputDir, 'results') : resultsDir;
const report = writeReport({ resultsDir: sourceDir, quick: quickMode, outDir: quickMode ? quickOutputDir : repoRoot });
if (!quickMode && updateReadme(path.join(repoRoot, 'README.md'), sourceDir)) process.stdout.write('README.md: benchmark table updated\n');
process.stdout.write('\n== summary\n');
for (const outcome of outcomes)
  process.stdout.write(
    `  ${outcome.name.padEnd(9)} ${outcome.status.padEnd(8)} ${outcome.seconds.toFixed(0).padStart(4)} ` +
      `s${outcome.reason ? `  (${outcome.reason})` : ''}\n`,
  );
for (const row of headlines(sourceDir)) {
  process.stdout.write(
    `  ${row.met === null ? '   ' : row.met ? 'met' : 'NOT'}  ${row.benchmark.padEnd(9)} ${row.measure}: ` +
      `${row.value} vs ${row.baseline} (${row.ratio}; target ${row.target})\n`,
  );
}
process.stdout.write(`report: ${path.relative(repoRoot, report)}\n`);
if (outcomes.some((outcome) => outcome.status === 'failed')) process.exitCode = 1;
