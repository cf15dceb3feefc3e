// Types of warren-broker: Warren, an AMQP 0-9-1 broker that stands in for RabbitMQ in tests.

/** Options of `start`; they mirror the `warren` command line. */
export interface StartOptions {
  /** Keep durable state here; it survives `restart()` and `crash()`. */
  dataDir?: string;
  /** Virtual hosts besides "/". */
  vhosts?: string | string[];
  /** The default user (guest/guest). */
  user?: string;
  password?: string;
  /** More users (--user-add): "name:password[:tags]" or an object; no permissions unless extraArgs give some. */
  users?: Array<string | { name: string; password: string; tags?: string[] }>;
  /** Heartbeat proposed to clients, in seconds (0 disables). */
  heartbeat?: number;
  /** TTLs, queue expiry and consumer timeouts follow `advance()` instead of real time. */
  virtualClock?: boolean;
  /** Milliseconds a delivery may stay unacked before its channel is closed (0: never). */
  consumerTimeout?: number;
  /** Bytes of messages above which publishers are blocked. */
  memoryHighWatermark?: number;
  /** Which RabbitMQ's behaviour to copy, "3.10" by default. */
  rabbitmqVersion?: string;
  /** Listening address; "127.0.0.1" by default. */
  host?: string;
  /** AMQP port; 0 (a free port) by default. */
  port?: number;
  /** Management (HTTP) port; 0 (a free port) by default. */
  managementPort?: number;
  /** The `warren` executable; otherwise $WARREN_BIN, the platform package, or PATH. */
  binary?: string;
  /** Milliseconds to wait for the two URL lines (30 000 by default). */
  startTimeout?: number;
  /** More command-line arguments, passed as they are. */
  extraArgs?: string[];
}

export interface Properties {
  content_type?: string;
  content_encoding?: string;
  headers?: Record<string, unknown>;
  delivery_mode?: number;
  priority?: number;
  correlation_id?: string;
  reply_to?: string;
  expiration?: string;
  message_id?: string;
  timestamp?: number;
  type?: string;
  user_id?: string;
  app_id?: string;
}

export class Message {
  readonly raw: Record<string, unknown>;
  readonly body: Buffer;
  readonly text: string;
  readonly properties: Properties;
  readonly exchange: string;
  readonly routingKey: string;
  readonly redelivered: boolean;
}

export class Queue {
  readonly raw: Record<string, any>;
  readonly name: string;
  readonly vhost: string;
  readonly durable: boolean;
  /** Ready and unacked together, as RabbitMQ counts `messages`. */
  readonly messages: number;
  /** Ready messages. */
  readonly depth: number;
  readonly unacked: number;
  readonly consumers: number;
  readonly readyMessages: Message[];
  readonly unackedMessages: Message[];
  /** The ready messages' bodies, in queue order, as UTF-8 strings. */
  readonly bodies: string[];
}

/** A fault rule for `Broker.inject`, built as Rust's `Fault`. */
export class Fault {
  static onPublishTo(exchange: string): Fault;
  static onPublishRoutedTo(queue: string): Fault;
  static onAnyPublish(): Fault;
  static onAck(): Fault;
  onChannel(channel: number): Fault;
  onConnection(connection: number): Fault;
  /** Fire on the nth event in scope only (1 is the first). */
  nth(n: number): Fault;
  /** Fire on the next n events in scope. */
  times(n: number): Fault;
  closeChannel(code?: number, text?: string): Fault;
  closeConnection(code?: number, text?: string): Fault;
  nackConfirm(): Fault;
  withholdConfirm(): Fault;
  toJSON(): Record<string, unknown>;
}

export interface WaitForOptions {
  vhost?: string;
  timeoutMs?: number;
  /** Ready plus unacked messages. */
  messages?: number;
  empty?: boolean;
  noUnacked?: boolean;
  consumers?: number;
}

export class Broker {
  /** The AMQP URL, amqp://USER:PASSWORD@HOST:PORT/%2f. */
  readonly url: string;
  /** The control plane's base URL, http://HOST:PORT. */
  readonly managementUrl: string;
  readonly user: string;
  readonly password: string;
  readonly args: string[];
  readonly pid: number;
  readonly running: boolean;
  /** The broker's last stderr lines. */
  log(): string;
  /** SIGTERM, then SIGKILL after timeoutMs; resolves with the exit status or signal. */
  stop(options?: { timeoutMs?: number }): Promise<number | string | null>;

  snapshot(options?: { vhost?: string }): Promise<any>;
  queues(options?: { vhost?: string }): Promise<Queue[]>;
  queue(name: string, options?: { vhost?: string }): Promise<Queue | null>;
  connections(options?: { vhost?: string }): Promise<any[]>;

  waitUntilIdle(options?: { timeoutMs?: number }): Promise<void>;
  waitFor(queue: string, options?: WaitForOptions): Promise<Queue>;

  /** Resolves with the rule's id. */
  inject(fault: Fault): Promise<number>;
  faults(): Promise<any[]>;
  removeFault(id: number): Promise<void>;
  clearFaults(): Promise<void>;
  closeConnection(id: number, options?: { code?: number; text?: string }): Promise<void>;
  closeChannel(id: number, channel: number, options?: { code?: number; text?: string }): Promise<void>;
  dropConnection(id: number): Promise<void>;
  cutConnection(id: number): Promise<void>;
  cancelConsumer(queue: string, consumerTag: string, options?: { vhost?: string }): Promise<void>;
  memoryAlarm(on?: boolean): Promise<void>;

  clock(): Promise<{ virtual: boolean; now_ms: number }>;
  /** Moves the virtual clock by ms. */
  advance(ms: number): Promise<{ virtual: boolean; now_ms: number }>;
  restart(): Promise<void>;
  crash(): Promise<void>;
  stallStorage(on?: boolean): Promise<void>;

  seed(queue: string, body: string | Uint8Array, options?: { vhost?: string; properties?: Properties }): Promise<void>;
  trace(on?: boolean): Promise<void>;
  traceEntries(options?: { connection?: number }): Promise<any[]>;
  traceText(): Promise<string>;
  /** Writes one self-contained HTML file (sequence diagram and state); resolves to the path. */
  traceHtml(path: string): Promise<string>;
  /** The trace as a Mermaid sequence diagram. */
  traceMermaid(): Promise<string>;
  addVhost(name: string): Promise<void>;
  deleteVhost(name: string): Promise<void>;
  urlFor(vhost: string): string;
}

/** Starts a broker on free ports; resolves once it printed both URLs. */
export function start(options?: StartOptions): Promise<Broker>;
/** The `warren` executable that `start` would run. */
export function findBinary(binary?: string): string;
/** This platform's binary package, e.g. "@warren-broker/linux-x64-gnu". */
export function platformPackage(): string;

export class WarrenError extends Error {}
export class BinaryNotFound extends WarrenError {}
export class StartError extends WarrenError {}
export class BrokerDied extends WarrenError {}
export class WaitTimeout extends WarrenError {
  readonly queue: Queue | null;
}
export class ControlError extends WarrenError {
  readonly status: number;
  readonly body: unknown;
}
