//! The vendors' own checkers for notification bodies: Slack's Block Kit types (`@slack/types`,
//! compiled with TypeScript) and Microsoft's Adaptive Cards parser (`adaptivecards`, card
//! version 1.4), pinned in `e2e/fixtures/formats/` and installed into `~/.cache/serin` by
//! `e2e/fixtures/formats/install` (which `e2e/install-prereqs` calls).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::repo_root;

/// The installed checkers' node_modules (installed on first use).
pub fn node_modules() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("e2e/fixtures/formats/install");
        let out = Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs the checkers over `bodies`, `{"slack": [{"name", "body"}], "teams": [{"name", "body"}]}`;
/// returns whether every body passed and what the checkers printed (one line per body).
pub fn check(name: &str, bodies: &Value) -> (bool, String) {
    let file = std::env::temp_dir().join(format!("serin-formats-{}-{name}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(bodies).expect("bodies are JSON"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    let out = Command::new("node")
        .arg(repo_root().join("e2e/fixtures/formats/check.js"))
        .arg(&file)
        .env("NODE_PATH", node_modules())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let _ = std::fs::remove_file(&file);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
}
