import supervisor from './supervisor.js';

export default supervisor;
export const { supervise, Supervisor } = supervisor;
