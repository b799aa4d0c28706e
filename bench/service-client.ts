// Child of bench:service: one client process that, once told "go" on stdin, runs `count` operations of a kind against
// a socket through the library client, and prints each one's latency (µs) and its wall time as JSON. The floor kinds
// send the same requests as stat (a GET) or create+unlink (POSTs with a JSON body) to the floor server.
import { connect } from '../lib/service/client';

async function main(): Promise<void> {
  const [socket, kind, countText, index] = process.argv.slice(2) as [
    string,
    'stat' | 'create-unlink' | 'floor' | 'floor-post',
    string,
    string,
  ];
  const count = Number(countText);
  const client = await connect(socket);
  const own = `/bench-${index}`;
  const floor = kind === 'floor' || kind === 'floor-post';
  if (!floor) await client.create(`${own}-stat`, { type: 'state' });
  const once = async (op: number) => {
    if (kind === 'stat') await client.stat(`${own}-stat`);
    else if (kind === 'floor') await client.info();
    // What a create or an unlink sends, to a floor server that answers anything with a constant.
    else if (kind === 'floor-post') await client.request('POST', op % 2 === 0 ? 'create' : 'unlink', { path: own, type: 'state' });
    else if (op % 2 === 0) await client.create(own, { type: 'state' });
    else await client.unlink(own);
  };
  for (let op = 0; op < 200; op++) await once(op); // warm the code and the connection
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const latencies = new Float64Array(count);
  const started = process.hrtime.bigint();
  for (let op = 0; op < count; op++) {
    const at = process.hrtime.bigint();
    await once(op);
    latencies[op] = Number(process.hrtime.bigint() - at) / 1e3;
  }
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (!floor) await client.unlink(`${own}-stat`);
  client.close();
  process.stdout.write(`${JSON.stringify({ wallMs, latenciesUs: [...latencies] })}\n`);
}

void main();
