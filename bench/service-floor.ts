// Child of bench:service: the transport's floor, a bare Node HTTP server on a UNIX socket that reads each request
// (a POST's body included) and answers it with a constant, as cheaply as Node serves anything: the most any Node
// service could do through this protocol.
import * as http from 'node:http';

const socket = process.argv[2]!;
const body = JSON.stringify({ apiVersion: 1, uuid: 'floor', pool: 'floor', pid: process.pid, serialised: false, geometry: {} });
const server = http.createServer((request, response) => {
  const answer = () => {
    response.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    response.end(body);
  };
  if (request.method !== 'POST') return answer();
  request.on('data', () => undefined);
  request.once('end', answer);
});
server.listen(socket, () => process.stdout.write('serving\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
