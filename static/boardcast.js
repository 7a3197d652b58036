// boardcast browser client: one board, reconnects with resume, presence, cursors, typing, and
// optimistic durable operations. No dependencies; an ES module.
//
//   import { BoardClient } from "/client/boardcast.js";
//   const board = new BoardClient({ board: "demo", token: async () => fetchToken() });
//   // or, with MessagePack frames: new BoardClient({ ..., encoding: "msgpack" })
//   // and who is online in the whole tenant (state.workspace): { ..., workspace: true }
//   board.on("change", (state) => render(state));
//   board.connect();
//   await board.createItem({ id: "n1", title: "hello" });

const DURABLE = new Set(["item.created", "item.updated", "item.moved", "item.deleted", "value.set"]);
const CURSOR_INTERVAL = 50;
const BACKOFF_BASE = 1000;
const BACKOFF_CAP = 30000;
/** An operation answered `unavailable` is sent again up to this many times... */
const OP_TRIES = 5;
/** ...after about 250 ms, then twice as long each time (with jitter). */
const OP_RETRY_BASE = 250;

/** An operation the server refused; `code` is the protocol's error code. */
export class BoardError extends Error {
  constructor(code, message, current) {
    super(message || code);
    this.name = "BoardError";
    this.code = code;
    this.current = current;
  }
}

const cellKey = (itemId, columnId) => itemId + "\u0000" + columnId;

/** Applies a durable event (or a confirmed operation) to items and values, in place. */
export function applyEvent(items, values, type, p) {
  switch (type) {
    case "item.created":
      items.set(p.item.id, { ...p.item });
      break;
    case "item.updated": {
      const item = items.get(p.itemId);
      if (item) items.set(p.itemId, { ...item, ...p.changes, version: p.version ?? item.version });
      break;
    }
    case "item.moved": {
      const item = items.get(p.itemId);
      if (item) items.set(p.itemId, { ...item, groupId: p.groupId, position: p.position, version: p.version ?? item.version });
      break;
    }
    case "item.deleted":
      items.delete(p.itemId);
      for (const key of [...values.keys()]) if (key.startsWith(p.itemId + "\u0000")) values.delete(key);
      break;
    case "value.set":
      values.set(cellKey(p.itemId, p.columnId), { itemId: p.itemId, columnId: p.columnId, value: p.value, version: p.version });
      break;
  }
}

