// `node --import rust-cluster/register app.mjs`: as register.js, with imports hooked on Node 20 too.
import register from './lib/register.js';

register.install('import');
