// The custom-pipe echo server, on rust-cluster/ipc: every message a client sends comes back to it.
// Run `node examples/pipe-server.js`, then `node examples/pipe-client.js` in another terminal.
// PIPE_PATH overrides the socket path (default /tmp/unix.sock).
const ipc = require('rust-cluster/ipc')

const pipeFile = process.env.PIPE_PATH || '/tmp/unix.sock'

const server = ipc.createServer(channel => {
  console.log('socket connected.')
  channel.on('disconnect', () => console.log('disconnected.'))
  channel.on('message', message => {
    console.log(`receive: ${message}`)
    channel.send(message)
    console.log(`send: ${message}`)
  })
  channel.on('error', err => console.error(err.message))
})
server.on('error', err => console.error(err.message))
// A socket file left behind by a dead server is replaced; no need to unlink it first.
server.listen(pipeFile)
