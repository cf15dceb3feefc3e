// Warren, an AMQP 0-9-1 broker that stands in for RabbitMQ in tests, from Node.
//
//   const { start, Fault } = require("warren-broker");
//   const broker = await start({ virtualClock: true });
//   // amqplib.connect(broker.url) …
//   await broker.inject(Fault.onAnyPublish().nth(3).nackConfirm());
//   await broker.waitUntilIdle();
//   await broker.stop();
//
// It runs the `warren` binary (from the per-platform package @warren-broker/<os>-<cpu>,
// WARREN_BIN, or PATH), reads the two URL lines it prints, and speaks its HTTP control
// plane (docs/control-plane.md) with the built-in fetch. No dependencies.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const readline = require("node:readline");

// A broker needs milliseconds to start; the margin is for a loaded CI machine or a
// large data directory to recover.
const DEFAULT_START_TIMEOUT_MS = 30_000;
// After SIGTERM, a graceful shutdown closes connections (their close timeout is 3 s)
// and flushes storage; past this the process is killed.
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
// A long poll gets this much beyond its own timeout: the broker answers 408 itself.
const HTTP_SLACK_MS = 5_000;
// A plain call that takes longer means the broker hangs.
const HTTP_TIMEOUT_MS = 60_000;
const LOG_TAIL_LINES = 20;

