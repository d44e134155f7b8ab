// What module.register() loads on its loader thread, on Node lines without registerHooks.
import register from './register.js';

export const { resolve } = register;
