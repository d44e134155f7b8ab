// `rust-cluster/register` is imported for its effect (a preload) and exports nothing.
export {};