// MessagePack, as much of it as boardcast's messages use: nil, booleans, integers (as numbers),
// 64-bit floats, strings, arrays, maps with string keys; binary data decodes to a Uint8Array.
// Integers are sent in their shortest form; numbers that are not safe integers go as float 64.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes a JSON-like value as MessagePack bytes. */
export function packMessage(value) {
  const out = [];
  const word = (bytes, n) => {
    for (let shift = (bytes - 1) * 8; shift >= 0; shift -= 8) out.push(Math.floor(n / 2 ** shift) % 256);
  };
  const sized = (n, fix, fixMax, codes) => {
    if (fix !== null && n <= fixMax) return out.push(fix | n);
    if (codes[0] !== null && n < 256) return out.push(codes[0], n);
    if (n < 65536) return out.push(codes[1]), word(2, n);
    out.push(codes[2]);
    word(4, n);
  };
  const put = (v) => {
    if (v === null || v === undefined) return out.push(0xc0);
    if (v === false) return out.push(0xc2);
    if (v === true) return out.push(0xc3);
    if (typeof v === "number") {
      if (Number.isSafeInteger(v)) {
        if (v >= 0) {
          if (v < 128) return out.push(v);
          if (v < 256) return out.push(0xcc, v);
          if (v < 65536) return out.push(0xcd), word(2, v);
          if (v < 2 ** 32) return out.push(0xce), word(4, v);
          return out.push(0xcf), word(8, v);
        }
        if (v >= -32) return out.push(v + 256);
        if (v >= -128) return out.push(0xd0, v + 256);
        if (v >= -32768) return out.push(0xd1), word(2, v + 65536);
        if (v >= -(2 ** 31)) return out.push(0xd2), word(4, v + 2 ** 32);
        // Two's complement of a 64-bit integer, as two 32-bit words.
        const big = BigInt.asUintN(64, BigInt(v));
        out.push(0xd3);
        word(4, Number(big >> 32n));
        return word(4, Number(big & 0xffffffffn));
      }
      const bytes = new Uint8Array(8);
      new DataView(bytes.buffer).setFloat64(0, v);
      return out.push(0xcb, ...bytes);
    }
    if (typeof v === "string") {
      const bytes = utf8Encoder.encode(v);
      sized(bytes.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
      for (const b of bytes) out.push(b);
      return;
    }
    if (v instanceof Uint8Array) {
      sized(v.length, null, 0, [0xc4, 0xc5, 0xc6]);
      for (const b of v) out.push(b);
      return;
    }
    if (Array.isArray(v)) {
      sized(v.length, 0x90, 15, [null, 0xdc, 0xdd]);
      for (const item of v) put(item);
      return;
    }
    if (typeof v === "object") {
      const entries = Object.entries(v).filter(([, x]) => x !== undefined);
      sized(entries.length, 0x80, 15, [null, 0xde, 0xdf]);
      for (const [key, item] of entries) put(key), put(item);
      return;
    }
    throw new TypeError(`cannot encode a ${typeof v} as MessagePack`);
  };
  put(value);
  return Uint8Array.from(out);
}

/** Decodes one MessagePack value that fills `bytes` (an ArrayBuffer or a Uint8Array). */
export function unpackMessage(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > data.length) throw new RangeError("truncated MessagePack");
    const start = at;
    at += n;
    return start;
  };
  const uint = (n) => {
    const start = need(n);
    if (n === 1) return view.getUint8(start);
    if (n === 2) return view.getUint16(start);
    if (n === 4) return view.getUint32(start);
    return view.getUint32(start) * 2 ** 32 + view.getUint32(start + 4);
  };
  const str = (n) => utf8Decoder.decode(data.subarray(need(n), at));
  const list = (n) => Array.from({ length: n }, () => get());
  const map = (n) => {
    const obj = {};
    for (let i = 0; i < n; i++) {
      const key = get();
      if (typeof key !== "string") throw new TypeError("MessagePack map keys must be strings");
      obj[key] = get();
    }
    return obj;
  };
  const get = () => {
    const c = uint(1);
    if (c < 0x80) return c;
    if (c < 0x90) return map(c & 0x0f);
    if (c < 0xa0) return list(c & 0x0f);
    if (c < 0xc0) return str(c & 0x1f);
    if (c >= 0xe0) return c - 256;
    switch (c) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: case 0xc5: case 0xc6: {
        const n = uint(2 ** (c - 0xc4));
        return new Uint8Array(data.subarray(need(n), at));
      }
      case 0xca: return view.getFloat32(need(4));
      case 0xcb: return view.getFloat64(need(8));
      case 0xcc: return uint(1);
      case 0xcd: return uint(2);
      case 0xce: return uint(4);
      case 0xcf: return uint(8);
      case 0xd0: return view.getInt8(need(1));
      case 0xd1: return view.getInt16(need(2));
      case 0xd2: return view.getInt32(need(4));
      case 0xd3: {
        const start = need(8);
        return view.getInt32(start) * 2 ** 32 + view.getUint32(start + 4);
      }
      case 0xd9: return str(uint(1));
      case 0xda: return str(uint(2));
      case 0xdb: return str(uint(4));
      case 0xdc: return list(uint(2));
      case 0xdd: return list(uint(4));
      case 0xde: return map(uint(2));
      case 0xdf: return map(uint(4));
    }
    throw new TypeError(`unsupported MessagePack type 0x${c.toString(16)}`);
  };
  const value = get();
  if (at !== data.length) throw new RangeError("bytes after the MessagePack value");
  return value;
}

/**
 * A connection to one board. State is kept in `state`; listeners registered with `on` are told
 * of changes: "change" (any), "status", "presence", "cursor", "typing", "board", "workspace"
 * (who is online in the tenant, with `workspace: true`), "event" (backend, user and tenant
 * events), "error".
 */
