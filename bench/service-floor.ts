// Child of bench:service: the transport's floor, a bare Node HTTP server on a UNIX socket that answers GET /v1/info
// with a constant, as cheaply as Node serves anything: the most any Node service could do through this protocol.
import * as http from 'node:http';

const socket = process.argv[2]!;
const body = JSON.stringify({ apiVersion: 1, uuid: 'floor', pool: 'floor', pid: process.pid, serialised: false, geometry: {} });
const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  response.end(body);
});
server.listen(socket, () => process.stdout.write('serving\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
