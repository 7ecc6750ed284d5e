//! Starting and stopping a `spool serve` child for `--spawn`: a fresh temporary data directory, a free port, the
//! requested durability, and SIGTERM (the daemon's ordered shutdown) at the end.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub addr: String,
    /// `http://127.0.0.1:PORT` when started with the gRPC door.
    pub grpc_endpoint: Option<String>,
    // Held so the data directory lives exactly as long as the daemon.
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `bin serve` and waits until it logs that its listeners (RESP, and gRPC when `grpc`) are ready.
    pub async fn start(bin: &Path, durability: &str, grpc: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary data directory")?;
        // Ask the kernel for a free port, then hand it to the daemon; the tiny race with another process binding it
        // in between only makes the start fail loudly.
        let free_port =
            || -> std::io::Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let addr = format!("127.0.0.1:{}", free_port()?);
        let grpc_addr = if grpc {
            Some(format!("127.0.0.1:{}", free_port()?))
        } else {
            None
        };
        let mut command = Command::new(bin);
        match &grpc_addr {
            Some(a) => command.env("SPOOL_GRPC__LISTEN", a),
            // Only the RESP door is measured; the gRPC door's fixed default port would clash between daemons.
            None => command.env("SPOOL_GRPC__ENABLED", "false"),
        };
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .env("SPOOL_RESP__LISTEN", &addr)
            .env("SPOOL_STORAGE__DURABILITY", durability)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Keep reading stderr for the daemon's whole life: a full pipe would block its logging, and with it the
        // daemon.
        let mut doors_pending = 1 + usize::from(grpc);
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "RESP listener ready", and "gRPC listener ready" when that door is on.
                if line.contains("listener ready") {
                    doors_pending = doors_pending.saturating_sub(1);
                    if doors_pending == 0 {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                } else if ready.is_some() && (line.contains("ERROR") || line.contains("Error")) {
                    eprintln!("spool: {line}");
                }
            }
        });
        let mut daemon = Self {
            child,
            addr,
            grpc_endpoint: grpc_addr.map(|a| format!("http://{a}")),
            _dir: dir,
        };
        match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
            Ok(Ok(())) => Ok(daemon),
            _ => {
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
                anyhow::bail!("{} did not report a ready RESP listener", bin.display())
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (via kill(1): the workspace forbids `unsafe`, and std only offers SIGKILL), then waits for exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        let status = tokio::task::spawn_blocking(move || self.child.wait()).await??;
        anyhow::ensure!(status.success(), "spool exited with {status}");
        Ok(())
    }
}
