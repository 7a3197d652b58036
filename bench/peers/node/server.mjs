// The Node.js reference peer for the benchmarks: the server most teams write first. The `ws`
// package, ioredis pub/sub with a channel per board (every frame goes through Redis, as with
// Socket.IO's Redis adapter), and an in-process presence map. It implements only the subset of
// the boardcast wire contract the load generator uses.
//
//   node server.mjs --port 9191 --secret S --redis redis://127.0.0.1:6379/
import { createHmac, timingSafeEqual } from "node:crypto";
import { WebSocketServer } from "ws";
import Redis from "ioredis";

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, v, i, all) => (i % 2 ? acc : [...acc, [v.replace(/^--/, ""), all[i + 1]]]), []));
const port = Number(args.port || 9191);
const secret = args.secret || "";
const pub = new Redis(args.redis || "redis://127.0.0.1:6379/");
const sub = new Redis(args.redis || "redis://127.0.0.1:6379/");
const boards = new Map(); // board -> { members: Map<sid, { user, ws }> }
let nextSid = 1;

function verify(token) {
  const [h, p, s] = String(token).split(".");
  if (!s) return null;
  const expected = createHmac("sha256", secret).update(`${h}.${p}`).digest();
  const given = Buffer.from(s, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  return claims.sub && claims.exp * 1000 > Date.now() ? claims : null;
}

function publish(board, frame, except) {
  pub.publish(`ch:${board}`, JSON.stringify({ except, frame }));
}

sub.on("message", (channel, message) => {
  const board = boards.get(channel.slice(3));
  if (!board) return;
  const { except, frame } = JSON.parse(message);
  for (const [sid, member] of board.members) if (sid !== except) member.ws.send(frame);
});

const wss = new WebSocketServer({ port, host: "127.0.0.1" });
wss.on("connection", (ws, req) => {
  const url = new URL(req.url, "http://x");
  const boardId = decodeURIComponent(url.pathname.replace(/^\/ws\//, ""));
  const claims = verify(url.searchParams.get("token"));
  if (!claims) return ws.close(4001);
  const user = claims.sub;
  const sid = nextSid++;
  let board = boards.get(boardId);
  if (!board) {
    board = { members: new Map() };
    boards.set(boardId, board);
    sub.subscribe(`ch:${boardId}`);
  }
  const users = [...new Set([...board.members.values()].map((m) => m.user))].map((u) => ({ userId: u, user: { name: u, avatar: null }, color: "#000000", cursor: null, status: "active" }));
  pub.get(`seq:${boardId}`).then((seq) => {
    ws.send(JSON.stringify({ type: "board.snapshot", payload: { boardId, seq: Number(seq || 0), self: { userId: user, sessionId: String(sid), color: "#000000" }, users, items: [], values: [], resync: false } }));
    board.members.set(sid, { user, ws });
    publish(boardId, JSON.stringify({ type: "presence.join", payload: { userId: user, user: { name: user, avatar: null }, color: "#000000" } }), sid);
  });
  ws.on("message", async (data) => {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    switch (frame.type) {
      case "cursor.move":
        publish(boardId, JSON.stringify({ type: "cursor.move", payload: { userId: user, position: frame.payload?.position ?? null } }), sid);
        break;
      case "ping":
        ws.send(JSON.stringify({ type: "pong", payload: frame.payload ?? {} }));
        break;
      case "item.created": case "item.updated": case "item.moved": case "item.deleted": case "value.set": {
        const seq = await pub.incr(`seq:${boardId}`);
        publish(boardId, JSON.stringify({ type: frame.type, payload: { ...frame.payload, userId: user, version: seq }, seq }), sid);
        ws.send(JSON.stringify({ type: "ack", payload: { id: frame.id, seq, version: seq } }));
        break;
      }
    }
  });
  ws.on("close", () => {
    board.members.delete(sid);
    if (![...board.members.values()].some((m) => m.user === user)) {
      publish(boardId, JSON.stringify({ type: "presence.leave", payload: { userId: user } }), sid);
    }
  });
});
wss.on("listening", () => console.error(`node reference listening on port ${port}`));
