// The custom-pipe client, on rust-cluster/ipc: sends 'hello' every 3 s and logs the echo.
// PIPE_PATH overrides the socket path (default /tmp/unix.sock).
const ipc = require('rust-cluster/ipc')

const pipeFile = process.env.PIPE_PATH || '/tmp/unix.sock'

const client = ipc.connect(pipeFile)
client.on('connect', () => console.log('connected.'))
client.on('message', message => console.log(`receive: ${message}`))
client.on('disconnect', () => console.log('disconnected.'))
client.on('error', err => console.error(err.message))

setInterval(() => {
  const msg = 'hello'
  console.log(`send: ${msg}`)
  client.send(msg)
}, 3000)
