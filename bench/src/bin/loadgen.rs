//! `loadgen SCENARIO [options]`: runs one scenario against loopback targets and prints a human
//! summary, then one JSON line. `loadgen report --results FILE` prints the Markdown report.
//!
//! Options: `--url ws://127.0.0.1:PORT` (repeatable: clients spread over instances),
//! `--secret S`, `--pid PID` (repeatable, for server CPU and memory), `--label NAME`,
//! `--prefix P`, `--threads N` (runtime threads, 2 by default: a board's burst of receptions
//! spread over two threads instead of waiting behind each other on one), and per scenario:
//! - cursors: `--boards --users --hz --seconds --warmup --encoding json|msgpack|mixed
//!   --spread board|socket` (a board's users send together, or each socket at its own instant)
//! - sizes: none (a JSON and a MessagePack session exchange a cursor move and a `value.set`)
//! - durable: `--boards --writers --depth --seconds`
//! - idle: `--connections --boards --seconds`
//! - churn: `--boards --observers --rate --stay-ms --seconds`
//! - reconnect: two `--url` (the instance that dies first), `--boards --per-board --seconds`,
//!   `--kill PID` (without it the first instance's sessions just drop)

use std::collections::HashMap;

/// Prints a line; a reader that went away (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use boardcast_bench::client::Encoding;
use boardcast_bench::reconnect::{self, ReconnectOpts};
use boardcast_bench::scenarios::{
    self, ChurnOpts, CursorsOpts, DurableOpts, IdleOpts, Spread, Target,
};

struct Args {
    scenario: String,
    values: HashMap<String, Vec<String>>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut it = std::env::args().skip(1);
        let scenario = it.next().ok_or(
            "usage: loadgen cursors|sizes|durable|idle|churn|reconnect [--option value]...",
        )?;
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        while let Some(key) = it.next() {
            let key = key
                .strip_prefix("--")
                .ok_or(format!("unexpected {key}"))?
                .to_string();
            let value = it.next().ok_or(format!("--{key} needs a value"))?;
            values.entry(key).or_default().push(value);
        }
        Ok(Args { scenario, values })
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.values.get(key).cloned().unwrap_or_default()
    }

    fn text(&self, key: &str, default: &str) -> String {
        self.values
            .get(key)
            .and_then(|v| v.last().cloned())
            .unwrap_or_else(|| default.to_string())
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.values.get(key).and_then(|v| v.last()) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key} {v} is not a number")),
        }
    }
}

