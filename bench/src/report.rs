//! Turns the JSON lines of a benchmark run into `docs/benchmarks.md`.

use std::fmt::Write;

use serde_json::Value;

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1_048_576.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem:.0} GiB memory, Linux {}",
        kernel.trim()
    )
}

/// The label of the runs that compare the encodings on one boardcast process.
const ENCODINGS: &str = "boardcast-encodings";

/// The encodings section: bytes per message, then `cursors` in JSON, MessagePack and mixed
/// rooms, run back to back against one process.
fn encodings(out: &mut String, runs: &[Value]) {
    let sizes = runs.iter().find(|r| r["scenario"] == "sizes");
    let cursors: Vec<&Value> = runs
        .iter()
        .filter(|r| r["scenario"] == "cursors" && r["target"] == ENCODINGS)
        .collect();
    if sizes.is_none() && cursors.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Encodings: JSON and MessagePack\n");
    if let Some(sizes) = sizes {
        let _ = writeln!(out, "Bytes of one message on the wire (WebSocket payload; the frame header adds 2 to 4, and a client's mask 4 more). Cursor positions are whole numbers, as the browser client sends them.\n");
        let _ = writeln!(out, "| message | client sends, JSON | client sends, MessagePack | session receives, JSON | session receives, MessagePack | received, MessagePack / JSON |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for m in sizes["messages"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {:.2} |",
                m["message"].as_str().unwrap_or(""),
                m["json_sent"],
                m["msgpack_sent"],
                m["json_received"],
                m["msgpack_received"],
                f(m, &["msgpack_received"]) / f(m, &["json_received"]).max(1.0)
            );
        }
    }
    if !cursors.is_empty() {
        let _ = writeln!(out, "\n`cursors` against one embedded boardcast process, the three runs back to back at the same load. Mixed: every other session of each room speaks MessagePack, so each cursor move is encoded twice per room, once per encoding.\n");
        let _ = writeln!(out, "| sessions speak | boards | offered deliveries/s | delivered | bytes per delivery | p50 ms | p99 ms | server CPU s / million | loadgen CPU s |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for r in &cursors {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.4} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} |",
                r["encoding"].as_str().unwrap_or("json"),
                r["boards"],
                f(r, &["offered_per_s"]),
                f(r, &["delivered_ratio"]),
                f(r, &["bytes_per_delivery"]),
                f(r, &["latency", "p50"]),
                f(r, &["latency", "p99"]),
                f(r, &["server_cpu_s_per_million"]),
                f(r, &["usage", "loadgen_cpu_s"])
            );
        }
        let of = |name: &str| cursors.iter().find(|r| r["encoding"] == name);
        if let (Some(json), Some(packed)) = (of("json"), of("msgpack")) {
            let cpu = |r: &Value| f(r, &["server_cpu_s_per_million"]);
            let bytes = |r: &Value| f(r, &["bytes_per_delivery"]);
            let mixed = of("mixed").map_or(String::new(), |m| {
                format!(", mixed rooms {:.2}×", cpu(m) / cpu(json).max(1e-9))
            });
            let _ = writeln!(out, "\nMessagePack delivers a cursor move in {:.2}× the bytes of JSON; server CPU per delivery is {:.2}× JSON's{mixed}. The server builds each frame once as JSON (the broker's form too) and re-encodes it once per room for its MessagePack sessions.", bytes(packed) / bytes(json).max(1e-9), cpu(packed) / cpu(json).max(1e-9));
        }
    }
}

