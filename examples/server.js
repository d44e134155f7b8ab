// The worker half of examples/cluster.js, for the supervising command: it starts the workers,
// restarts them and reloads them, so the script is only the server.
//
//   npx rust-cluster examples/server.js          (PORT overrides 5000)
var cluster = require('rust-cluster');
var http = require('http');

var id = cluster.isWorker ? cluster.worker.id : 0;
console.log('[worker] ' + "worker" + id + " started, pid:" + process.pid);

process.on('message', function (msg) {
    console.log('[worker] worker' + id + ' received msg:' + msg);
    process.send('[worker] send msg ' + id + ' to master.');
});

http.createServer(function (req, res) {
    var response = 'worker received request, id:' + id + ',pid:' + process.pid;
    console.log(response);
    res.writeHead(200, { "content-type": "text/html" });
    res.end(response);
}).listen(Number(process.env.PORT) || 5000);