class WarrenError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = this.constructor.name;
  }
}
/** No `warren` binary was found. */
class BinaryNotFound extends WarrenError {}
/** The broker did not become ready: it exited, or printed no URLs in time. */
class StartError extends WarrenError {}
/** The broker process is gone while in use. */
class BrokerDied extends WarrenError {}
/** A wait ran out; `.queue` is the last state seen, when the broker gave one. */
class WaitTimeout extends WarrenError {
  constructor(message, queue) {
    super(message);
    this.queue = queue ?? null;
  }
}
/** The control plane refused a call; `.status` and `.body` are its answer. */
class ControlError extends WarrenError {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let platformPackageName = null;

/** The name of this platform's binary package, as in optionalDependencies. */
function platformPackage() {
  if (platformPackageName) return platformPackageName;
  const { platform, arch } = process;
  if (platform !== "linux") {
    platformPackageName = `@warren-broker/${platform}-${arch}`;
  } else {
    // glibc reports its version in the process report; musl does not (detect-libc's
    // first method). A report takes milliseconds: once per process is enough.
    const header = process.report?.getReport?.().header ?? {};
    const libc = header.glibcVersionRuntime ? "gnu" : "musl";
    platformPackageName = `@warren-broker/${platform}-${arch}-${libc}`;
  }
  return platformPackageName;
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * The `warren` executable: `binary`, `$WARREN_BIN`, the platform package's, or the
 * first on `$PATH` (not this package's own `warren` command, which runs this one).
 */
function findBinary(binary) {
  const explicit = binary ?? process.env.WARREN_BIN;
  if (explicit) {
    if (isExecutable(explicit)) return explicit;
    const source = binary ? "the binary option" : "$WARREN_BIN";
    throw new BinaryNotFound(`${source} names ${JSON.stringify(explicit)}, which is not an executable file`);
  }
  const name = process.platform === "win32" ? "warren.exe" : "warren";
  const pkg = platformPackage();
  try {
    const dir = path.dirname(require.resolve(`${pkg}/package.json`));
    const file = path.join(dir, "bin", name);
    if (isExecutable(file)) return file;
  } catch {
    // Not installed: fall through to PATH.
  }
  const shim = fs.realpathSync(path.join(__dirname, "bin", "warren.js"));
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    if (isExecutable(file) && fs.realpathSync(file) !== shim) return file;
  }
  throw new BinaryNotFound(
    `no \`warren\` binary found: the package ${pkg} (an optional dependency of ` +
      "warren-broker) is not installed for this platform; install it (npm install " +
      `target/package/${pkg.replace("@", "").replace("/", "-")}-*.tgz, built by \`cargo xtask package\`), ` +
      "or set WARREN_BIN to the binary's path, or put `warren` on PATH",
  );
}

/** The broker's command line for the options of `start`. */
function optionsToArgs(options) {
  const o = { ...options };
  const take = (key) => {
    const v = o[key];
    delete o[key];
    return v;
  };
  const host = take("host") ?? "127.0.0.1";
  const shown = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  const args = [
    "--bind", `${shown}:${take("port") ?? 0}`,
    "--management-bind", `${shown}:${take("managementPort") ?? 0}`,
  ];
  const dataDir = take("dataDir");
  if (dataDir != null) args.push("--data-dir", String(dataDir));
  let vhosts = take("vhosts") ?? [];
  if (typeof vhosts === "string") vhosts = [vhosts];
  for (const v of vhosts) args.push("--vhost", v);
  const user = take("user");
  if (user != null) args.push("--user", user);
  const password = take("password");
  if (password != null) args.push("--password", password);
  for (const u of take("users") ?? []) {
    // "name:password[:tags]", or { name, password, tags: [...] }.
    args.push("--user-add", typeof u === "string" ? u : [u.name, u.password, ...(u.tags?.length ? [u.tags.join(",")] : [])].join(":"));
  }
  const heartbeat = take("heartbeat");
  if (heartbeat != null) args.push("--heartbeat", String(Math.trunc(heartbeat)));
  if (take("virtualClock")) args.push("--virtual-clock");
  const consumerTimeout = take("consumerTimeout");
  if (consumerTimeout != null) args.push("--consumer-timeout", String(Math.round(consumerTimeout)));
  const watermark = take("memoryHighWatermark");
  if (watermark != null) args.push("--memory-high-watermark", String(Math.trunc(watermark)));
  const version = take("rabbitmqVersion");
  if (version != null) args.push("--rabbitmq-version", String(version));
  for (const a of take("extraArgs") ?? []) args.push(String(a));
  for (const key of ["binary", "startTimeout"]) delete o[key];
  const unknown = Object.keys(o);
  if (unknown.length) throw new TypeError(`start(): unknown options: ${unknown.sort().join(", ")}`);
  return args;
}

function encodeBody(body) {
  if (typeof body === "string") return { body, body_encoding: "string" };
  const buf = Buffer.from(body);
  const text = buf.toString("utf8");
  // Valid UTF-8 survives the round trip; anything else goes as base64.
  if (Buffer.from(text, "utf8").equals(buf)) return { body: text, body_encoding: "string" };
  return { body: buf.toString("base64"), body_encoding: "base64" };
}

function decodeBody(m) {
  return m.body_encoding === "base64" ? Buffer.from(m.body ?? "", "base64") : Buffer.from(m.body ?? "", "utf8");
}

/** One message in a queue as the snapshot shows it. */
class Message {
  constructor(raw) {
    this.raw = raw;
    this.body = decodeBody(raw);
    this.properties = raw.properties ?? {};
    this.exchange = raw.exchange;
    this.routingKey = raw.routing_key;
    this.redelivered = Boolean(raw.redelivered);
  }
  get text() {
    return this.body.toString("utf8");
  }
}

/** A queue's state at one instant. */
class Queue {
  constructor(raw) {
    this.raw = raw;
    this.name = raw.name;
    this.vhost = raw.vhost ?? "/";
    this.durable = Boolean(raw.durable);
    this.messages = raw.messages ?? 0;
    this.depth = raw.messages_ready ?? 0;
    this.unacked = raw.messages_unacknowledged ?? 0;
    this.consumers = raw.consumers ?? 0;
    this.readyMessages = (raw.ready ?? []).map((m) => new Message(m));
    this.unackedMessages = (raw.unacked ?? []).map((m) => new Message(m));
  }
  /** The bodies of the ready messages, in queue order, as strings (UTF-8). */
  get bodies() {
    return this.readyMessages.map((m) => m.text);
  }
}

/** A fault rule for `broker.inject`, built as Rust's `Fault`. */
class Fault {
  constructor(on, target = {}) {
    this.rule = { on, ...target };
  }
  static onPublishTo(exchange) {
    return new Fault("publish_to", { exchange });
  }
  static onPublishRoutedTo(queue) {
    return new Fault("publish_routed_to", { queue });
  }
  static onAnyPublish() {
    return new Fault("any_publish");
  }
  static onAck() {
    return new Fault("ack");
  }
  onChannel(channel) {
    this.rule.channel = channel;
    return this;
  }
  onConnection(connection) {
    this.rule.connection = connection;
    return this;
  }
  nth(n) {
    this.rule.nth = n;
    return this;
  }
  times(n) {
    this.rule.times = n;
    return this;
  }
  closeChannel(code = 406, text = "fault injected") {
    return this.#act({ type: "close_channel", code, text });
  }
  closeConnection(code = 320, text = "fault injected") {
    return this.#act({ type: "close_connection", code, text });
  }
  nackConfirm() {
    return this.#act({ type: "nack_confirm" });
  }
  withholdConfirm() {
    return this.#act({ type: "withhold_confirm" });
  }
  #act(action) {
    this.rule.action = action;
    return this;
  }
  toJSON() {
    if (!this.rule.action) {
      throw new TypeError(
        `fault ${JSON.stringify(this.rule)} has no action: end it with closeChannel(), ` +
          "closeConnection(), nackConfirm() or withholdConfirm()",
      );
    }
    return { ...this.rule };
  }
}

const q = encodeURIComponent;
// Brokers not yet stopped: killed when Node exits, so none outlives the test run.
const running = new Set();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A running `warren` process. */
class Broker {
  #child;
  #log;
  #exited;
  #auth;

