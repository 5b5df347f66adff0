// The seeds' Node HTTP server on a Unix socket: the JSON greeting.
const http = require('http');
const fs = require('fs');
const path = process.argv[2];
if (fs.existsSync(path)) fs.unlinkSync(path);
http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ message: 'Hello from your HTTP server on a Unix socket!', url: req.url }));
}).listen(path);