export class BoardClient {
  constructor({ board, token, url, encoding, workspace, WebSocket: Socket, random, setTimeout: timer, clearTimeout: clear, now } = {}) {
    if (!board) throw new Error("board is required");
    if (encoding !== undefined && encoding !== "json" && encoding !== "msgpack") {
      throw new Error('encoding is "json" or "msgpack"');
    }
    this.board = board;
    this.encoding = encoding || "json";
    this.workspace = Boolean(workspace);
    this.tokenSource = token;
    this.url = url || (typeof location !== "undefined" ? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}` : "");
    this.Socket = Socket || globalThis.WebSocket;
    this.random = random || Math.random;
    this.setTimeout = timer || ((f, ms) => globalThis.setTimeout(f, ms));
    this.clearTimeout = clear || ((h) => globalThis.clearTimeout(h));
    this.now = now || (() => Date.now());
    this.listeners = new Map();
    this.state = {
      status: "idle", self: null, seq: null, epoch: null, users: new Map(), typing: new Map(),
      items: new Map(), values: new Map(),
      // With `workspace: true`: who is online in the tenant, by user id, once the server said.
      workspace: null,
    };
    // Server truth; `state.items`/`state.values` are this plus the pending operations.
    this.confirmed = { items: new Map(), values: new Map() };
    this.pending = [];
    this.nextId = 1;
    // Ids are unique per user for longer than the server remembers them (10 min), across
    // reloads too: the server treats the same id with the same operation as a retry.
    this.idPrefix = Math.floor(this.random() * 2 ** 48).toString(36) + Date.now().toString(36);
    this.attempt = 0;
    this.socket = null;
    this.stopped = false;
    this.needToken = true;
    this.cursor = { last: -Infinity, queued: undefined, timer: null };
    this.retryTimer = null;
  }

  /** Registers a listener; returns a function that removes it. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, detail) {
    for (const fn of this.listeners.get(event) || []) fn(detail, this.state);
    if (event !== "change") for (const fn of this.listeners.get("change") || []) fn(this.state, event);
  }

  setConnectionStatus(status) {
    if (this.state.status === status) return;
    this.state.status = status;
    this.emit("status", status);
  }

  async token() {
    if (typeof this.tokenSource === "function") {
      if (this.needToken || !this.currentToken) this.currentToken = await this.tokenSource();
    } else {
      this.currentToken = this.tokenSource;
    }
    this.needToken = false;
    return this.currentToken;
  }

  /** Opens the connection (and keeps it open until `close`). */
  async connect() {
    this.stopped = false;
    this.setConnectionStatus(this.state.self ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.token();
    } catch (e) {
      this.emit("error", new BoardError("unauthorized", String(e && e.message || e)));
      return this.scheduleReconnect();
    }
    if (this.stopped) return;
    // A resume names the board's epoch too: if the server lost the board since, its seq
    // started again, and the client gets a snapshot rather than a wrong replay.
    const epoch = this.state.epoch ? `&epoch=${encodeURIComponent(this.state.epoch)}` : "";
    const resume = this.state.seq !== null ? `&last_seq=${this.state.seq}${epoch}` : "";
    const workspace = this.workspace ? "&workspace=1" : "";
    const address = `${this.url}/ws/${encodeURIComponent(this.board)}?token=${encodeURIComponent(token)}${resume}${workspace}`;
    const socket = this.encoding === "msgpack"
      ? new this.Socket(address, ["boardcast.v1.msgpack"])
      : new this.Socket(address);
    if (this.encoding === "msgpack") socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onmessage = (e) => this.socket === socket && this.receive(e.data);
    socket.onclose = (e) => this.socket === socket && this.closed(e.code);
  }

  /** Closes the connection for good. */
  close() {
    this.stopped = true;
    this.clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
    this.failPending("closed");
    this.setConnectionStatus("closed");
  }

  closed(code) {
    this.socket = null;
    this.failPending("unavailable");
    if (this.stopped) return;
    if (code === 4003) {
      this.stopped = true;
      return this.setConnectionStatus("kicked");
    }
    if (code === 4001) {
      if (typeof this.tokenSource !== "function") {
        this.stopped = true;
        return this.setConnectionStatus("expired");
      }
      this.needToken = true;
    }
    this.setConnectionStatus("reconnecting");
    if (code === 1012) return this.connect();
    this.scheduleReconnect();
  }

  /** Exponential backoff with full jitter, from 1 s up to 30 s. */
  backoffDelay() {
    const ceiling = Math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ** this.attempt);
    this.attempt += 1;
    return Math.max(BACKOFF_BASE, this.random() * ceiling);
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.clearTimeout(this.retryTimer);
    this.retryTimer = this.setTimeout(() => this.connect(), this.backoffDelay());
  }

  send(type, payload, id) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    const frame = id === undefined ? { type, payload } : { type, payload, id };
    this.socket.send(this.encoding === "msgpack" ? packMessage(frame) : JSON.stringify(frame));
    return true;
  }

  /** One frame from the server: text (JSON) or binary (MessagePack). */
  receive(data) {
    let frame;
    try {
      frame = typeof data === "string" ? JSON.parse(data) : unpackMessage(data);
    } catch {
      return;
    }
    const { type, payload: p = {}, seq } = frame;
    switch (type) {
      case "board.snapshot":
        this.confirmed.items = new Map(p.items.map((i) => [i.id, i]));
        this.confirmed.values = new Map(p.values.map((v) => [cellKey(v.itemId, v.columnId), v]));
        this.state.seq = p.seq;
        this.state.epoch = p.epoch || null;
        this.joined(p, "connected");
        this.recompute();
        return;
      case "board.resumed":
        this.state.epoch = p.epoch || this.state.epoch;
        this.joined(p, "resumed");
        return;
      case "presence.join":
        this.state.users.set(p.userId, { userId: p.userId, user: p.user, color: p.color, cursor: null, status: "active" });
        return this.emit("presence", { type, userId: p.userId });
      case "presence.leave":
        this.state.users.delete(p.userId);
        this.state.typing.delete(p.userId);
        return this.emit("presence", { type, userId: p.userId });
      case "presence.update": {
        const user = this.state.users.get(p.userId);
        if (user) user.status = p.status;
        return this.emit("presence", { type, userId: p.userId });
      }
      case "cursor.move": {
        const user = this.state.users.get(p.userId);
        if (user) user.cursor = p.position;
        return this.emit("cursor", { userId: p.userId, position: p.position });
      }
      case "typing.start":
        this.state.typing.set(p.userId, { itemId: p.itemId, columnId: p.columnId });
        return this.emit("typing", { userId: p.userId });
      case "typing.stop":
        this.state.typing.delete(p.userId);
        return this.emit("typing", { userId: p.userId });
      case "workspace.snapshot":
        this.state.workspace = new Map(p.users.map((u) => [u.userId, { userId: u.userId, user: u.user }]));
        return this.emit("workspace", { type: "snapshot" });
      case "workspace.online":
        if (this.state.workspace) this.state.workspace.set(p.userId, { userId: p.userId, user: p.user });
        return this.emit("workspace", { type: "online", userId: p.userId });
      case "workspace.offline":
        if (this.state.workspace) this.state.workspace.delete(p.userId);
        return this.emit("workspace", { type: "offline", userId: p.userId });
      case "ack":
        return this.acked(p);
      case "error":
        return this.failed(p);
      case "pong":
        return;
    }
    if (seq !== undefined) {
      if (this.state.seq !== null && seq <= this.state.seq) return;
      this.state.seq = seq;
    }
    if (DURABLE.has(type)) {
      applyEvent(this.confirmed.items, this.confirmed.values, type, p);
      this.recompute();
      return;
    }
    this.emit("event", frame);
  }

  joined(p, status) {
    this.attempt = 0;
    this.state.self = p.self;
    this.state.users = new Map(p.users.map((u) => [u.userId, { ...u }]));
    this.state.typing = new Map();
    this.setConnectionStatus(status);
    this.emit("presence", { type: "snapshot" });
  }

  /** Rebuilds the visible board: server truth plus the operations not yet acknowledged. */
  recompute() {
    const items = new Map(this.confirmed.items);
    const values = new Map(this.confirmed.values);
    for (const op of this.pending) applyEvent(items, values, op.type, op.optimistic(items, values));
    this.state.items = items;
    this.state.values = values;
    this.emit("board");
  }

  acked(p) {
    const index = this.pending.findIndex((op) => op.id === p.id);
    if (index < 0) return;
    const [op] = this.pending.splice(index, 1);
    if (p.seq !== undefined) this.state.seq = Math.max(this.state.seq ?? 0, p.seq);
    applyEvent(this.confirmed.items, this.confirmed.values, op.type, op.confirmed(this.confirmed.items, p.version));
    this.recompute();
    op.resolve(p);
  }

  failed(p) {
    const index = this.pending.findIndex((op) => op.id === p.id);
    if (index < 0) return this.emit("error", new BoardError(p.code, p.message, p.current));
    const pendingOp = this.pending[index];
    if (p.code === "unavailable" && pendingOp.tries < OP_TRIES) {
      // Sent again under the same id: the server applies an operation once however often it
      // is retried, and answers a retry with the first answer.
      pendingOp.tries += 1;
      const delay = OP_RETRY_BASE * 2 ** (pendingOp.tries - 1) * (0.5 + this.random() / 2);
      this.setTimeout(() => {
        if (this.pending.includes(pendingOp) && !this.send(pendingOp.type, pendingOp.payload, pendingOp.id)) {
          this.failed({ id: pendingOp.id, code: "unavailable", message: "not connected" });
        }
      }, delay);
      return;
    }
    const [op] = this.pending.splice(index, 1);
    if (p.current) {
      if (p.current.columnId !== undefined) {
        this.confirmed.values.set(cellKey(p.current.itemId, p.current.columnId), p.current);
      } else if (p.current.id !== undefined) {
        this.confirmed.items.set(p.current.id, p.current);
      }
    }
    this.recompute();
    op.reject(new BoardError(p.code, p.message, p.current));
  }

  failPending(code) {
    if (!this.pending.length) return;
    const pending = this.pending;
    this.pending = [];
    this.recompute();
    for (const op of pending) op.reject(new BoardError(code, "the connection closed before an answer"));
  }

  /** Sends a durable operation, applied locally at once; resolves with the ack. */
  operate(type, payload, optimistic, confirmed) {
    return new Promise((resolve, reject) => {
      const id = this.idPrefix + "-" + this.nextId++;
      if (!this.send(type, payload, id)) return reject(new BoardError("unavailable", "not connected"));
      this.pending.push({ id, type, payload, tries: 0, optimistic, confirmed, resolve, reject });
      this.recompute();
    });
  }

  createItem(item) {
    const event = () => ({ item: { ...item, version: 1 } });
    return this.operate("item.created", { item }, event, event);
  }

  updateItem(itemId, changes, { expectedVersion } = {}) {
    const versionOf = (items) => (items.get(itemId)?.version ?? 0) + 1;
    return this.operate("item.updated", { itemId, changes, expectedVersion },
      (items) => ({ itemId, changes, version: versionOf(items) }),
      (items, version) => ({ itemId, changes, version }));
  }

  moveItem(itemId, groupId, position, { expectedVersion } = {}) {
    const versionOf = (items) => (items.get(itemId)?.version ?? 0) + 1;
    return this.operate("item.moved", { itemId, groupId, position, expectedVersion },
      (items) => ({ itemId, groupId, position, version: versionOf(items) }),
      (items, version) => ({ itemId, groupId, position, version }));
  }

  deleteItem(itemId, { expectedVersion } = {}) {
    return this.operate("item.deleted", { itemId, expectedVersion }, () => ({ itemId }), () => ({ itemId }));
  }

  setValue(itemId, columnId, value, { expectedVersion } = {}) {
    return this.operate("value.set", { itemId, columnId, value, expectedVersion },
      (items, values) => ({ itemId, columnId, value, version: (values.get(cellKey(itemId, columnId))?.version ?? 0) + 1 }),
      (items, version) => ({ itemId, columnId, value, version }));
  }

  /** The value of one cell, as shown (optimistic changes included). */
  value(itemId, columnId) {
    return this.state.values.get(cellKey(itemId, columnId));
  }

  /** Moves this user's cursor; at most one frame per 50 ms, the newest always sent. */
  moveCursor(x, y) {
    this.queueCursor(x === null || x === undefined ? null : { x, y });
  }

  /** The cursor left the canvas. */
  leaveCanvas() {
    this.queueCursor(null);
  }

  queueCursor(position) {
    const now = this.now();
    const wait = this.cursor.last + CURSOR_INTERVAL - now;
    if (wait <= 0) {
      this.cursor.last = now;
      this.send("cursor.move", { position });
      return;
    }
    this.cursor.queued = position;
    if (this.cursor.timer === null) {
      this.cursor.timer = this.setTimeout(() => {
        this.cursor.timer = null;
        this.cursor.last = this.now();
        this.send("cursor.move", { position: this.cursor.queued });
      }, wait);
    }
  }

  startTyping(itemId, columnId) {
    this.send("typing.start", { itemId, columnId });
  }

  stopTyping() {
    this.send("typing.stop", {});
  }

  /** This user's presence status: "active" or "idle". */
  setStatus(status) {
    this.send("presence.update", { status });
  }
}
