// Types for `rust-cluster/ipc`: fork()'s message channel between unrelated processes.
import { EventEmitter } from 'events';
import type { Serializable, SendHandle, MessageOptions } from 'child_process';
import type { AddressInfo } from 'net';

export interface ChannelOptions {
  /** Wire format, as fork()'s `serialization`. Default 'json'. */
  serialization?: 'json' | 'advanced';
  /** Largest incoming message in bytes; a larger one is an 'error' and closes the channel. */
  maxMessageSize?: number;
}

export interface ServerOptions extends ChannelOptions {
  /** Permissions of the unix socket file. Default 0o600 (owner only). */
  mode?: number;
}

export declare class Channel extends EventEmitter {
  readonly connected: boolean;
  readonly remoteAddress: string | undefined;
  send(message: Serializable, callback?: (error: Error | null) => void): boolean;
  send(message: Serializable, sendHandle?: SendHandle, callback?: (error: Error | null) => void): boolean;
  send(message: Serializable, sendHandle?: SendHandle, options?: MessageOptions, callback?: (error: Error | null) => void): boolean;
  disconnect(): void;
  ref(): void;
  unref(): void;
  on(event: 'message', listener: (message: Serializable, sendHandle: SendHandle) => void): this;
  on(event: 'connect' | 'disconnect' | 'close', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare class Server extends EventEmitter {
  listen(path: string, callback?: () => void): this;
  listen(port: number, host?: string, callback?: () => void): this;
  listen(port: number, callback?: () => void): this;
  listen(options: { path: string } | { port: number; host?: string }, callback?: () => void): this;
  address(): AddressInfo | string | null;
  broadcast(message: Serializable, sendHandle?: SendHandle): void;
  close(callback?: (error?: Error) => void): this;
  ref(): this;
  unref(): this;
  on(event: 'connection', listener: (channel: Channel) => void): this;
  on(event: 'listening' | 'close', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare function createServer(connectionListener?: (channel: Channel) => void): Server;
export declare function createServer(options?: ServerOptions, connectionListener?: (channel: Channel) => void): Server;
export declare function connect(target: string | number | { path: string } | { port: number; host?: string }, connectListener?: () => void): Channel;
export declare function connect(target: string | number | { path: string } | { port: number; host?: string }, options?: ChannelOptions, connectListener?: () => void): Channel;
