// The benchmark suite's smoke run (`npm run bench -- --quick`): every benchmark runs once at a small size, writes its
// results, and the report and charts are made from them, so the scripts cannot rot. Benchmarks never run here in full.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BENCHMARKS } from '../bench/common';
import { kvmUnavailableReason } from '../lib/vmm/machine';
import { qemuUnavailableReason } from '../lib/qemu/guest';
import { machine, repoRoot, runAsync } from './helpers';

const m = machine();
const quickDir = path.join(repoRoot, 'build', 'bench-quick');
const committed = path.join(repoRoot, 'bench', 'results');
/** What each benchmark needs beyond Node: the reason it may skip on this machine ('' when it can run). */
const needs: Record<(typeof BENCHMARKS)[number], string> = {
  map: m.skip2M,
  alloc: m.skip2M,
  access: m.skip2M,
  zero: m.skip2M,
  fs: m.skip2M,
  handover: '',
  resize: m.skip2M,
  // Its 1 GiB pages come on top of the test suite's own, which a machine may not have free.
  hybrid: m.skip2M || m.skip1G || 'needs 4 more 1 GiB pages than the test suite holds',
  vmm: m.skip2M || kvmUnavailableReason(),
  device: m.skip2M || kvmUnavailableReason(),
  pins: m.skip2M,
  qemu: m.skip2M || qemuUnavailableReason(),
  service: '',
};

const digest = (dir: string) =>
  Object.fromEntries(
    fs.readdirSync(dir).map((name) => [
      name,
      crypto
        .createHash('sha256')
        .update(fs.readFileSync(path.join(dir, name)))
        .digest('hex'),
    ]),
  );

describe('npm run bench -- --quick', () => {
  it('runs every benchmark once, writes its results and a report with charts, and leaves the committed results alone', async () => {
    const before = digest(committed);
    fs.rmSync(quickDir, { recursive: true, force: true });
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: '' };
    // The test suite's own hugetlbfs: the benchmarks take free pages from it instead of changing nr_hugepages while
    // other test files hold pages.
    if (m.hugetlbfs2M) env.GUESTMEMFS_BENCH_HUGETLBFS = m.hugetlbfs2M;
    const run = await runAsync('npm', ['run', 'bench', '--', '--quick'], { cwd: repoRoot, env, timeoutMs: 300_000 });
    expect(run.status, run.stderr).toBe(0);
    const summary = run.stdout.slice(run.stdout.indexOf('== summary'));
    for (const name of BENCHMARKS) {
      const line = summary.split('\n').find((text) => text.trim().startsWith(`${name} `));
      expect(line, `summary line for ${name}`).toBeDefined();
      if (needs[name]) {
        process.stdout.write(`[bench] ${name} may skip here: ${needs[name]}\n`);
        continue;
      }
      expect(line).toMatch(/\bran\b/);
      const results = JSON.parse(fs.readFileSync(path.join(quickDir, 'results', `${name}.json`), 'utf8'));
      expect(results).toMatchObject({
        benchmark: name,
        quick: true,
        machine: { kernel: expect.any(String), hugePageSizes: expect.any(Array) },
      });
      expect(JSON.stringify(results)).toMatch(/"samples":\[\d/); // every sample is kept, not just the median
    }
    const report = fs.readFileSync(path.join(quickDir, 'BENCHMARKS.md'), 'utf8');
    expect(report).toMatch(/quick smoke run/);
    expect(report).toMatch(/\| benchmark \| measure \| guestmemfs \| baseline \| ratio \| target \| met \|/);
    const charts = [...report.matchAll(/!\[[^\]]*\]\((bench\/charts\/[\w-]+\.svg)\)/g)].map((match) => match[1]!);
    if (!needs.vmm) expect(charts).toContain('bench/charts/blackout.svg');
    expect(charts).toContain('bench/charts/handover-size.svg');
    for (const chart of charts) {
      const svg = fs.readFileSync(path.join(quickDir, chart), 'utf8');
      expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
      expect(svg).toMatch(/<(polyline|rect) [^>]*(points|height)="[\d.]/);
      expect(svg).not.toMatch(/NaN|Infinity/);
    }
    expect(digest(committed)).toEqual(before);
  }, 320_000);
});
