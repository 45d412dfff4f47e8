//! Running the traffic tools from tests: start, wait for the announced port, kill on drop.
//!
//! Integration tests of this crate find the binaries with `env!("CARGO_BIN_EXE_serin-demo-app")`
//! and `env!("CARGO_BIN_EXE_serin-mesh")`; cargo builds them before it runs the tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A running tool. Killed (SIGKILL) and reaped when dropped.
pub struct Spawned {
    child: Child,
    /// The port it announced on its first stdout line.
    pub port: u16,
    /// Its stderr, and any stdout after the first line.
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `exe args...` and waits (up to 60 s) for its first stdout line, which must be
    /// `<ready> <port>`, e.g. `LISTENING 41234` or `METRICS 41235`. Panics with the log
    /// otherwise.
    pub fn start(exe: &Path, args: &[String], ready: &str) -> Spawned {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let stem = exe.file_name().unwrap_or_default().to_string_lossy().to_string();
        let log = std::env::temp_dir().join(format!(
            "{stem}-{}-{}.log",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first_tx.send(lines.next());
            // Keep draining so the tool never blocks on a full pipe.
            let mut file = file;
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
            }
        });
        let mut spawned = Spawned { child, port: 0, log };
        let first = first_rx.recv_timeout(Duration::from_secs(60));
        let port = match &first {
            Ok(Some(Ok(line))) => line
                .strip_prefix(ready)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|port| port.trim().parse::<u16>().ok()),
            _ => None,
        };
        match port {
            Some(port) => spawned.port = port,
            None => {
                spawned.kill();
                panic!(
                    "{} {args:?} did not print `{ready} <port>` first (got {first:?}); its log:\n{}",
                    exe.display(),
                    spawned.log_tail()
                );
            }
        }
        spawned
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, as `serin-mesh --backend` takes it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last 30 lines of its log, for assertion messages.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.log, 30)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
