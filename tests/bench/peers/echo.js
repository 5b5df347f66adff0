// The seeds' Node echo server: net.createServer on a Unix socket path.
const net = require('net');
const fs = require('fs');
const path = process.argv[2];
if (fs.existsSync(path)) fs.unlinkSync(path);
net.createServer((c) => {
  c.on('data', (d) => c.write(d));
  c.on('end', () => c.end());
  c.on('error', () => {});
}).listen(path);
