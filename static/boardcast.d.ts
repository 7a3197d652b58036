// Types of the boardcast browser client (boardcast.js).

export type ConnectionStatus =
  | "idle" | "connecting" | "connected" | "reconnecting" | "resumed" | "closed" | "kicked" | "expired";

export interface Point { x: number; y: number }

export interface PresenceUser {
  userId: string;
  user: { name: string | null; avatar: string | null };
  color: string;
  cursor: Point | null;
  status: "active" | "idle";
}

export interface Item { id: string; version: number; [field: string]: unknown }

export interface CellValue { itemId: string; columnId: string; value: unknown; version: number }

/** A user online in the tenant (the workspace). */
export interface OnlineUser {
  userId: string;
  user: { name: string | null; avatar: string | null };
}

export interface BoardState {
  status: ConnectionStatus;
  self: { userId: string; sessionId: string; color: string } | null;
  /** Last durable seq seen; resumes start after it. */
  seq: number | null;
  /** The board's epoch that `seq` belongs to; sent with resumes. */
  epoch: string | null;
  users: Map<string, PresenceUser>;
  /** Who is typing, by user id. */
  typing: Map<string, { itemId: string; columnId: string }>;
  /** Items as shown: server state plus operations not yet acknowledged. */
  items: Map<string, Item>;
  values: Map<string, CellValue>;
  /**
   * With `workspace: true`: who is online in the whole tenant (on any board), by user id;
   * `null` until the server's first `workspace.snapshot`.
   */
  workspace: Map<string, OnlineUser> | null;
}

export interface Ack { id: string; seq: number; version?: number }

export declare class BoardError extends Error {
  code: "bad_request" | "forbidden" | "not_found" | "conflict" | "rate_limited" | "too_large"
    | "unavailable" | "internal" | "closed" | "unauthorized";
  /** For conflicts: the item or value as the server holds it. */
  current?: Item | CellValue;
}

export interface VersionCheck { expectedVersion?: number }

export interface BoardClientOptions {
  board: string;
  /** A token, or an async provider called on connect and again after close code 4001. */
  token: string | (() => Promise<string>);
  /** `ws://host:port`; defaults to the page's own host. */
  url?: string;
  /**
   * `"json"` (the default): text frames. `"msgpack"`: the `boardcast.v1.msgpack` subprotocol,
   * every frame a binary MessagePack map with the same keys and values.
   */
  encoding?: "json" | "msgpack";
  /** Also follow who is online in the tenant (`state.workspace`, "workspace" events). */
  workspace?: boolean;
  WebSocket?: unknown;
  random?: () => number;
  setTimeout?: (f: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  now?: () => number;
}

type Events = {
  change: (state: BoardState, cause: string) => void;
  status: (status: ConnectionStatus, state: BoardState) => void;
  presence: (detail: { type: string; userId?: string }, state: BoardState) => void;
  cursor: (detail: { userId: string; position: Point | null }, state: BoardState) => void;
  typing: (detail: { userId: string }, state: BoardState) => void;
  board: (detail: undefined, state: BoardState) => void;
  workspace: (detail: { type: "snapshot" | "online" | "offline"; userId?: string }, state: BoardState) => void;
  event: (frame: { type: string; payload: unknown; seq?: number }, state: BoardState) => void;
  error: (error: BoardError, state: BoardState) => void;
};

/** Encodes a JSON-like value as MessagePack (integers shortest, other numbers as float 64). */
export declare function packMessage(value: unknown): Uint8Array;
/** Decodes one MessagePack value that fills `bytes`; throws on anything else. */
export declare function unpackMessage(bytes: ArrayBuffer | Uint8Array): unknown;

export declare function applyEvent(
  items: Map<string, Item>, values: Map<string, CellValue>, type: string, payload: unknown): void;

export declare class BoardClient {
  constructor(options: BoardClientOptions);
  readonly state: BoardState;
  on<E extends keyof Events>(event: E, listener: Events[E]): () => void;
  connect(): Promise<void>;
  close(): void;
  /**
   * Durable operations apply at once locally and resolve with their ack. One answered
   * `unavailable` is sent again under the same id (up to 5 times, backing off from 250 ms);
   * the server applies it once however often it is retried.
   */
  createItem(item: { id: string; [field: string]: unknown }): Promise<Ack>;
  updateItem(itemId: string, changes: Record<string, unknown>, check?: VersionCheck): Promise<Ack>;
  moveItem(itemId: string, groupId: unknown, position: unknown, check?: VersionCheck): Promise<Ack>;
  deleteItem(itemId: string, check?: VersionCheck): Promise<Ack>;
  setValue(itemId: string, columnId: string, value: unknown, check?: VersionCheck): Promise<Ack>;
  value(itemId: string, columnId: string): CellValue | undefined;
  moveCursor(x: number, y: number): void;
  leaveCanvas(): void;
  startTyping(itemId: string, columnId: string): void;
  stopTyping(): void;
  setStatus(status: "active" | "idle"): void;
}
