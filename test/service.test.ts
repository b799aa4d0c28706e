// The mount service: one pool served to many processes over HTTP/JSON on a UNIX socket, with kernel credentials,
// descriptors passed as SCM_RIGHTS, a published OpenAPI schema, Prometheus metrics, and input that cannot hurt it.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import Ajv from 'ajv';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { check, KiB, MiB, mkfs, Pool } from '../lib/index';
import { OPERATIONS } from '../lib/service/api';
import { connect, type ServiceClient } from '../lib/service/client';
import { openApiDocument } from '../lib/service/openapi';
import { captureRejection, repoRoot, runAsync, signalled, skipReason, uniquePath } from './helpers';
import { CLI, foreignEnv, Lines, runClient, runtimeDirectory, type RunningService, startService } from './service-helpers';

const B = 64 * KiB;
const NOBODY = 65534;
let poolPath: string;
let runtime: string;
let service: RunningService | undefined;
const clients: ServiceClient[] = [];

beforeEach(() => {
  poolPath = uniquePath('/dev/shm', 'guestmemfs-service');
  const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 8 * MiB });
  mkfs(pool, { blockSize: B, maxSize: 12 * MiB });
  pool.close();
  runtime = runtimeDirectory();
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  if (service && service.child.exitCode === null && service.child.signalCode === null) {
    service.child.kill('SIGKILL');
    await service.exited;
  }
  service = undefined;
  fs.rmSync(poolPath, { force: true });
  fs.rmSync(runtime, { recursive: true, force: true });
});

