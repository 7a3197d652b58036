//! A real Redis Cluster of one test's own: three masters and three replicas of
//! `redis-server --cluster-enabled yes` on free loopback ports, joined by
//! `redis-cli --cluster create`.

use std::time::Duration;

use super::*;

/// One node of a [`RedisCluster`].
pub struct ClusterNode {
    /// Its port (its cluster bus is this plus 10,000).
    pub port: u16,
    child: Option<std::process::Child>,
}

/// A Redis Cluster of one test's own, in a directory of its own.
pub struct RedisCluster {
    /// The nodes, the first three created as masters.
    pub nodes: Vec<ClusterNode>,
    dir: std::path::PathBuf,
}

/// A port free with its cluster bus port (plus 10,000).
fn free_node_port() -> u16 {
    loop {
        let port = free_port();
        if port > 55_000 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Starts six nodes (a short `cluster-node-timeout`, so a dead master's replica takes over
    /// within seconds), creates the cluster and waits until every node says it is ok.
    pub fn start() -> RedisCluster {
        // A port found free can be taken before its node binds it (another test's client may
        // get it as its own port): such a node exits at once, and the cluster starts again on
        // other ports.
        for _ in 0..3 {
            if let Some(cluster) = Self::launch() {
                return cluster;
            }
        }
        panic!("a node did not start, three times");
    }

    /// Starts the nodes and creates the cluster; `None` when a node exited before answering.
    fn launch() -> Option<RedisCluster> {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let port = free_node_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "boardcast-cluster-{}-{}",
            ports[0],
            std::process::id()
        ));
        let nodes = ports
            .iter()
            .map(|&port| {
                let node_dir = dir.join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                let child = std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                    .args(["--appendonly", "yes", "--save", ""])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server runs (the test command installs it)");
                ClusterNode {
                    port,
                    child: Some(child),
                }
            })
            .collect();
        let mut cluster = RedisCluster { nodes, dir };
        let deadline = std::time::Instant::now() + WAIT;
        for n in 0..cluster.nodes.len() {
            let port = cluster.nodes[n].port;
            while cluster.cli(port, &["PING"]).trim() != "PONG" {
                let exited = cluster.nodes[n]
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited {
                    return None;
                }
                assert!(std::time::Instant::now() < deadline, "a node did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "the cluster was not created: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_ok();
        Some(cluster)
    }

    /// Runs `redis-cli -p PORT ARGS`; its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees on the masters.
    pub fn wait_ok(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.running().all(|node| {
                self.cli(node.port, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            if ok && self.masters().len() == 3 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster is not ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn running(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The seed nodes, as `REDIS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the masters that serve slots now, as a running node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let Some(node) = self.running().next() else {
            return Vec::new();
        };
        self.cli(node.port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter(|line| line.split(' ').count() > 8)
            .filter_map(|line| {
                let address = line.split(' ').nth(1)?;
                address.split([':', '@']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let node = self.running().next().expect("a running node");
        let slot: u16 = self
            .cli(node.port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        for line in self.cli(node.port, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields.get(2).is_some_and(|f| f.contains("master")) || fields.len() < 9 {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut ends = range.split('-');
                let (Some(Ok(from)), to) = (ends.next().map(str::parse::<u16>), ends.next()) else {
                    return false;
                };
                let to = to.and_then(|t| t.parse().ok()).unwrap_or(from);
                (from..=to).contains(&slot)
            });
            if serves {
                let port = fields[1]
                    .split([':', '@'])
                    .nth(1)
                    .and_then(|p| p.parse().ok());
                return port.expect("a port");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let node = self.running().next().expect("a running node");
        let nodes = self.cli(node.port, &["CLUSTER", "NODES"]);
        let port_of =
            |address: &str| -> Option<u16> { address.split([':', '@']).nth(1)?.parse().ok() };
        let master_id = nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && port_of(f[1]) == Some(master))
            .map(|f| f[0].to_string())
            .expect("the master is known");
        nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].contains("slave") && f[3] == master_id)
            .and_then(|f| port_of(f[1]))
            .expect("the master has a replica")
    }

    /// Waits until the replica of the master on `master` has everything the master wrote.
    pub fn wait_replicated(&self, master: u16) {
        let field = |info: &str, name: &str| -> Option<u64> {
            info.lines()
                .find_map(|line| line.trim().strip_prefix(name))
                .and_then(|rest| {
                    rest.split(',')
                        .find_map(|kv| kv.strip_prefix("offset="))
                        .or(Some(rest))
                })
                .and_then(|v| v.trim().parse().ok())
        };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let info = self.cli(master, &["INFO", "replication"]);
            let written = field(&info, "master_repl_offset:");
            let acked = field(&info, "slave0:");
            if written.is_some() && written == acked {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica never caught up: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to a node.
    pub fn signal(&self, port: u16, name: &str) {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .expect("a running node of this cluster");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(node.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The id and the slots (first, last) of the master on `port`.
    pub fn master_slots(&self, port: u16) -> (String, Vec<(u16, u16)>) {
        let node = self.running().next().expect("a running node");
        for line in self.cli(node.port, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let on_port = fields
                .get(1)
                .and_then(|a| a.split([':', '@']).nth(1))
                .and_then(|p| p.parse::<u16>().ok());
            if on_port != Some(port) || fields.len() < 9 {
                continue;
            }
            let ranges = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| {
                    let mut ends = r.split('-');
                    let from: u16 = ends.next()?.parse().ok()?;
                    let to = ends.next().and_then(|t| t.parse().ok()).unwrap_or(from);
                    Some((from, to))
                })
                .collect();
            return (fields[0].to_string(), ranges);
        }
        panic!("no master on port {port}");
    }

    /// `redis-cli --cluster reshard` moving `slots` slots (the lowest first) from the master
    /// on `from` to the master on `to`, keys and all, to run where the test needs it.
    pub fn reshard_command(&self, from: u16, to: u16, slots: u16) -> std::process::Command {
        let (from_id, _) = self.master_slots(from);
        let (to_id, _) = self.master_slots(to);
        let mut command = std::process::Command::new("redis-cli");
        command
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"]);
        command
    }

    /// Kills a node with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster slot of `key` (CRC16/XMODEM of its hash tag, modulo 16,384), as Redis computes
/// it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tag = key
        .find('{')
        .and_then(|open| {
            let close = key[open + 1..].find('}')? + open + 1;
            (close > open + 1).then(|| &bytes[open + 1..close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &byte in tag {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}
