// ESM entry: the default export is the CommonJS cluster object itself, so `import` and `require`
// share one instance. Named exports are read once at load time, like node:cluster's own ESM
// exports; values that setupPrimary() or assignment replace later (settings, schedulingPolicy)
// are current only on the default export. In a worker process index.js exports Node's worker-side
// cluster, which lacks the primary-only functions, so those names are then undefined.
import cluster from './index.js';

export default cluster;
export const {
  isMaster,
  isPrimary,
  isWorker,
  settings,
  workers,
  worker,
  schedulingPolicy,
  SCHED_NONE,
  SCHED_RR,
  SCHED_REUSEPORT,
  fork,
  disconnect,
  setupPrimary,
  setupMaster,
  Worker,
  implementation,
} = cluster;