async function served(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RunningService> {
  service = await startService(poolPath, runtime, args, env);
  return service;
}

async function client(socket: string): Promise<ServiceClient> {
  const connected = await connect(socket);
  clients.push(connected);
  return connected;
}

function cli(...args: string[]) {
  return runAsync(process.execPath, [CLI, ...args], { env: { ...process.env, GUESTMEMFS_RUNTIME_DIR: runtime } });
}

function curl(socket: string, ...args: string[]) {
  return runAsync('curl', ['-s', '--unix-socket', socket, ...args], { env: foreignEnv() });
}

/**
 * Writes raw bytes on a fresh connection and resolves with whatever comes back before the service closes it (a reset
 * included: the service drops a connection whose request it refuses before reading all of it).
 */
function rawExchange(socket: string, bytes: string | Buffer, endAfterWrite = false): Promise<string> {
  return new Promise((resolve) => {
    const connection = net.createConnection(socket);
    let answer = '';
    connection.on('data', (chunk) => (answer += chunk.toString()));
    connection.on('close', () => resolve(answer));
    connection.on('error', () => undefined);
    connection.write(bytes, () => {
      if (endAfterWrite) connection.end();
    });
  });
}

describe('guestmemfs mount', () => {
  it('serves a pool: curl, the library client and the CLI all change it; SIGTERM unmounts it cleanly', async () => {
    const running = await served();
    expect(fs.statSync(running.socket).mode & 0o777).toBe(0o660);
    const info = JSON.parse((await curl(running.socket, 'http://localhost/v1/info')).stdout) as { pid: number; pool: string };
    expect(info).toMatchObject({ pid: running.child.pid, pool: poolPath });
    const created = await curl(running.socket, '-X', 'POST', '-d', '{"path":"/vm0","type":"guest"}', 'http://localhost/v1/create');
    expect(JSON.parse(created.stdout)).toMatchObject({ type: 'file', fileType: 'guest', uid: 0 });
    const gfs = await client(running.socket);
    await gfs.truncate('/vm0', 3 * B);
    expect(await gfs.stat('/vm0')).toMatchObject({ size: 3 * B, blocks: 3 });
    // The CLI finds the service through the runtime directory and works through it: the pool is not free to mount.
    expect((await cli('mkdir', poolPath, '/vms')).status).toBe(0);
    expect((await cli('touch', '--type', 'state', poolPath, '/vms/state')).status).toBe(0);
    expect((await cli('ls', poolPath, '/')).stdout.split('\n').filter(Boolean)).toEqual(['vm0', 'vms']);
    expect(await gfs.readdir('/vms')).toEqual(['state']);
    const status = await cli('status', poolPath);
    expect(status.stdout).toContain(`served on:  ${running.socket}`);
    // The handover freeze through the service: serialise, changes refused with EBUSY for every client, abort.
    expect((await cli('serialise', poolPath, '--handover-version', '1')).stdout).toMatch(
      /serialised at generation \d+ \(handover version 1,/,
    );
    // A version this release does not write is bad input (400), and the same version again is the same handover;
    // another one waits for an abort.
    await expect(gfs.serialise({ handoverVersion: 3 as 1 })).rejects.toMatchObject({
      code: 'EINVAL',
      message: expect.stringContaining('handoverVersion must be one of 1, 2, got 3'),
    });
    expect(await gfs.serialise({ handoverVersion: 1 })).toMatchObject({ handoverVersion: 1 });
    await expect(gfs.serialise({ handoverVersion: 2 })).rejects.toMatchObject({ code: 'EBUSY' });
    expect((await cli('touch', poolPath, '/frozen')).stderr).toContain('EBUSY');
    await expect(gfs.create('/frozen')).rejects.toMatchObject({ code: 'EBUSY' });
    expect((await cli('abort', poolPath)).stderr).toMatch(/handover of generation \d+ aborted/);
    await gfs.create('/thawed');
    await gfs.unlink('/thawed');
    // Errors keep Node's shape.
    const missing = await captureRejection(gfs.stat('/nope'));
    expect(missing).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'stat', path: '/nope' });
    running.child.kill('SIGTERM');
    expect(await running.exited).toEqual({ code: 0, signal: null });
    expect(running.stdout.lines.at(-1)).toContain('SIGTERM: unmounted');
    expect(fs.existsSync(running.socket)).toBe(false);
    const pool = Pool.open(poolPath);
    try {
      expect(check(pool).state).toBe('consistent');
    } finally {
      pool.close();
    }
    // Unserved again, the CLI mounts the pool itself and sees what the clients did.
    expect((await cli('ls', poolPath, '/vms')).stdout.trim()).toBe('state');
  });

  it('answers every operation as its published OpenAPI schema says, and the committed schema is current', async () => {
    const running = await served();
    const document = openApiDocument();
    const served_ = JSON.parse((await curl(running.socket, 'http://localhost/v1/openapi.json')).stdout) as unknown;
    expect(served_).toEqual(document);
    const committed = JSON.parse(fs.readFileSync(path.join(repoRoot, 'docs', 'openapi.json'), 'utf8')) as unknown;
    expect(committed, 'docs/openapi.json is stale: run `npm run openapi`').toEqual(document);
    const ajv = new Ajv({ strict: false });
    const schemaOf = (name: string) => {
      const entry = (document.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)[`/v1/${name}`]!;
      const operation = Object.values(entry)[0]!;
      return (operation.responses['200'] as { content: { 'application/json': { schema: object } } }).content['application/json'].schema;
    };
    const errorSchema = (document.components as { schemas: { Error: object } }).schemas.Error;
    const gfs = await client(running.socket);
    // One call of every operation, successful; then one failing call each, whose body must be an Error.
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['info', () => gfs.request('GET', 'info')],
      ['mkdir', () => gfs.request('POST', 'mkdir', { path: '/d', mode: 0o1777 })],
      ['create', () => gfs.request('POST', 'create', { path: '/d/f', type: 'state' })],
      ['write', () => gfs.request('POST', 'write', { path: '/d/f', data: Buffer.from('hello').toString('base64') })],
      ['read', () => gfs.request('GET', 'read', { path: '/d/f' })],
      ['truncate', () => gfs.request('POST', 'truncate', { path: '/d/f', size: 2 * B })],
      ['punch', () => gfs.request('POST', 'punch', { path: '/d/f', offset: B, length: B })],
      ['stat', () => gfs.request('GET', 'stat', { path: '/d/f' })],
      ['readdir', () => gfs.request('GET', 'readdir', { path: '/d' })],
      ['extents', () => gfs.request('GET', 'extents', { path: '/d/f' })],
      ['mappable', () => gfs.request('GET', 'mappable', { path: '/d/f' })],
      ['pins', () => gfs.request('GET', 'pins', { path: '/d/f' })],
      ['lookup', () => gfs.request('GET', 'lookup', { path: '/d/f' })],
      ['pinned-orphans', () => gfs.request('GET', 'pinned-orphans')],
      ['audit', () => gfs.request('GET', 'audit')],
      ['chmod', () => gfs.request('POST', 'chmod', { path: '/d/f', mode: 0o640 })],
      ['chown', () => gfs.request('POST', 'chown', { path: '/d/f', uid: 7, gid: 8 })],
      ['utimes', () => gfs.request('POST', 'utimes', { path: '/d/f', atimeNs: '1', mtimeNs: '2' })],
      ['quota', () => gfs.request('POST', 'quota', { dir: '/d', limitBytes: 4 * B })],
      ['quotas', () => gfs.request('GET', 'quotas')],
      ['statfs', () => gfs.request('GET', 'statfs')],
      ['rename', () => gfs.request('POST', 'rename', { from: '/d/f', to: '/d/g' })],
      ['unlink', () => gfs.request('POST', 'unlink', { path: '/d/g' })],
      ['rmdir', () => gfs.request('POST', 'rmdir', { path: '/d' })],
      ['reclaim', () => gfs.request('POST', 'reclaim')],
      ['resize', () => gfs.request('POST', 'resize', { size: 10 * MiB })],
      [
        'badblock',
        async () =>
          gfs.request('POST', 'badblock', { block: (await gfs.request<{ totalBlocks: number }>('GET', 'statfs')).totalBlocks - 1 }),
      ],
      ['serialise', () => gfs.request('POST', 'serialise')],
      ['abort', () => gfs.request('POST', 'abort')],
    ];
    expect(new Set(calls.map(([name]) => name))).toEqual(new Set(OPERATIONS.map((operation) => operation.name)));
    for (const [name, call] of calls) {
      const result = await call();
      expect(ajv.validate(schemaOf(name), result), `${name}: ${ajv.errorsText()} in ${JSON.stringify(result)}`).toBe(true);
    }
    for (const operation of OPERATIONS) {
      const failure = await curl(
        running.socket,
        ...(operation.method === 'POST' ? ['-X', 'POST', '-d', '{"bogus":1}'] : []),
        `http://localhost/v1/${operation.name}${operation.method === 'GET' ? '?bogus=1' : ''}`,
      );
      const body = JSON.parse(failure.stdout) as unknown;
      expect(ajv.validate(errorSchema, body), `${operation.name}: ${ajv.errorsText()}`).toBe(true);
      expect(body).toMatchObject({ code: 'EINVAL', errno: -22 });
    }
  });

  it('takes credentials from the kernel: another uid is refused where Linux refuses, and cannot pass itself off as root', async () => {
    const running = await served(['--mode', '666']);
    const root = await client(running.socket);
    await root.mkdir('/shared', { mode: 0o1777 });
    await root.create('/shared/roots', { type: 'state' });
    await root.create('/private', { type: 'state', mode: 0o600 });
    const steps = [
      ['create', '/mine'], // the root directory is 0755 root's
      ['unlink', '/private'],
      ['read', '/private'],
      ['create', '/shared/nobodys', { type: 'state' }],
      ['unlink', '/shared/roots'], // sticky: not nobody's entry, not nobody's directory
      ['chown', '/shared/nobodys', 0, -1], // give a file away: root only
      ['chown', '/shared/nobodys', -1, 0], // a group nobody is not in
      ['chmod', '/private', 0o666],
      ['request', 'POST', 'create', { path: '/shared/forged', uid: 0 }], // credentials are never a parameter
      ['setQuota', { uid: NOBODY }, B], // limits are root's to set
      ['serialise'], // so is the handover
    ];
    const results = await runClient(running.socket, steps, { uid: NOBODY, gid: NOBODY }).results(steps.length);
    expect(results.map((result) => (result.ok ? 'ok' : result.code))).toEqual([
      'EACCES',
      'EACCES',
      'EACCES',
      'ok',
      'EPERM',
      'EPERM',
      'EPERM',
      'EPERM',
      'EINVAL',
      'EPERM',
      'EPERM',
    ]);
    expect(results[3]!.result).toMatchObject({ uid: NOBODY, gid: NOBODY });
    expect(results[0]).toMatchObject({ errno: -13, syscall: 'open', path: '/mine' });
    expect(await root.exists('/shared/forged')).toBe(false);
    expect((await root.stat('/shared/roots')).uid).toBe(0);
    // The socket's mode decides who may connect at all.
    fs.chmodSync(running.socket, 0o660);
    const [refused] = await runClient(running.socket, [['info']], { uid: NOBODY, gid: NOBODY }).results(1);
    expect(refused).toMatchObject({ ok: false, code: 'EACCES', syscall: 'connect' });
  });

  it('passes the pool descriptor: a client maps a file itself, pinned, and rm leaves its blocks alone until it exits', async () => {
    const running = await served();
    const root = await client(running.socket);
    await root.create('/ram', { type: 'guest' });
    await root.truncate('/ram', 4 * B);
    const holder = runClient(running.socket, [['map', '/ram', 0x5a]]);
    const [mapped] = await holder.results(1);
    await holder.lines.next((line) => line.includes('"held"'));
    expect(mapped).toMatchObject({ ok: true, extents: await root.extents('/ram') });
    expect(await root.pins('/ram')).toEqual([expect.objectContaining({ pids: [mapped!.pid] })]);
    const free = (await root.statfs()).freeBlocks;
    await root.unlink('/ram');
    expect((await root.statfs()).freeBlocks).toBe(free); // the name went; the pinned blocks stay
    await root.create('/other', { type: 'guest' });
    await expect(root.truncate('/other', (free + 1) * B)).rejects.toMatchObject({ code: 'ENOSPC' });
    holder.child.stdin.write('done\n');
    expect(await holder.exited).toBe(0);
    expect(await root.reclaim()).toBe(1);
    expect((await root.statfs()).freeBlocks).toBe(free + 4);
  });

  it('bad input changes nothing and the service stays up: garbage, oversized and cut-off requests, floods', async () => {
    const running = await served();
    const gfs = await client(running.socket);
    await gfs.create('/keep', { type: 'state' });
    const before = await gfs.readdirEntries('/');
    expect(await rawExchange(running.socket, Buffer.from([0, 1, 2, 0xff, 0x0d, 0x0a, 0x0d, 0x0a]))).toMatch(/^HTTP\/1\.1 400/);
    const cutOff = await rawExchange(running.socket, 'POST /v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"pa', true);
    expect(cutOff).not.toMatch(/HTTP\/1\.1 200/);
    // Refused on its declared length, before the body is read: the answer comes while the client has sent only the
    // head (a client still writing when the service closes would race the reset against the answer).
    const oversized = await rawExchange(
      running.socket,
      `POST /v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${2 * MiB}\r\n\r\n`,
    );
    expect(oversized).toMatch(/^HTTP\/1\.1 413/);
    expect(oversized).toContain('"code":"EMSGSIZE"');
    for (const body of ['not json', '[1,2]', '{"path":5}', '{"path":"/x","type":"weird"}', `{"path":"/${'n'.repeat(5000)}"}`]) {
      const answer = await curl(running.socket, '-X', 'POST', '-d', body, 'http://localhost/v1/create');
      expect(JSON.parse(answer.stdout), body).toMatchObject({ code: 'EINVAL' });
    }
    expect(JSON.parse((await curl(running.socket, 'http://localhost/v2/create')).stdout)).toMatchObject({ code: 'ENOENT' });
    expect(JSON.parse((await curl(running.socket, 'http://localhost/v1/create')).stdout)).toMatchObject({ code: 'EINVAL' });
    // A flood of pipelined requests on one connection is answered in order.
    const pipelined = await rawExchange(
      running.socket,
      `${'GET /v1/statfs HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(200)}GET /v1/statfs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    // A flood of connections beyond the limit: the excess are closed at accept; the service serves on. All are held
    // open until the service has closed one: a client's connect completes in the kernel's backlog, before the service
    // accepts, so closing at once would let the service accept each after its predecessors had gone.
    const flood: net.Socket[] = [];
    const firstClosedByService = new Promise<void>((resolve) => {
      for (let i = 0; i < 300; i++) {
        const connection = net.createConnection(running.socket);
        connection.on('error', () => {});
        connection.on('close', (hadError) => {
          if (!hadError) resolve();
        });
        flood.push(connection);
      }
    });
    await firstClosedByService;
    for (const connection of flood) connection.destroy();
    const metrics = (await curl(running.socket, 'http://localhost/metrics')).stdout;
    expect(metrics).toMatch(/guestmemfs_requests_refused_total\{reason="max-connections"\} [1-9]/);
    expect(pipelined.split('HTTP/1.1 200').length - 1).toBe(201);
    expect(await gfs.readdirEntries('/')).toEqual(before);
    expect(running.child.exitCode).toBe(null);
  });

  it('publishes Prometheus metrics: blocks, pins, quota use, operation counts and latency', async () => {
    const running = await served();
    const gfs = await client(running.socket);
    await gfs.create('/f', { type: 'guest' });
    await gfs.truncate('/f', 2 * B);
    await gfs.setQuota({ uid: 0 }, 10 * B);
    await captureRejection(gfs.stat('/missing'));
    const text = (await curl(running.socket, 'http://localhost/metrics')).stdout;
    expect(text).toContain('# TYPE guestmemfs_operations_total counter');
    expect(text).toContain('guestmemfs_operations_total{operation="truncate",result="ok"} 1');
    expect(text).toContain('guestmemfs_operations_total{operation="stat",result="ENOENT"} 1');
    expect(text).toMatch(/guestmemfs_operation_duration_seconds_count\{operation="create"\} 1/);
    expect(text).toContain('guestmemfs_blocks{state="used"} 2');
    expect(text).toContain('guestmemfs_blocks{state="quarantined"} 0');
    expect(text).toContain(`guestmemfs_pool_bytes{kind="size"} ${8 * MiB}`);
    expect(text).toContain(`guestmemfs_pool_bytes{kind="max_size"} ${12 * MiB}`);
    expect(text).toContain(`guestmemfs_quota_limit_bytes{kind="uid",id="0"} ${10 * B}`);
    expect(text).toContain(`guestmemfs_quota_used_bytes{kind="uid",id="0"} ${2 * B}`);
    expect(text).toMatch(/guestmemfs_pins \d+/);
    expect(text).toMatch(/guestmemfs_connections [1-9]/);
  });

  it('updates itself live: serialise, execve keeping its socket, restore; clients see no error, mappings and pins stay', async () => {
    const running = await served();
    const gfs = await client(running.socket);
    await gfs.create('/ram', { type: 'guest' });
    await gfs.truncate('/ram', 2 * B);
    const holder = runClient(running.socket, [['map', '/ram', 0x77]]);
    const [mapped] = await holder.results(1);
    // A client keeps asking throughout: every request must be answered, by the old service or the new one.
    let answered = 0;
    let stop = false;
    const asking = (async () => {
      while (!stop) {
        await gfs.stat('/ram');
        answered++;
      }
    })();
    await signalled(() => answered > 10);
    running.child.kill('SIGHUP');
    const updated = await running.stdout.next((line) => line.includes('live-updated'));
    const before = answered;
    await signalled(() => answered > before + 10);
    stop = true;
    await asking;
    expect(updated).toContain(`(pid ${running.child.pid})`); // the same process, a new program
    const pause = Number(/paused ([\d.]+) ms/.exec(updated)![1]);
    expect(pause).toBeGreaterThan(0);
    expect(await gfs.pins('/ram')).toEqual([expect.objectContaining({ pids: [mapped!.pid] })]);
    expect((await gfs.info()).serialised).toBe(false);
    // A second update, asked for over the API (root only), and the metrics count both.
    const asked = await curl(running.socket, '-X', 'POST', 'http://localhost/v1/update');
    expect(JSON.parse(asked.stdout)).toMatchObject({ updating: true, pid: running.child.pid });
    await running.stdout.next((line) => line.includes('live-updated') && line !== updated);
    const metrics = (await curl(running.socket, 'http://localhost/metrics')).stdout;
    expect(metrics).toContain('guestmemfs_handovers_total 2');
    expect(metrics).toMatch(/guestmemfs_handover_pause_seconds 0\.\d+/);
    holder.child.stdin.write('done\n');
    expect(await holder.exited).toBe(0);
    process.stdout.write(`[service] live update: metadata paused ${pause} ms; ${answered} requests answered, none failed\n`);
  });

  const python = spawnSync('python3', ['-c', 'import socket'], { encoding: 'utf8', env: foreignEnv() });
  it.skipIf(skipReason(python.status === 0 ? '' : 'python3 is needed to stand in for systemd and receive sd_notify'))(
    'tells systemd READY=1 once it serves and STOPPING=1 on SIGTERM (Type=notify)',
    async () => {
      const notify = path.join(runtime, 'notify.sock');
      const receiver = spawn(
        'python3',
        [
          '-u',
          '-c',
          'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\n' +
            'while True:\n  m=s.recv(4096).decode()\n  print(m.replace("\\n"," "),flush=True)\n  if "STOPPING" in m: break',
          notify,
        ],
        { env: foreignEnv() },
      );
      const messages = new Lines(receiver.stdout);
      await messages.next((line) => line === 'bound');
      const running = await served([], { NOTIFY_SOCKET: notify });
      expect(await messages.next((line) => line.includes('READY=1'))).toContain(`MAINPID=${running.child.pid}`);
      running.child.kill('SIGTERM');
      await messages.next((line) => line.includes('STOPPING=1'));
      expect((await running.exited).code).toBe(0);
      receiver.kill();
    },
  );

  it('ships a systemd unit that runs it as Type=notify and stops it with SIGTERM', () => {
    const unit = fs.readFileSync(path.join(repoRoot, 'contrib', 'guestmemfs-mount@.service'), 'utf8');
    expect(unit).toMatch(/^Type=notify$/m);
    expect(unit).toMatch(/^ExecStart=.*guestmemfs mount /m);
    expect(unit).toMatch(/^KillSignal=SIGTERM$/m);
    expect(unit).toMatch(/^NotifyAccess=main$/m);
  });
});
