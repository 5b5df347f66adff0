// Node's cluster module with N workers: the primary accepts and passes handles
// to workers (round-robin), the same design as udsd.  node cluster.js echo|http PATH N
const cluster = require('cluster');
const fs = require('fs');
const [kind, path, n] = process.argv.slice(2);
cluster.schedulingPolicy = cluster.SCHED_RR;
if (cluster.isPrimary) {
  if (fs.existsSync(path)) fs.unlinkSync(path);
  for (let i = 0; i < Number(n || 2); i++) cluster.fork();
} else if (kind === 'echo') {
  require('net').createServer((c) => {
    c.on('data', (d) => c.write(d));
    c.on('end', () => c.end());
    c.on('error', () => {});
  }).listen(path);
} else {
  require('http').createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ message: 'Hello from your HTTP server on a Unix socket!', url: req.url }));
  }).listen(path);
}