  constructor(child, log, exited, url, managementUrl, user, password, args) {
    this.#child = child;
    this.#log = log;
    this.#exited = exited;
    this.url = url;
    this.managementUrl = managementUrl;
    this.user = user;
    this.password = password;
    this.args = args;
    this.#auth = "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
  }

  get pid() {
    return this.#child.pid;
  }

  get running() {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** What the broker wrote to stderr lately (its last lines). */
  log() {
    return this.#log.join("\n");
  }

  /** SIGTERM (every connection gets 320 CONNECTION_FORCED), SIGKILL after `timeoutMs`. */
  async stop({ timeoutMs = DEFAULT_STOP_TIMEOUT_MS } = {}) {
    const child = this.#child;
    if (this.running) {
      child.kill("SIGTERM");
      let timer;
      const killed = new Promise((resolve) => {
        timer = setTimeout(() => {
          child.kill("SIGKILL");
          resolve();
        }, timeoutMs);
      });
      await Promise.race([this.#exited, killed]);
      clearTimeout(timer);
      await this.#exited;
    }
    running.delete(child);
    return child.exitCode ?? child.signalCode;
  }

  async [Symbol.asyncDispose ?? Symbol.for("nodejs.asyncDispose")]() {
    await this.stop();
  }

  #died(doing) {
    const c = this.#child;
    const how = c.signalCode ? `was killed by ${c.signalCode}` : `exited with status ${c.exitCode}`;
    return new BrokerDied(`the warren broker (pid ${c.pid}, ${this.url}) ${how}; cannot ${doing}${tail(this.#log)}`);
  }

  async #call(method, route, body, { timeoutMs = HTTP_TIMEOUT_MS, text = false } = {}) {
    const doing = `${method} ${route}`;
    if (!this.running) throw this.#died(doing);
    const headers = { authorization: this.#auth };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(this.managementUrl + route, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      // Refused or reset: most likely the process just died; give its exit a moment
      // to be noticed, and say so rather than "fetch failed".
      await Promise.race([this.#exited, new Promise((r) => setTimeout(r, 500))]);
      if (!this.running) throw this.#died(doing);
      throw new ControlError(`${doing}: no answer from ${this.managementUrl}: ${e.cause?.message ?? e.message}`);
    }
    const raw = await response.text();
    if (response.ok) {
      if (text) return raw;
      return raw ? JSON.parse(raw) : null;
    }
    let answer = null;
    try {
      answer = JSON.parse(raw);
    } catch {
      // Not JSON: the reason is the text itself.
    }
    if (response.status === 408) {
      throw new WaitTimeout(`${doing}: ${answer?.reason ?? "timed out"}`, answer?.queue ? new Queue(answer.queue) : null);
    }
    throw new ControlError(`${doing}: ${response.status} ${answer?.reason ?? raw}`, response.status, answer);
  }

  // ---- inspection ----

  /** The whole state (docs/control-plane.md): queues with messages, exchanges, bindings, connections, faults, clock. */
  snapshot({ vhost } = {}) {
    return this.#call("GET", "/api/warren/snapshot" + (vhost === undefined ? "" : `?vhost=${q(vhost)}`));
  }
  async queues({ vhost } = {}) {
    return (await this.snapshot({ vhost })).queues.map((x) => new Queue(x));
  }
  /** One queue's state, or null when there is no such queue. */
  async queue(name, { vhost = "/" } = {}) {
    try {
      return new Queue(await this.#call("GET", `/api/warren/queues/${q(vhost)}/${q(name)}`));
    } catch (e) {
      if (e instanceof ControlError && e.status === 404) return null;
      throw e;
    }
  }
  async connections({ vhost } = {}) {
    return (await this.snapshot({ vhost })).connections;
  }

  // ---- waits ----

  /** Resolves once nothing is in flight; rejects with WaitTimeout. */
  async waitUntilIdle({ timeoutMs = 5_000 } = {}) {
    await this.#call("POST", "/api/warren/wait/idle", { timeout_ms: timeoutMs }, { timeoutMs: timeoutMs + HTTP_SLACK_MS });
  }
  /** Resolves with the queue once every condition given holds (`messages` counts ready and unacked). */
  async waitFor(queue, { vhost = "/", timeoutMs = 5_000, messages, empty, noUnacked, consumers } = {}) {
    const body = { timeout_ms: timeoutMs, messages, empty, no_unacked: noUnacked, consumers };
    const raw = await this.#call("POST", `/api/warren/wait/queue/${q(vhost)}/${q(queue)}`, body, {
      timeoutMs: timeoutMs + HTTP_SLACK_MS,
    });
    return new Queue(raw);
  }

  // ---- faults, connections ----

  /** Adds a fault rule; resolves with its id. */
  async inject(fault) {
    return (await this.#call("POST", "/api/warren/faults", fault.toJSON())).id;
  }
  faults() {
    return this.#call("GET", "/api/warren/faults");
  }
  async removeFault(id) {
    await this.#call("DELETE", `/api/warren/faults/${id}`);
  }
  async clearFaults() {
    await this.#call("DELETE", "/api/warren/faults");
  }
  async closeConnection(id, { code = 320, text = "closed by the test" } = {}) {
    await this.#call("POST", `/api/warren/connections/${id}/close`, { code, text });
  }
  async closeChannel(id, channel, { code = 406, text = "closed by the test" } = {}) {
    await this.#call("POST", `/api/warren/connections/${id}/channels/${channel}/close`, { code, text });
  }
  /** The socket just dies: no close frame. */
  async dropConnection(id) {
    await this.#call("POST", `/api/warren/connections/${id}/drop`);
  }
  /** The socket dies in the middle of a frame. */
  async cutConnection(id) {
    await this.#call("POST", `/api/warren/connections/${id}/cut`);
  }
  async cancelConsumer(queue, consumerTag, { vhost = "/" } = {}) {
    await this.#call("POST", "/api/warren/consumers/cancel", { vhost, queue, consumer_tag: consumerTag });
  }
  async memoryAlarm(on = true) {
    await this.#call("POST", "/api/warren/memory-alarm", { on });
  }

  // ---- clock, restart, crash, storage ----

  clock() {
    return this.#call("GET", "/api/warren/clock");
  }
  /** Moves the virtual clock (start with virtualClock: true) by `ms`: TTLs, expiry, consumer timeouts. */
  advance(ms) {
    return this.#call("POST", "/api/warren/clock/advance", { ms: Math.round(ms) });
  }
  /** As RabbitMQ restarts: connections get 320, durable state stays. Resolves once it serves again. */
  async restart() {
    await this.#call("POST", "/api/warren/restart");
  }
  /** A power cut: sockets die; with a dataDir, what was not fsynced is lost. */
  async crash() {
    await this.#call("POST", "/api/warren/crash");
  }
  async stallStorage(on = true) {
    await this.#call("POST", "/api/warren/storage/stall", { on });
  }

  // ---- seeding, tracing, vhosts ----

  /** Puts a message into an existing queue, as if it had been published. */
  async seed(queue, body, { vhost = "/", properties } = {}) {
    await this.#call("POST", "/api/warren/seed", { vhost, queue, ...encodeBody(body), properties });
  }
  async trace(on = true) {
    await this.#call("POST", "/api/warren/trace", { on });
  }
  traceEntries({ connection } = {}) {
    return this.#call("GET", "/api/warren/trace" + (connection === undefined ? "" : `?connection=${connection}`));
  }
  traceText() {
    return this.#call("GET", "/api/warren/trace?format=text", undefined, { text: true });
  }
  /**
   * Writes the trace as one self-contained HTML file (the sequence diagram of every
   * frame and the broker's state now) that opens with no server and no network: an
   * artifact for a failing test. Resolves to the path.
   */
  async traceHtml(file) {
    const html = await this.#call("GET", "/api/warren/trace.html", undefined, { text: true });
    await fs.promises.writeFile(file, html);
    return file;
  }
  /** The trace as a Mermaid sequence diagram (text), for a failure message. */
  traceMermaid() {
    return this.#call("GET", "/api/warren/trace.mmd", undefined, { text: true });
  }
  async addVhost(name) {
    await this.#call("PUT", `/api/vhosts/${q(name)}`);
  }
  async deleteVhost(name) {
    await this.#call("DELETE", `/api/vhosts/${q(name)}`);
  }
  /** This broker's AMQP URL for another virtual host. */
  urlFor(vhost) {
    return this.url.slice(0, this.url.lastIndexOf("/")) + "/" + q(vhost);
  }
}

function tail(lines) {
  if (lines.length === 0) return "; it logged nothing";
  return "; its last log lines:\n    " + lines.join("\n    ");
}

/**
 * Starts a broker on free ports and resolves once it printed both URLs. Options mirror
 * the command line: dataDir, vhosts, user, password, users (more users:
 * "name:password[:tags]" or { name, password, tags }), heartbeat (s), virtualClock,
 * consumerTimeout (ms; 0 disables), memoryHighWatermark (bytes), rabbitmqVersion,
 * host, port, managementPort, binary, startTimeout (ms), extraArgs.
 */
async function start(options = {}) {
  const args = optionsToArgs(options);
  const binary = findBinary(options.binary);
  const startTimeout = options.startTimeout ?? DEFAULT_START_TIMEOUT_MS;
  const user = options.user ?? "guest";
  const password = options.password ?? "guest";
  const command = [binary, ...args].join(" ");

  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  const log = [];
  readline.createInterface({ input: child.stderr }).on("line", (line) => {
    log.push(line);
    if (log.length > LOG_TAIL_LINES) log.shift();
  });
  const exited = new Promise((resolve) => child.once("exit", resolve)).then(() => running.delete(child));
  const spawnError = new Promise((resolve) => child.once("error", resolve));

  const urls = [];
  const lines = readline.createInterface({ input: child.stdout });
  const ready = new Promise((resolve) => {
    lines.on("line", (line) => {
      urls.push(line.trim());
      if (urls.length === 2) resolve();
    });
  });
  // Log lines may still be on their way when the exit is seen; the stream's end says
  // they are all in.
  const stderrDone = new Promise((resolve) => child.stderr.once("close", resolve));
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(resolve, startTimeout);
  });
  const outcome = await Promise.race([
    ready.then(() => "ready"),
    exited.then(() => "exited"),
    spawnError.then((e) => e),
    timedOut.then(() => "timeout"),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    if (outcome === "timeout") {
      child.kill("SIGKILL");
    }
    await Promise.race([stderrDone, new Promise((r) => setTimeout(r, 1000))]);
    running.delete(child);
    if (outcome instanceof Error) throw new StartError(`cannot run ${binary}: ${outcome.message}`, { cause: outcome });
    if (outcome === "timeout") {
      throw new StartError(`warren printed ${urls.length} of its 2 URL lines within ${startTimeout} ms (command: ${command})${tail(log)}`);
    }
    const hint = urls.length === 1 ? " (it printed no management URL: is this binary older than --management-bind?)" : "";
    const status = child.signalCode ? `was killed by ${child.signalCode}` : `exited with status ${child.exitCode}`;
    throw new StartError(`warren ${status} before it was ready${hint} (command: ${command})${tail(log)}`);
  }
  lines.close();
  // A broker the test forgot to stop must not keep Node alive; the exit hook kills it.
  child.unref();
  child.stdout.unref?.();
  child.stderr.unref?.();
  return new Broker(child, log, exited, urls[0], urls[1], user, password, [binary, ...args]);
}

module.exports = {
  start,
  findBinary,
  platformPackage,
  Broker,
  Fault,
  Queue,
  Message,
  WarrenError,
  BinaryNotFound,
  StartError,
  BrokerDied,
  WaitTimeout,
  ControlError,
};
