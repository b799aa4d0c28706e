// The package as a user gets it: `npm pack`, installed into a scratch project, used from CommonJS and from ES modules,
// typed in both, with the internals behind the exports map.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, runAsync } from './helpers';

/** What both module systems run: a memfd pool, formatted, a guest file sized and listed. */
const USE = `
  const pool = Pool.create({ backend: 'memfd-4k', size: 8 * MiB });
  mkfs(pool);
  const fs = mount(pool);
  fs.create('/ram', { type: 'guest' });
  fs.truncate('/ram', 4 * MiB);
  const out = { files: fs.readdir('/'), size: fs.stat('/ram').size };
  fs.unmount();
  pool.close();
  console.log(JSON.stringify(out));`;

let project: string;

beforeAll(async () => {
  project = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-package-'));
  // dist/ is built by `npm test`'s pretest; packing must not rebuild it.
  const pack = await runAsync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', project], { cwd: repoRoot });
  if (pack.status !== 0) throw new Error(`npm pack failed: ${pack.stderr}`);
  const tarball = pack.stdout.trim().split('\n').at(-1)!;
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', private: true }));
  // The install script builds the addon from source, as it does for any user.
  const install = await runAsync(
    'npm',
    ['install', '--omit=optional', '--no-audit', '--no-fund', '--loglevel=error', path.join(project, tarball)],
    {
      cwd: project,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: '' },
    },
  );
  if (install.status !== 0) throw new Error(`npm install of the tarball failed: ${install.stderr}`);
}, 600_000);

afterAll(() => fs.rmSync(project, { recursive: true, force: true }));

function runIn(file: string, source: string): { status: number | null; stdout: string; stderr: string } {
  fs.writeFileSync(path.join(project, file), source);
  // The installed package builds its own Release addon: a sanitizer build chosen for this repository is not its.
  const { GUESTMEMFS_BUILD: _ignored, ...env } = process.env;
  return spawnSync(process.execPath, [file], { cwd: project, encoding: 'utf8', env });
}

describe('the packed tarball in a scratch project', () => {
  it('works from CommonJS', () => {
    const result = runIn('use.cjs', `const { Pool, mkfs, mount, MiB } = require('guestmemfs');\n${USE}`);
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual({ files: ['ram'], size: 4 * 1024 * 1024 });
  });

  it('works from ES modules, with the same single instance behind both', () => {
    const result = runIn(
      'use.mjs',
      `import { Pool, mkfs, mount, MiB } from 'guestmemfs';\nimport { createRequire } from 'node:module';\n` +
        `if (createRequire(import.meta.url)('guestmemfs').mount !== mount) throw new Error('two instances');\n${USE}`,
    );
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual({ files: ['ram'], size: 4 * 1024 * 1024 });
  });

  it('keeps the internals, the raw addon among them, behind the exports map', () => {
    const result = runIn('internal.cjs', `require('guestmemfs/dist/lib/native');`);
    expect(result.stderr).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED');
    expect(runIn('native.cjs', `console.log('native' in require('guestmemfs'));`).stdout.trim()).toBe('false');
  });

  it('types resolve for both module systems (the types condition first)', () => {
    fs.writeFileSync(
      path.join(project, 'typed.mts'),
      `import { mount, type Filesystem } from 'guestmemfs';\nexport const f: (p: never) => Filesystem = mount;\n`,
    );
    fs.writeFileSync(
      path.join(project, 'typed.cts'),
      `import { mkfs, type FormatInfo } from 'guestmemfs';\nexport const f: (p: never) => FormatInfo = mkfs;\n`,
    );
    const tsconfig = {
      compilerOptions: {
        module: 'node16',
        moduleResolution: 'node16',
        strict: true,
        noEmit: true,
        types: ['node'],
        typeRoots: [path.join(repoRoot, 'node_modules', '@types')],
      },
      files: ['typed.mts', 'typed.cts'],
    };
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify(tsconfig));
    const tsc = spawnSync(process.execPath, [path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], {
      encoding: 'utf8',
    });
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.status).toBe(0);
  });
});
