//! Completion for `kubectl serin <TAB>`, in kubectl's plugin protocol (kubectl 1.26+).
//!
//! kubectl runs `kubectl_complete-serin <words...>`, the last word being the one to complete,
//! and reads one candidate per line (`value<TAB>description`), then `:<directive>` (Cobra's
//! protocol; 4 means "no file completion"). The shim `kubectl_complete-serin` runs
//! `kubectl-serin __complete "$@"`. Commands, flags and enum values come from the command
//! line definition; rollout names and namespaces from the cluster, when it answers.

use clap::CommandFactory;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

use super::Error;
use super::cli::{Cli, Global};
use super::cluster::connect;
use crate::api::Rollout;

/// Cobra's ShellCompDirectiveNoFileComp.
const NO_FILE_COMPLETION: u8 = 4;

/// Commands whose first positional argument is a Rollout's name.
const TAKES_A_ROLLOUT: [&str; 7] = ["get", "status", "promote", "abort", "retry", "pause", "resume"];

/// What to complete, decided from the words alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Want {
    /// Fixed candidates with descriptions.
    Fixed(Vec<(String, String)>),
    /// Rollout names in the namespace.
    Rollouts,
    /// Namespace names.
    Namespaces,
    /// Context names from the kubeconfig.
    Contexts,
}

/// Decides what the last word should complete to. `words` are the words after `kubectl serin`;
/// the last one is being typed (maybe empty).
pub fn want(words: &[String]) -> Want {
    let cmd = Cli::command();
    let (typed, current) = match words.split_last() {
        Some((current, typed)) => (typed, current.as_str()),
        None => (&[][..], ""),
    };
    let previous = typed.last().map(String::as_str);
    match previous {
        Some("-n" | "--namespace") => return Want::Namespaces,
        Some("--context") => return Want::Contexts,
        Some("-o" | "--output") => {
            return Want::Fixed(
                ["text", "json", "yaml"].iter().map(|s| (s.to_string(), String::new())).collect(),
            );
        }
        _ => {}
    }
    // The subcommand: the first word that is not a flag or a flag's value.
    let mut sub = None;
    let mut positionals = 0;
    let mut skip_value = false;
    for word in typed {
        if skip_value {
            skip_value = false;
            continue;
        }
        if word.starts_with('-') {
            skip_value = matches!(
                word.as_str(),
                "-n" | "--namespace"
                    | "--context"
                    | "--kubeconfig"
                    | "-o"
                    | "--output"
                    | "--timeout"
                    | "--id"
            );
            continue;
        }
        if sub.is_none() {
            sub = cmd.find_subcommand(word).map(|c| c.get_name().to_string());
        } else {
            positionals += 1;
        }
    }
    let Some(sub) = sub else {
        if current.starts_with('-') {
            return Want::Fixed(flags(&cmd, current));
        }
        let subs = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name().starts_with(current))
            .map(|c| (c.get_name().to_string(), first_line(c.get_about())))
            .collect();
        return Want::Fixed(subs);
    };
    let Some(subcommand) = cmd.find_subcommand(&sub) else { return Want::Fixed(Vec::new()) };
    if current.starts_with('-') {
        let mut all = flags(subcommand, current);
        all.extend(flags(&cmd, current));
        all.sort();
        all.dedup();
        return Want::Fixed(all);
    }
    if sub == "completion" && positionals == 0 {
        let shells = ["bash", "zsh", "fish", "powershell", "elvish"];
        return Want::Fixed(
            shells
                .iter()
                .filter(|s| s.starts_with(current))
                .map(|s| (s.to_string(), String::new()))
                .collect(),
        );
    }
    if TAKES_A_ROLLOUT.contains(&sub.as_str()) && positionals == 0 {
        return Want::Rollouts;
    }
    Want::Fixed(Vec::new())
}

fn first_line(about: Option<&clap::builder::StyledStr>) -> String {
    about.map(|a| a.to_string().lines().next().unwrap_or("").to_string()).unwrap_or_default()
}

