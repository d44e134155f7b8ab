import ipc from './ipc.js';

export default ipc;
export const { createServer, connect, Server, Channel } = ipc;
