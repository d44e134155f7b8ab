// Types for `require('rust-cluster')`: Node's cluster object plus rust-cluster's additions.
// Built on @types/node's `cluster` declarations so code typed against Node's module compiles
// unchanged. The module is CommonJS (`module.exports = cluster`), hence `export =`; the merged
// namespace carries the types, and TypeScript resolves named imports (`import { fork }`) to
// properties of the exported object.
import type {
    Address as NodeAddress,
    Cluster as NodeCluster,
    ClusterSettings as NodeClusterSettings,
    Worker as NodeWorker,
} from 'cluster';

declare namespace cluster {
    type Address = NodeAddress;
    type ClusterSettings = NodeClusterSettings;

    interface Worker extends NodeWorker {
        /**
         * Old name of `exitedAfterDisconnect`.
         * Optional so that the `Worker` objects @types/node passes to cluster event listeners
         * still satisfy this type.
         * @deprecated Use `exitedAfterDisconnect`.
         */
        readonly suicide?: boolean;
    }

    interface Cluster extends NodeCluster {
        /**
         * rust-cluster addition (value 3): each worker listens on its own `SO_REUSEPORT` socket
         * and the kernel spreads incoming connections among them. Round-robin without the core.
         */
        readonly SCHED_REUSEPORT: number;
        /**
         * rust-cluster addition: which implementation runs in this process, `'rust'` (the native
         * core) or `'node'` (Node's own cluster and fork, where the platform has no core).
         */
        readonly implementation: 'rust' | 'node';
        readonly Worker: typeof NodeWorker;
        fork(env?: any): Worker;
        readonly worker?: Worker;
        readonly workers?: NodeJS.Dict<Worker>;
    }
}

declare const cluster: cluster.Cluster;
export = cluster;