/// The Markdown report for `lines` (one JSON object per line).
pub fn markdown(lines: &str) -> String {
    let runs: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |scenario: &str, target: &str| {
        runs.iter()
            .find(|r| r["scenario"] == scenario && r["target"] == target)
    };
    let mut out = String::new();
    let _ = writeln!(out, "# boardcast benchmarks\n");
    let _ = writeln!(out, "Generated by `bench/run.sh` on {}. The load generator (`target/release/loadgen`) runs on the same machine and shares its cores; its own CPU is reported. Every target is on loopback.\n", machine());
    let _ = writeln!(out, "Targets: **boardcast** (embedded unless noted), **relay** (`bench/src/bin/relay.rs`: tokio + tungstenite, no actors, serialize once, bounded queues; the ceiling), **node** (`bench/peers/node/server.mjs`: `ws` + `ioredis` pub/sub per board + in-process presence, the server most teams write first).\n");

    let _ = writeln!(out, "## The load generator\n");
    let _ = writeln!(out, "`cursors` paces every socket from one timer and, by default, sends the moves of a board's users together, boards spread evenly over the 50 ms interval (`--spread board`); `--spread socket` gives each socket an instant of its own, the way unsynchronized browsers send. It runs on two threads, so that the receptions of a board's burst do not all wait behind each other on one. Its sockets are a lean WebSocket client (`bench/src/lean.rs`): a socket's bytes are read into one buffer without zero-filling, frames are handed out as slices of it, and cursor moves are read with a scanner instead of a JSON parser; a receive is timed when its read returns. Its CPU is counted over the measured window plus 1.5 s of grace, like the server's.\n");
    if let Some(r) = runs
        .iter()
        .find(|r| r["scenario"] == "cursors" && r["target"] == "relay" && r["spread"] == "board")
    {
        let cores = f(r, &["usage", "loadgen_cpu_s"]) / (f(r, &["seconds"]) + 1.5);
        let _ = writeln!(out, "Against the relay at {:.0} deliveries/s it reported p50 {:.2} ms and p99 {:.2} ms and used {cores:.2} of a core (the relay {:.2} cores). The generator it replaces reported 0.85 delivered and p99 2.2 s at this load while using 0.6 core: it copied, allocated, UTF-8 checked and JSON parsed every frame through tungstenite, zero-filled 8 KiB per read, kept a timer per socket, and the relay wrote each frame with a write of its own (it now writes what queued meanwhile in one, as boardcast does).\n", f(r, &["offered_per_s"]), f(r, &["latency", "p50"]), f(r, &["latency", "p99"]), f(r, &["usage", "server_cpu_s"]) / (f(r, &["seconds"]) + 1.5));
    }

    let _ = writeln!(out, "## cursors: boards × users × 20 Hz\n");
    let _ = writeln!(out, "| target | instances | boards × users | spread | offered deliveries/s | delivered | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU s / million | server RSS MiB | loadgen CPU s |");
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs
        .iter()
        .filter(|r| r["scenario"] == "cursors" && r["target"] != ENCODINGS)
    {
        let _ = writeln!(
            out,
            "| {} | {} | {} × {} | {} | {:.0} | {:.4} ({}/{}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
            r["target"].as_str().unwrap_or(""), r["instances"], r["boards"], r["users"], r["spread"].as_str().unwrap_or("board"), f(r, &["offered_per_s"]),
            f(r, &["delivered_ratio"]), r["received"], r["expected"], f(r, &["latency", "p50"]), f(r, &["latency", "p90"]),
            f(r, &["latency", "p99"]), f(r, &["latency", "p999"]), f(r, &["latency", "max"]),
            f(r, &["server_cpu_s_per_million"]), f(r, &["usage", "server_rss_mib"]), f(r, &["usage", "loadgen_cpu_s"])
        );
    }
    let cpu = |t: &str| of("cursors", t).map(|r| f(r, &["server_cpu_s_per_million"]));
    let _ = writeln!(
        out,
        "\nThe server CPU of `boardcast-redis-x2` counts both instances and Redis; that of \
         `boardcast-redis-cluster-x2` (two instances on a Redis Cluster of three masters and \
         three replicas, sharded pub/sub) both instances and the six cluster nodes."
    );
    cluster_beside_one_redis(&mut out, &runs);
    if let (Some(b), Some(relay), Some(node)) = (cpu("boardcast"), cpu("relay"), cpu("node")) {
        let _ = writeln!(out, "\nServer CPU per million deliveries: boardcast is **{:.2}×** the relay's (target ≤ 1.3×) and **{:.2}×** the Node reference's (target ≤ 0.33×).", b / relay.max(1e-9), b / node.max(1e-9));
    }

    let _ = writeln!(out, "\n## Saturation\n");
    let _ = writeln!(out, "The highest `cursors` load (boards × 20 users × 20 Hz) at which every delivery was made and p99 stayed ≤ 50 ms.\n");
    let _ = writeln!(
        out,
        "| target | highest load kept (deliveries/s) | at boards | first load that failed |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let mut kept = std::collections::HashMap::new();
    for target in ["boardcast", "relay", "node", "boardcast-redis-x2"] {
        let label = format!("{target}-saturation");
        let steps: Vec<&Value> = runs
            .iter()
            .filter(|r| r["target"] == label.as_str())
            .collect();
        let ok = |r: &Value| f(r, &["delivered_ratio"]) >= 1.0 && f(r, &["latency", "p99"]) <= 50.0;
        let best = steps
            .iter()
            .filter(|r| ok(r))
            .map(|r| (f(r, &["offered_per_s"]), r["boards"].clone()))
            .fold(None, |a: Option<(f64, Value)>, b| match a {
                Some(a) if a.0 >= b.0 => Some(a),
                _ => Some(b),
            });
        let failed = steps.iter().find(|r| !ok(r)).map(|r| {
            format!(
                "{} boards: delivered {:.4}, p99 {:.1} ms",
                r["boards"],
                f(r, &["delivered_ratio"]),
                f(r, &["latency", "p99"])
            )
        });
        if let Some((load, boards)) = &best {
            kept.insert(target, *load);
            let _ = writeln!(
                out,
                "| {target} | {load:.0} | {boards} | {} |",
                failed.unwrap_or_else(|| "none within the steps tried".into())
            );
        } else if !steps.is_empty() {
            let _ = writeln!(
                out,
                "| {target} | below the first step | – | {} |",
                failed.unwrap_or_default()
            );
        }
    }
    if let Some(b) = kept.get("boardcast") {
        let ratio = |t: &str| {
            kept.get(t)
                .map_or("n/a".to_string(), |v| format!("{:.2}", b / v))
        };
        let _ = writeln!(out, "\nRatio of boardcast's saturation load: to the relay **{}** (aim ≥ 0.8), to the Node reference **{}** (aim ≥ 3; a lower bound when the relay or boardcast never failed within the steps).", ratio("relay"), ratio("node"));
        if let Some(x2) = kept.get("boardcast-redis-x2") {
            let _ = writeln!(out, "\nTwo instances with Redis against one embedded instance: **{:.2}×** its saturation load.", x2 / b);
        }
    }

    encodings(&mut out, &runs);

    let _ = writeln!(out, "\n## idle: memory per connection\n");
    let _ = writeln!(out, "| target | connections | boards | connects/s | RSS before MiB | RSS after MiB | bytes per connection |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in runs.iter().filter(|r| r["scenario"] == "idle") {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} |",
            r["target"].as_str().unwrap_or(""),
            r["connections"],
            r["boards"],
            f(r, &["connect_per_s"]),
            f(r, &["rss_before_mib"]),
            f(r, &["rss_after_mib"]),
            f(r, &["bytes_per_connection"])
        );
    }

    let _ = writeln!(out, "\n## durable: `value.set` with acks\n");
    let _ = writeln!(out, "| target | instances | boards × writers (depth) | acked/s | p50 ms | p99 ms | p99.9 ms | seq gaps | errors | server CPU s |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in runs.iter().filter(|r| r["scenario"] == "durable") {
        let _ = writeln!(
            out,
            "| {} | {} | {} × {} ({}) | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} |",
            r["target"].as_str().unwrap_or(""),
            r["instances"],
            r["boards"],
            r["writers"],
            r["depth"],
            f(r, &["acks_per_s"]),
            f(r, &["latency", "p50"]),
            f(r, &["latency", "p99"]),
            f(r, &["latency", "p999"]),
            r["seq_gaps"],
            r["errors"],
            f(r, &["usage", "server_cpu_s"])
        );
    }

    let _ = writeln!(out, "\n## churn: sessions joining and leaving\n");
    let _ = writeln!(out, "| target | sessions | transitions/s per observer | join seen p50 ms | p99 ms | max ms | failures |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in runs.iter().filter(|r| r["scenario"] == "churn") {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
            r["target"].as_str().unwrap_or(""),
            r["sessions"],
            f(r, &["transitions_per_s"]),
            f(r, &["join_seen", "p50"]),
            f(r, &["join_seen", "p99"]),
            f(r, &["join_seen", "max"]),
            r["failures"]
        );
    }

    let _ = writeln!(
        out,
        "\n## reconnect: the users of a dead instance come back at once\n"
    );
    let _ = writeln!(out, "Two boardcast instances with Redis; sessions on the first, an observer per board on the second. The first is killed with SIGKILL and every session reconnects to the second at once.\n");
    let _ = writeln!(out, "| target | sessions | boards | all snapshots after ms | snapshot p50 ms | p99 ms | presence right after ms | wrong boards | failures |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in runs.iter().filter(|r| r["scenario"] == "reconnect") {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            r["target"].as_str().unwrap_or(""),
            r["sessions"],
            r["boards"],
            f(r, &["all_snapshots_ms"]),
            f(r, &["snapshot", "p50"]),
            f(r, &["snapshot", "p99"]),
            f(r, &["presence_right_ms"]),
            r["wrong_boards"],
            r["failures"]
        );
    }

    let _ = writeln!(out, "\n## The targets\n");
    let _ = writeln!(out, "| target | measured | met |");
    let _ = writeln!(out, "|---|---|---|");
    let mut verdict = |what: &str, measured: String, met: bool| {
        let _ = writeln!(
            out,
            "| {what} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    };
    let heaviest = |target: &str| {
        runs.iter()
            .filter(|r| {
                r["scenario"] == "cursors" && r["target"] == target && r["spread"] != "socket"
            })
            .max_by(|a, b| f(a, &["offered_per_s"]).total_cmp(&f(b, &["offered_per_s"])))
    };
    if let Some(r) = heaviest("boardcast") {
        let (ratio, p99) = (f(r, &["delivered_ratio"]), f(r, &["latency", "p99"]));
        verdict(
            &format!(
                "cursors {:.0}/s: every delivery, p99 ≤ 10 ms",
                f(r, &["offered_per_s"])
            ),
            format!("delivered {ratio:.4}, p99 {p99:.1} ms"),
            ratio >= 1.0 && p99 <= 10.0,
        );
    }
    if let (Some(b), Some(relay), Some(node)) = (cpu("boardcast"), cpu("relay"), cpu("node")) {
        verdict(
            "server CPU per million ≤ 1.3× the relay's",
            format!("{:.2}×", b / relay.max(1e-9)),
            b <= 1.3 * relay,
        );
        verdict(
            "server CPU per million ≤ 1/3 of the Node reference's",
            format!("{:.2}×", b / node.max(1e-9)),
            b <= node / 3.0,
        );
    }
    if let Some(b) = kept.get("boardcast") {
        if let Some(relay) = kept.get("relay") {
            verdict(
                "saturation ≥ 0.8× the relay's",
                format!("{:.2}×", b / relay),
                b / relay >= 0.8,
            );
        }
        if let Some(node) = kept.get("node") {
            verdict(
                "saturation ≥ 3× the Node reference's",
                format!("{:.2}×", b / node),
                b / node >= 3.0,
            );
        }
    }
    let idle = |t: &str| {
        of("idle", t).map(|r| {
            (
                f(r, &["bytes_per_connection"]),
                r["connections"].as_u64().unwrap_or(0),
            )
        })
    };
    if let (Some((b, n)), Some((node, _))) = (idle("boardcast"), idle("node")) {
        verdict(
            &format!("idle: bytes per connection ≤ the Node reference's ({n} connections)"),
            format!("{b:.0} vs {node:.0} ({:.2}×)", b / node.max(1.0)),
            b <= node,
        );
        verdict(
            "idle: bytes per connection ≤ half the Node reference's (the aim)",
            format!("{b:.0} vs {:.0}", node / 2.0),
            b <= node / 2.0,
        );
        verdict(
            "idle: 50,000 connections on one instance",
            format!("{n} (the open-file limit of the machine)"),
            n >= 50_000,
        );
    }
    if let Some(r) = runs
        .iter()
        .find(|r| r["scenario"] == "cursors" && r["target"] == "relay" && r["spread"] == "board")
    {
        let cores = f(r, &["usage", "loadgen_cpu_s"]) / (f(r, &["seconds"]) + 1.5);
        let p99 = f(r, &["latency", "p99"]);
        verdict(
            &format!(
                "load generator against the relay at {:.0}/s: p99 around 1 ms, about half a core",
                f(r, &["offered_per_s"])
            ),
            format!("p99 {p99:.2} ms, {cores:.2} core"),
            p99 <= 2.0 && cores <= 0.55,
        );
    }
    for r in runs
        .iter()
        .filter(|r| r["scenario"] == "cursors" && r["target"] == "boardcast-redis-x2")
    {
        let (ratio, p99) = (f(r, &["delivered_ratio"]), f(r, &["latency", "p99"]));
        let limit = if r["users"] == 30 { 50.0 } else { 10.0 };
        verdict(
            &format!(
                "two instances + Redis, cursors {:.0}/s: every delivery, p99 ≤ {limit} ms",
                f(r, &["offered_per_s"])
            ),
            format!("delivered {ratio:.4}, p99 {p99:.1} ms"),
            ratio >= 1.0 && p99 <= limit,
        );
    }
    let same_load = |t: &str| {
        runs.iter().find(|r| {
            r["scenario"] == "cursors"
                && r["target"] == t
                && r["users"] == 20
                && r["spread"] == "board"
                && r["boards"]
                    == runs
                        .iter()
                        .find(|r| r["target"] == "boardcast")
                        .map_or(Value::Null, |b| b["boards"].clone())
        })
    };
    if let (Some(x2), Some(one)) = (same_load("boardcast-redis-x2"), same_load("boardcast")) {
        let ratio =
            f(x2, &["server_cpu_s_per_million"]) / f(one, &["server_cpu_s_per_million"]).max(1e-9);
        verdict(
            "Redis mode CPU per million deliveries (instances + Redis) ≤ 1.5× the embedded one",
            format!("{ratio:.2}×"),
            ratio <= 1.5,
        );
    }
    for t in ["boardcast", "boardcast-redis"] {
        if let Some((b, n)) = idle(t) {
            verdict(
                &format!("idle, {t}: ≤ 4 KiB per connection ({n} connections)"),
                format!("{b:.0} bytes"),
                b <= 4096.0,
            );
        }
    }
    let connects = |t: &str| of("idle", t).map(|r| f(r, &["connect_per_s"]));
    if let (Some(b), Some(relay)) = (connects("boardcast"), connects("relay")) {
        verdict(
            "connect rate ≥ 0.9× the relay's",
            format!("{b:.0}/s vs {relay:.0}/s ({:.2}×)", b / relay.max(1e-9)),
            b >= 0.9 * relay,
        );
    }
    if let (Some(x), Some(b)) = (connects("boardcast-redis"), connects("boardcast")) {
        verdict(
            "connect rate with Redis ≥ 0.7× the embedded one",
            format!("{x:.0}/s vs {b:.0}/s ({:.2}×)", x / b.max(1e-9)),
            x >= 0.7 * b,
        );
    }
    for r in runs
        .iter()
        .filter(|r| r["scenario"] == "durable" && r["target"] == "boardcast" && r["writers"] == 4)
    {
        let (rate, p99) = (f(r, &["acks_per_s"]), f(r, &["latency", "p99"]));
        verdict(&format!("durable, embedded with SQLite at SYNC=normal ({} boards × {} writers, depth {}): ≥ 20,000 acks/s, p99 ≤ 20 ms, gap-free", r["boards"], r["writers"], r["depth"]), format!("{rate:.0}/s, p99 {p99:.1} ms, gaps {}", r["seq_gaps"]), rate >= 20_000.0 && p99 <= 20.0 && r["seq_gaps"] == 0);
    }
    for r in runs
        .iter()
        .filter(|r| r["scenario"] == "durable" && r["target"] == "boardcast-redis-x2")
    {
        let (rate, p99) = (f(r, &["acks_per_s"]), f(r, &["latency", "p99"]));
        let aim = if r["depth"] == 4 { 20_000.0 } else { 5_000.0 };
        verdict(&format!("durable through Redis ({} boards × {} writers, depth {}): ≥ {aim:.0} acks/s, p99 ≤ 20 ms, gap-free", r["boards"], r["writers"], r["depth"]), format!("{rate:.0}/s, p99 {p99:.1} ms, gaps {}", r["seq_gaps"]), rate >= aim && p99 <= 20.0 && r["seq_gaps"] == 0);
    }

    for r in runs.iter().filter(|r| r["scenario"] == "reconnect") {
        let all = f(r, &["all_snapshots_ms"]);
        verdict(
            &format!("reconnect: {} sessions on {} boards have their snapshots and the right presence within seconds", r["sessions"], r["boards"]),
            format!("snapshots after {:.1} s, wrong boards {}, failures {}", all / 1000.0, r["wrong_boards"], r["failures"]),
            all <= 10_000.0 && r["wrong_boards"] == 0 && r["failures"] == 0,
        );
    }

    let _ = writeln!(out, "\n## Reading the misses\n");
    let _ = writeln!(out, "Written from the profiles and the reports of 2, 3 and 7 December 2026, back-to-back runs on 7 and 8 December, and the run of the tables above (late on 8 December). Figures vary by ±20% between runs on this machine, and far more between days: this run measured the relay at 220,553 durable acks/s and 1.03 s of CPU per million cursor deliveries, against 135,154 and 1.43 in the report of 3 December and 71,080 and 2.13 in that of 7 December. The ratios to the relay and the Node reference, measured in the same run, are the ones to compare between reports. Missed in this run: the Redis mode's CPU per delivery against the embedded one (2.10×; 1.5× asked), its connect rate against the embedded one (0.59×; 0.7× asked), idle memory at half the Node reference's (the aim) and 50,000 connections (the machine's open-file limit is 20,000). Met in this run and missed in that of 7 December: cursors at 380k/s on one instance, the load generator against the relay, both cursor loads on two instances with Redis, durable operations embedded and through Redis, idle memory embedded, and (missed in a run earlier on 8 December, before the last change to cursor delivery) boardcast's CPU per cursor delivery and connect rate against the relay's.\n");
    let misses = [
        "**The load generator against the relay.** Met in this run: p99 0.85 ms at 380k deliveries/s, at 0.27 core (the relay using 0.34). Over the runs of 3 December p99 was 1.4 to 2.5 ms at 0.4 to 0.5 core, and on the slower machine of 7 December 3.62 ms at 0.59 core. What moves it is the two cores: the relay (0.6 to 0.7 core), the load generator (0.5) and the kernel's loopback work for both share them, and a board's burst (20 sends, then 380 receptions) waits for a thread of the generator. On one thread the generator reported p99 3.7 to 5.7 ms at 0.43 core.",
        "**cursors at 380k deliveries/s, one instance, and its CPU against the relay's.** Every delivery at p99 0.91 ms in this run (3.0 ms on 3 December; 21 to 76 ms on 7 December, on a machine three times slower). CPU per delivery: 1.01× the relay's in this run (1.04 against 1.03 s per million; 1.3× asked), 1.15× at the same load in the saturation series of the same run (1.02 against 0.89); 1.34× in a run earlier on 8 December, 1.32× on 3 December. Both write what queued meanwhile in one write (about 8 deliveries a write for boardcast, `perf stat` of its syscalls on 8 December), and what boardcast adds is its actors: a room mailbox turn, a session mailbox per delivery. A profile on 8 December at 380k/s (`perf record -g`, 5 s) puts 62% of boardcast's time in the kernel (TCP sends and, on loopback, the receiver's side of them; the scheduler) and finds its own code flat: the session's handling of a delivery 3%, mimalloc 5%, actix's mailbox send 2%, the room's fan-out 1%. Since that earlier run a room sends each session the cursor moves of one turn of its mailbox as one message (at most 32) instead of one message a move: back to back at this load, 1.045 to 1.187 s of CPU per million deliveries against 1.111 to 1.308 before (3 to 10% less in three pairs of four, 7% more in the fourth); with two instances and Redis no difference beyond the noise.",
        "**Unsynchronized senders (`--spread socket`).** With every socket sending at its own instant, fewer frames share a write (one per delivery at the extreme), and both servers spend more than twice the CPU per delivery (this run: 2.99 s per million for boardcast and 3.03 for the relay, against 1.04 and 1.03 with the default spread), the cores saturate at 380k/s and p99 rises, the relay's as well as boardcast's (9.5 and 15.2 ms in this run, 60 to 100 ms on slower days). In a run earlier on 8 December boardcast delivered all but 19 of 3.8 million moves, superseded by newer ones of the same user (the 50 ms pacing and a full mailbox both keep only a user's newest move). Real browsers are unsynchronized, but a busy board's moves are throttled to 20 Hz per user, so they come in bursts per turn of the room; the default spread measures that case.",
        "**Two instances with Redis.** Both cursor loads are met in this run: 870k/s with every delivery at p99 15.2 ms, 380k/s at p99 2.1 ms (on 7 December, on the slower machine, 0.83 and 0.91 delivered). The CPU is not: instances and Redis together cost 2.10× the embedded instance per delivery at 380k/s (2.19 against 1.04 s per million; 1.5× asked; 1.86× in a run earlier on 8 December, before the embedded instance got cheaper, and 1.5 to 2.1× in the reports before), less at a higher load, where batches grow (1.45 s per million at 870k/s). Before the report of 3 December each ephemeral event was a PUBLISH of its own, in a task spawned on the broker, and under a load the instances could not keep up with those tasks piled up without bound (4 GB per instance within 12 s at 380k/s); events now go to Redis in batches, one pipeline in flight, a board's run of events as one message, bounded by `REDIS_PUBLISH_BACKLOG` (dropped and counted past it). Where the rest goes, measured back to back on 8 December at 380k/s: Redis mode cost more even on one instance, where every delivery is local (1.51 to 1.67 s per million against 1.13 embedded), because its rooms handed each event for other instances to the broker, on the main thread, as a message of its own, waking that thread thousands of times a second. A room now hands over the events of one turn of its mailbox as one message: one instance with Redis 1.30 to 1.36 s per million after; two instances 2.23 to 2.49 before and 2.13 to 2.25 after, Redis's share 0.27 to 0.29 before and 0.23 after. On two instances, per instance (`perf stat`, 5 s, its half of the deliveries): 5.0 deliveries a write against 8.0 embedded, and per delivery 4.4 times the epoll waits and 4.6 times the context switches. A board's moves reach a session in two turns (its room's own moves, then the other instance's a Redis hop later); every message also comes back to the instance that published it (Redis cannot leave the publisher out; it is dropped before decoding); and each instance's threads (the main thread with the broker, two workers) sleep and wake between bursts, six threads of two instances on two cores. A call-graph profile of an instance puts 16% of its time in the switch after epoll's sleep and 5% in waking its other threads. With one worker per instance (`WORKERS=1`, as if each had a core of its own) the same load measured 1.72 to 1.85 s per million for the instances against 2.32 to 2.57 with two workers each (Redis's 0.28 more in both; before the change above), and at 870k/s 1.13 to 1.20 against 1.34 to 1.37; the suite runs every target with the default of a worker per core. In the report of 3 December a run right after an overloaded 870k/s one on the same processes measured worse (cause not found); `bench/run.sh` runs each Redis scenario on two fresh instances, so that no figure depends on the run before it.",
        "**Idle memory.** Met in this run: 3,939 bytes per connection embedded and 3,888 with Redis (4,213 and 3,796 on 7 December, 7.7 and 6.7 KiB on 3 December); half the Node reference's (2,893 bytes), the aim, is not. The report of 3 December was the first with mimalloc (its size classes round allocations up more than glibc's: 0 to 9% more); 5.6 KiB in the report before every session also became a member of its tenant's workspace. A heap profile on 7 December (heaptrack, the system allocator, 2,000 idle connections on 200 boards) found most of it in a few places, since cut; each step was measured back to back on 19,000 connections (the growth of the server's resident memory a connection, two runs each, ±0.3 KiB between runs). The connection's task was 2.6 KiB because `pump` was an `async fn`, which keeps its arguments apart from the locals they move into, so the session and its WebSocket context (about 1 KiB) were in it twice: 7.3 -> 5.8 to 6.1 KiB embedded, 6.7 to 6.9 -> 5.3 to 5.6 with Redis. Presence kept each user's id twice and the color as text in each of its two maps, and the broker a map of each user's sessions: 0.1 to 0.3 KiB. Each clone of an actix address allocates its own parking state (about 80 bytes) and a recipient adds a box; a session handed out three recipients and held two clones. One shared recipient and the registry's shared addresses: 5.5 to 5.7 -> 5.0 to 5.3 KiB (5.2 to 5.5 -> 4.6 to 4.9 with Redis). Boxing what few sessions use for long (the resume point, frames waiting for the board's first one, a fragmented message) brought the session from 520 to 432 bytes and its task into the allocator's 1,280-byte class (4.6 to 5.0 KiB), and one timer for the heartbeat and the token's expiry instead of two saves about 0.1 KiB. At the end of that day: 4.4 to 4.8 KiB embedded and 4.3 to 4.5 with Redis (three runs each). What an idle embedded connection then holds (heaptrack): its task 1.28 KiB (the session's 432 bytes, its actix and WebSocket contexts and codec, the writer's state), the runtime's I/O registration 0.25, presence 0.46 (its user in the board's and the workspace's maps), the workspace's entries 0.41 (its member and who is online), the room's 0.26, the broker's 0.22 (its user's sessions), the WebSocket context's mailbox 0.22, the context's frame queue 0.15 (kept at the size the first frames grew it to), its timer 0.12 and its address 0.07. Later that day four more cuts, each measured as the heap at 2,000 idle connections (heaptrack), as the resident memory moves by ±0.3 KiB from run to run: a workspace keeps who is online in its tenant only once one of its sessions asks for the workspace frames (the idle load does not ask; 9.47 -> 9.02 MB); user events cross Redis on the tenant's workspace channel instead of a channel per user, so a connection no longer costs a Redis subscription and its `SUBSCRIBE` (4.5 to 4.6 -> 4.0 to 4.1 KiB with Redis, resident); a session's name and avatar are one shared copy for its room, its workspace and its two presence entries, presence keys are boxed ids and a room member's join queue is boxed (8.99 -> 8.31 MB); and the heartbeat is a tick each workspace sends its sessions, in 16 groups spread over the tick, instead of a timer in every session (8.31 -> 7.92 MB). After them, three runs each on 7 December: 3.7 to 4.2 KiB embedded and 3.8 to 4.0 KiB with Redis, against a heap of 3.4 KiB a connection (heaptrack, 19,000 connections, the system allocator); the rest is the allocator's size classes and partly used pages. What that heap holds a connection: the task 1.25 KiB, the runtime's I/O registration 0.25, presence 0.29 (the board's and the workspace's entries), the WebSocket context's frame queue 0.16, the room's member 0.15 and, at ten connections a board, the room actor 0.11 and the board's state 0.08, what the session shares with its holders 0.14 (its recipient, name and avatar), the workspace's member 0.14, the context's mailbox 0.11 and its input stream 0.11, the broker's entry for user events 0.10, the address 0.07. Then the room, the workspace and both presence entries share one copy of the user id (about 24 bytes a connection less with ids this short; more with longer ones). What is left is mostly actix's and tokio's: a smaller task needs a smaller session (432 bytes; the task sits in the allocator's 1,280-byte class and the next one down is 1,024), and the frame queue would have to give its memory back, which actix-web-actors' context does not. On 8 December two more cuts, each measured on 19,000 connections, four runs each back to back. mimalloc is built without transparent huge pages (`no_thp`): the kernel here grants them on request, mimalloc asked for them, and its arenas became 2 MiB pages, 16 MiB resident before the first connection (28 MiB at start against 14 without) and partly used after: 4,202 to 4,313 -> 3,938 to 4,004 bytes a connection, with the CPU and p99 of the cursors load unchanged. And a present user is 32 bytes beside its key instead of 48 and a list on the heap (its first session inline, its arrival number 32-bit): 3,937 to 3,988 -> 3,869 to 3,941. The run holds 19,000 connections, the machine's open-file limit (20,000) less a margin.",
        "**Connect rates.** This run: the relay 11,907 connects/s, boardcast 11,050/s (0.93×: met) and boardcast with Redis 6,549/s (0.59× the embedded rate; 0.7× asked). A run earlier on 8 December: the relay 10,762/s, boardcast 9,439/s (0.88×), with Redis 7,453/s (0.79×). With Redis a connection also waits for its board's presence script and a read through Redis (below); this run's Redis-mode figure was not profiled. Back to back on 8 December (19,000 connections, three runs each): the relay 10,249 to 10,566/s at 125 to 129 µs of CPU a connection, boardcast 8,929 to 11,222/s at 165 to 170 µs; two of 21 runs of boardcast that day came out at about 2,000/s (1,787 and 2,349/s), and in a later series the relay too (4,960/s): each came after idle runs back to back had left 34,000 sockets in TIME_WAIT, whose ports the load generator's binds counted as taken. Since, it lets the kernel choose a socket's port at connect (`IP_BIND_ADDRESS_NO_PORT`), where a port only needs to be free for that destination: ten runs alternating the relay and boardcast, with 47,000 sockets in TIME_WAIT, measured 11,897 to 12,540/s and 10,139 to 11,095/s (0.84× to 0.93× pair by pair). This run is the first with it; the suite's idle runs are minutes apart in any case. On 7 December, on the slower machine: the relay 5,796/s, boardcast 3,536/s (0.61×), with Redis 2,862/s. The connects/s of the report of 3 December were the load generator's: it bound up to 25,000 connections to one loopback source address, and once about half of a source's ephemeral ports are taken, each bind's search for a free one costs the kernel far more (34 to 46 s of the generator's kernel CPU for 19,000 connections, about 700 connects/s; 2.6 s and about 4,000/s with the same server and 14,000 connections or fewer per address). Since 7 December it uses 5,000 connections per address. With it, on 7 December: a full run of `bench/run.sh` (on a day this machine measured the relay's durable rate at 0.57× that of 3 December; its tables are not the ones above) measured the relay at 5,618 connects/s, boardcast at 3,242/s (0.58×) and boardcast with Redis at 2,593/s (0.80× the embedded rate: met); back-to-back runs the same day measured 4,560 and 4,783/s for the relay, 3,189 and 3,476/s embedded (0.70× and 0.73×), 2,229 to 3,099/s with Redis. What a boardcast connection does beyond the relay's: a session actor with its WebSocket context, a room whose board state is read from storage (each of the 1,900 boards is new), presence and the tenant's workspace; not profiled. In Redis mode a board's arrivals that come while its previous presence request is under way have gone in one script since 7 December; the idle load opens 128 connections at a time on 128 different boards, so nothing batches there, but a dead instance's users coming back do (`reconnect`). Then a profile of 10,000 connects (`perf record -g`) put 9% of the server's CPU in the workspace sending each user's arrival by looking at every session of the tenant (only those that asked for workspace frames take it) and 5% in picking a color by counting the colors of every present user of the tenant's workspace; both now cost the same for a tenant of thousands as for one of two. Back to back on 7 December, 19,000 connections: 3,191 to 3,873 connects/s before, 3,883 to 5,044/s after, with 7.3 to 8.8 s of server CPU before and 5.5 to 7.4 s after; the relay, in runs beside them, 4,410 and 4,570/s (0.85× and 0.88×). Redis mode gained less (its presence is Redis's): 2,514 and 2,767/s in the runs beside the embedded 4,039 and 4,038/s, 0.62× and 0.69×, below the 0.7× asked again; a connection there waits for a presence script on its board, a read of the board through Redis and its workspace's batch. Later that day the read no longer waits for the presence answer (sessions opened one after another, open to first frame: 0.94 ms median before, 0.85 to 0.89 ms after), and a board's listing reads each presence hash once instead of three fields per present user (3,000 connections on 10 boards: Redis's CPU 1.75 to 1.78 s before, 1.03 to 1.14 s after, 870 to 898 connects/s before, 964 to 1,024 after). With 10 users a board, as the idle load has, neither showed beyond the noise (the listing: 2,450 and 2,450 connects/s before, 2,360 and 2,580/s after, 10,000 connections; the read: 2,560 and 3,115/s before, 2,770 and 2,930/s after, 19,000 connections): the connects are CPU-bound on the two cores, and a profile of Redis during them is flat (its scripts' calls, hash lookups, replies). Where a connection's CPU goes, measured late on 7 December (10,000 connections on 1,000 boards, runs back to back, the process's CPU over the run): the relay 204 to 292 µs a connection, boardcast 275 to 401 µs, with Redis the instance 356 to 475 µs and Redis 166 to 197 µs more. Both servers make about six sends a connection (`perf stat` of the syscalls: the upgrade's answer, the snapshot, the presence joins of a board's others) and spend about 35% of their CPU in them (call graphs); what boardcast adds is its actors' work: admitting and upgrading 12% (of which sending the `101` answer 6.6%), the session's start and first frames 9%, the room 5%, the broker 3.5%, presence 3%, the store 2%, the workspace 1%, with 3.5 context switches and 1.2 cross-thread wake-ups (eventfd writes) a connection against the relay's 0.6 and none (presence and the broker run on the main thread, sessions on the two workers, a room on the worker of its first session). Tried and not kept: sending the `101` answer with the session's first frames in one write (about 0.5 sends a connection fewer) made no difference beyond the noise; with 128 connects in flight the snapshot came more than 10 ms after the upgrade for 38% of the connections embedded and 96% with Redis (more than 50 ms: 1.3% and 6%). In Redis, per script call (wall time from `SLOWLOG`, on the shared cores): a board's join with its listing 138 µs, a workspace's join of about four sessions 366 µs, a board's read 22 µs.",
        "**Durable, embedded with SQLite at SYNC=normal.** Missed in the reports before 3 December (p99 40 ms at 20,900 acks/s): every 1,000 WAL pages (4 MiB) the writer thread checkpointed, syncing the WAL and the database while commits waited (20 to 70 ms each). A checkpointer thread now copies the WAL beside the writer, and the writer's own checkpoint only finishes what is left and lets the WAL start over (a checkpointer alone never catches up with a busy writer, and its WAL grew without bound: 740 MB in 8 s). Standalone runs of the same load then measured 30,000 to 37,000 acks/s at p99 20 to 24 ms; the rest of the gain came from CPU: operation digests without a format per byte, a value set sizing only its cell, the load generator's durable runs on its lean client (4.3 to 2.8 s of CPU a run), and mimalloc (glibc's malloc and free were a tenth of the server's CPU). Over runs on this machine since: 39,000 to 48,000 acks/s at p99 16 to 21 ms, so p99 can still land just above 20 ms in a slow run; this run measured 89,505 acks/s at p99 7.0 ms (22,913 at p99 31 ms on 7 December, with the relay at a third of its rate in this run). `boardcast-memory` is the same path with SQLite in memory.",
        "**Redis Cluster (not a target).** Two instances on three masters and three replicas, beside the same loads on one Redis: the lines under the cursors table. Not profiled. What differs: Redis's work is spread over three processes (sharded pub/sub keeps a board's messages on its own master), and the six nodes, two instances and the load generator share the two cores.",
        "**Durable through Redis.** Met in this run: 37,554 acks/s at p99 14.4 ms (41,197 at p99 13.5 ms earlier on 8 December; 14,322 at p99 36 ms on 7 December, on a machine a third as fast; 9,550 at p99 54 ms on 3 December). A board's operations commit in batches since 7 December: one batch of a board in flight per instance, what arrives meanwhile going with the next as one read and one script call, its events one message; a session keeps up to 32 operations in flight instead of one. Back to back on 7 December (this load, two runs each): 8,040 and 8,320 acks/s at p99 92 and 81 ms before, 13,740 and 13,650 at p99 45 and 48 ms after, 3.7 operations a script call; per operation Redis's CPU went from 83 to 51 µs and the two instances' from 127 to 74 µs (`/proc` CPU times). With one operation in flight per writer there is nothing to batch, and both measured 5,700 to 6,200 acks/s. The script still costs Redis about 43 µs an operation (`INFO commandstats`, evalsha); writing the seq, the board's byte count and the operation records once per batch instead of once per operation measured no faster, so that cost is the script's work per operation (its reads, compares and log entry), not the count of its commands. In an instance (perf, frame pointers) the board rules applied to a batch take 11% of its CPU (parsing the stored item and cell, applying, serializing them again), building the read and the script call 10%, decoding the board channel's messages 5%, the kernel's TCP sends 14%. The 80 writers hold 320 operations in flight, so p99 ≤ 20 ms needs well over 16,000 acks/s (Little's law), with Redis, both instances and the load generator on two cores: reached in this run, not on the slower machine of 7 December. Later on 7 December a board's next batch went without its read: the broker keeps what its last fully applied batch of the board left (items and cells, up to 1,024 boards of 16 KiB), stages the batch on that, and only reads when the script answers that another instance wrote meanwhile or the rules would refuse an operation (a refusal is never judged on it); HGETs per operation went from 6 to 3. Back to back that day: 11,070 to 11,490 acks/s at p99 43 to 46 ms before, 12,960 to 15,900 at p99 32 to 40 ms after, with 98 to 119 µs of CPU per operation (instances and Redis) instead of 136 to 138; the machine's speed moved by a fifth between runs that day, so the spread is wide. In Redis, a profile then showed 5% of its CPU formatting the seq as a float (Lua's number-to-text), now formatted once as an integer; not visible end to end. The instances' profile after: the WebSocket sessions (reads, writes, acks) 37% of an instance, staging and committing 21% (the board rules 11%, building the script call 8%), the board channel's events (decoding 7%, the room's delivery 9%). Two costs were removed before the report of 2 December: every operation's future was polled at each wake-up of the broker together with all others in flight, and every request copied the backend's seventeen scripts. Late on 7 December, with this load's figures moving ±10% from run to run, a build without the operation record's `ZADD` (the script's dearest command, 3.6 to 4.2 µs a call) measured the same (14,398 and 14,373 acks/s against 17,329 and 14,286): the two instances, Redis and the load generator share the two cores, and Redis takes about 45% of the servers' CPU, so no single command of the script is the limit.",
    ];
    for miss in misses {
        let _ = writeln!(out, "- {miss}");
    }

    let _ = writeln!(out, "\n## How to reproduce\n");
    let _ = writeln!(out, "```sh\nbench/run.sh            # everything above; raw lines in target/bench/results.jsonl, output in target/bench/log.txt\nQUICK=1 bench/run.sh    # a small load\ntarget/release/loadgen cursors --url ws://127.0.0.1:8080 --secret S --pid PID --boards 50 --users 20 --hz 20 --seconds 10\n```");
    out
}

/// The cursors runs over two instances on a Redis Cluster beside the same loads on one Redis.
fn cluster_beside_one_redis(out: &mut String, runs: &[Value]) {
    let run = |target: &str, users: u64| {
        runs.iter()
            .find(|r| r["scenario"] == "cursors" && r["target"] == target && r["users"] == users)
    };
    for users in [20, 30] {
        let (Some(cluster), Some(one)) = (
            run("boardcast-redis-cluster-x2", users),
            run("boardcast-redis-x2", users),
        ) else {
            continue;
        };
        let line = |r: &Value| {
            format!(
                "delivered {:.4}, p99 {:.1} ms, {:.2} CPU s per million",
                f(r, &["delivered_ratio"]),
                f(r, &["latency", "p99"]),
                f(r, &["server_cpu_s_per_million"])
            )
        };
        let _ = writeln!(
            out,
            "\nAt {:.0} deliveries/s over two instances: on the cluster {}; on one Redis {}.",
            f(cluster, &["offered_per_s"]),
            line(cluster),
            line(one)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_a_row_per_run_and_the_ratios() {
        let lines = [
            r#"{"scenario":"cursors","target":"boardcast","instances":1,"boards":50,"users":20,"spread":"board","seconds":10,"offered_per_s":380000,"expected":10,"received":10,"delivered_ratio":1.0,"latency":{"p50":1,"p90":2,"p99":3,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":2.0}"#,
            r#"{"scenario":"cursors","target":"relay","instances":1,"boards":50,"users":20,"spread":"board","seconds":10,"offered_per_s":380000,"expected":10,"received":10,"delivered_ratio":1.0,"latency":{"p50":1,"p90":2,"p99":3,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":1.0}"#,
            r#"{"scenario":"cursors","target":"node","instances":1,"boards":50,"users":20,"spread":"board","seconds":10,"offered_per_s":380000,"expected":10,"received":5,"delivered_ratio":0.5,"latency":{"p50":1,"p90":2,"p99":3,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":8.0}"#,
        ]
        .join("\n");
        let md = markdown(&lines);
        assert!(
            md.contains("| boardcast | 1 | 50 × 20 | board | 380000 | 1.0000 (10/10)"),
            "{md}"
        );
        assert!(md.contains("**2.00×** the relay's"), "{md}");
        assert!(md.contains("**0.25×** the Node reference's"), "{md}");
    }

    #[test]
    fn the_targets_judge_the_load_generator_and_redis_mode() {
        let lines = [
            r#"{"scenario":"cursors","target":"relay","instances":1,"boards":50,"users":20,"spread":"board","seconds":10,"offered_per_s":380000,"expected":10,"received":10,"delivered_ratio":1.0,"latency":{"p50":0.8,"p90":1,"p99":1.5,"p999":4,"max":5},"usage":{"server_cpu_s":11.5,"server_rss_mib":10,"loadgen_cpu_s":5.75},"server_cpu_s_per_million":2.0}"#,
            r#"{"scenario":"cursors","target":"boardcast","instances":1,"boards":50,"users":20,"spread":"board","seconds":10,"offered_per_s":380000,"expected":10,"received":10,"delivered_ratio":1.0,"latency":{"p50":1,"p90":2,"p99":3,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":2.0}"#,
            r#"{"scenario":"cursors","target":"boardcast-redis-x2","instances":2,"boards":50,"users":30,"spread":"board","seconds":10,"offered_per_s":870000,"expected":10,"received":9,"delivered_ratio":0.9,"latency":{"p50":1,"p90":2,"p99":30,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":4.0}"#,
            r#"{"scenario":"cursors","target":"boardcast-redis-x2","instances":2,"boards":50,"users":20,"spread":"board","seconds":10,"offered_per_s":380000,"expected":10,"received":10,"delivered_ratio":1.0,"latency":{"p50":1,"p90":2,"p99":8,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":2.8}"#,
        ]
        .join("\n");
        let md = markdown(&lines);
        for row in [
            "| load generator against the relay at 380000/s: p99 around 1 ms, about half a core | p99 1.50 ms, 0.50 core | yes |",
            "| two instances + Redis, cursors 870000/s: every delivery, p99 ≤ 50 ms | delivered 0.9000, p99 30.0 ms | **no** |",
            "| two instances + Redis, cursors 380000/s: every delivery, p99 ≤ 10 ms | delivered 1.0000, p99 8.0 ms | yes |",
            "| Redis mode CPU per million deliveries (instances + Redis) ≤ 1.5× the embedded one | 1.40× | yes |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
    }

    #[test]
    fn encoding_runs_get_a_section_of_their_own() {
        let lines = [
            r#"{"scenario":"sizes","target":"boardcast-encodings","messages":[{"message":"cursor.move","json_sent":60,"msgpack_sent":45,"json_received":80,"msgpack_received":60}]}"#,
            r#"{"scenario":"cursors","target":"boardcast-encodings","encoding":"mixed","instances":1,"boards":25,"offered_per_s":190000,"expected":10,"received":10,"delivered_ratio":1.0,"bytes_per_delivery":70.5,"latency":{"p50":1,"p90":2,"p99":3,"p999":4,"max":5},"usage":{"server_rss_mib":10,"loadgen_cpu_s":1},"server_cpu_s_per_million":2.5}"#,
        ]
        .join("\n");
        let md = markdown(&lines);
        assert!(
            md.contains("| `cursor.move` | 60 | 45 | 80 | 60 | 0.75 |"),
            "{md}"
        );
        assert!(
            md.contains("| mixed | 25 | 190000 | 1.0000 | 70.5 |"),
            "{md}"
        );
        assert!(!md.contains("| boardcast-encodings |"), "{md}");
    }
}