fn run(args: Args) -> Result<String, String> {
    let threads: usize = args.num("threads", 2)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let urls = args.all("url");
    if urls.is_empty() {
        return Err("at least one --url is needed".into());
    }
    let target = Target {
        label: args.text("label", "boardcast"),
        urls,
        secret: args.text("secret", ""),
        pids: args.all("pid"),
        prefix: args.text("prefix", &format!("bench{}", std::process::id())),
    };
    let json = runtime.block_on(async {
        match args.scenario.as_str() {
            "cursors" => {
                let opts = CursorsOpts {
                    boards: args.num("boards", 50)?,
                    users: args.num("users", 20)?,
                    hz: args.num("hz", 20.0)?,
                    seconds: args.num("seconds", 10.0)?,
                    warmup: args.num("warmup", 2.0)?,
                    encoding: Encoding::parse(&args.text("encoding", "json"))?,
                    spread: Spread::parse(&args.text("spread", "board"))?,
                };
                let r = scenarios::cursors(&target, &opts).await?;
                say!(
                    "cursors {} x{} ({}): {} boards x {} users x {} Hz = {:.0} deliveries/s offered; {}/{} delivered ({:.4}), echoes {}, errors {}, {:.1} bytes each\n  latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n  server cpu {:.2}s ({:.2}s per million), rss {:.1} MiB; loadgen cpu {:.2}s",
                    r.target, r.instances, r.encoding, r.boards, r.users, r.hz, r.offered_per_s, r.received, r.expected,
                    r.delivered_ratio, r.echoes, r.errors, r.bytes_per_delivery, r.latency.p50, r.latency.p90, r.latency.p99,
                    r.latency.p999, r.latency.max, r.usage.server_cpu_s, r.server_cpu_s_per_million,
                    r.usage.server_rss_mib, r.usage.loadgen_cpu_s
                );
                serde_json::to_string(&r)
            }
            "sizes" => {
                let r = scenarios::sizes(&target).await?;
                for m in &r.messages {
                    say!(
                        "sizes {}: {} sent {} B (JSON) / {} B (MessagePack), received {} B / {} B",
                        r.target, m.message, m.json_sent, m.msgpack_sent, m.json_received, m.msgpack_received
                    );
                }
                serde_json::to_string(&r)
            }
            "durable" => {
                let opts = DurableOpts {
                    boards: args.num("boards", 10)?,
                    writers: args.num("writers", 4)?,
                    depth: args.num("depth", 4)?,
                    seconds: args.num("seconds", 10.0)?,
                };
                let r = scenarios::durable(&target, &opts).await?;
                say!(
                    "durable {} x{}: {} boards x {} writers (depth {}): {} acked, {:.0}/s, seq gaps {}, errors {}\n  ack latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; server cpu {:.2}s",
                    r.target, r.instances, r.boards, r.writers, r.depth, r.acked, r.acks_per_s, r.seq_gaps,
                    r.errors, r.latency.p50, r.latency.p90, r.latency.p99, r.latency.p999, r.latency.max,
                    r.usage.server_cpu_s
                );
                serde_json::to_string(&r)
            }
            "idle" => {
                let opts = IdleOpts {
                    connections: args.num("connections", 1000)?,
                    boards: args.num("boards", 100)?,
                    seconds: args.num("seconds", 5.0)?,
                };
                let r = scenarios::idle(&target, &opts).await?;
                say!(
                    "idle {}: {} connections over {} boards at {:.0}/s; rss {:.1} -> {:.1} MiB = {:.0} bytes per connection",
                    r.target, r.connections, r.boards, r.connect_per_s, r.rss_before_mib, r.rss_after_mib,
                    r.bytes_per_connection
                );
                serde_json::to_string(&r)
            }
            "churn" => {
                let opts = ChurnOpts {
                    boards: args.num("boards", 10)?,
                    observers: args.num("observers", 2)?,
                    rate: args.num("rate", 100.0)?,
                    stay_ms: args.num("stay-ms", 500)?,
                    seconds: args.num("seconds", 10.0)?,
                };
                let r = scenarios::churn(&target, &opts).await?;
                say!(
                    "churn {}: {} sessions, {:.1} transitions/s per observer, failures {}\n  join seen after ms p50 {:.2} p99 {:.2} max {:.2}",
                    r.target, r.sessions, r.transitions_per_s, r.failures, r.join_seen.p50, r.join_seen.p99,
                    r.join_seen.max
                );
                serde_json::to_string(&r)
            }
            "reconnect" => {
                let opts = ReconnectOpts {
                    boards: args.num("boards", 500)?,
                    per_board: args.num("per-board", 10)?,
                    kill: match args.values.get("kill").and_then(|v| v.last()) {
                        Some(pid) => Some(pid.parse().map_err(|_| format!("--kill {pid} is not a pid"))?),
                        None => None,
                    },
                    seconds: args.num("seconds", 12.0)?,
                };
                let r = reconnect::reconnect(&target, &opts).await?;
                say!(
                    "reconnect {}: {} sessions on {} boards back on the other instance; all snapshots after {:.0} ms (p50 {:.0}, p99 {:.0}); presence right after {:.0} ms, wrong boards {}, failures {}",
                    r.target, r.sessions, r.boards, r.all_snapshots_ms, r.snapshot.p50, r.snapshot.p99,
                    r.presence_right_ms, r.wrong_boards, r.failures
                );
                serde_json::to_string(&r)
            }
            other => return Err(format!("unknown scenario {other}")),
        }
        .map_err(|e| e.to_string())
    })?;
    Ok(json)
}

fn main() -> std::process::ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if args.scenario == "report" {
        let path = args.text("results", "target/bench/results.jsonl");
        return match std::fs::read_to_string(&path) {
            Ok(lines) => {
                say!("{}", boardcast_bench::report::markdown(&lines).trim_end());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen: cannot read {path}: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(json) => {
            say!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