fn flags(cmd: &clap::Command, current: &str) -> Vec<(String, String)> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| Some((format!("--{}", a.get_long()?), first_line(a.get_help()))))
        .filter(|(flag, _)| flag.starts_with(current))
        .collect()
}

/// The global flags typed among the words, over those given to `__complete` itself.
fn global_from(words: &[String], base: &Global) -> Global {
    let mut global = base.clone();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (word.as_str(), None),
        };
        let slot = match flag {
            "-n" | "--namespace" => &mut global.namespace,
            "--context" => &mut global.context,
            "--kubeconfig" => {
                if let Some(v) = inline.or_else(|| iter.next().cloned()) {
                    global.kubeconfig = Some(v.into());
                }
                continue;
            }
            _ => continue,
        };
        if let Some(v) = inline.or_else(|| iter.next().cloned()) {
            *slot = Some(v);
        }
    }
    global
}

/// The hidden first argument that asks for completions: `kubectl-serin __complete <words...>`.
/// The binary handles it before parsing the command line, so that flags among the words (e.g.
/// `-n ""` while completing a namespace) stay words.
pub const COMPLETE: &str = "__complete";

/// Prints the candidates for the last word, then the directive.
pub async fn run(base: &Global, words: &[String]) -> Result<(), Error> {
    let current = words.last().map(String::as_str).unwrap_or("");
    let candidates: Vec<(String, String)> = match want(words) {
        Want::Fixed(fixed) => fixed,
        Want::Rollouts => match connect(&global_from(words, base)).await {
            Ok(cluster) => {
                let api: Api<Rollout> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
                api.list_metadata(&ListParams::default())
                    .await
                    .map(|l| {
                        l.items
                            .into_iter()
                            .filter_map(|r| r.metadata.name)
                            .map(|n| (n, String::new()))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Err(_) => Vec::new(),
        },
        Want::Namespaces => match connect(&global_from(words, base)).await {
            Ok(cluster) => Api::<Namespace>::all(cluster.client.clone())
                .list_metadata(&ListParams::default())
                .await
                .map(|l| {
                    l.items.into_iter().filter_map(|n| n.metadata.name).map(|n| (n, String::new())).collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Want::Contexts => kube::config::Kubeconfig::read()
            .map(|k| k.contexts.into_iter().map(|c| (c.name, String::new())).collect())
            .unwrap_or_default(),
    };
    let mut out = String::new();
    for (value, description) in candidates.into_iter().filter(|(v, _)| v.starts_with(current)) {
        if description.is_empty() {
            out.push_str(&format!("{value}\n"));
        } else {
            out.push_str(&format!("{value}\t{description}\n"));
        }
    }
    out.push_str(&format!(":{NO_FILE_COMPLETION}\n"));
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    fn names(want: Want) -> Vec<String> {
        match want {
            Want::Fixed(v) => v.into_iter().map(|(n, _)| n).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completes_commands_flags_and_names() {
        assert_eq!(names(want(&words(&["pr"]))), vec!["promote"]);
        assert!(!names(want(&words(&[""]))).contains(&"__complete".to_string()));
        assert_eq!(want(&words(&["promote", ""])), Want::Rollouts);
        assert_eq!(want(&words(&["-n", "shop", "status", "w"])), Want::Rollouts);
        assert_eq!(want(&words(&["status", "-n", ""])), Want::Namespaces);
        assert_eq!(want(&words(&["get", "--context", ""])), Want::Contexts);
        assert_eq!(names(want(&words(&["promote", "web", ""]))), Vec::<String>::new());
        assert!(names(want(&words(&["promote", "web", "--f"]))).contains(&"--full".to_string()));
        assert_eq!(names(want(&words(&["get", "-o", ""]))), vec!["text", "json", "yaml"]);
        assert_eq!(names(want(&words(&["completion", "z"]))), vec!["zsh"]);
    }

    #[test]
    fn global_flags_are_read_from_the_words() {
        let g = global_from(&words(&["-n", "shop", "get", "--context=prod", ""]), &Global::default());
        assert_eq!(g.namespace.as_deref(), Some("shop"));
        assert_eq!(g.context.as_deref(), Some("prod"));
    }
}
