//! Command-line handling shared by the traffic tools: every error is one line on stderr,
//! `<program>: <what is wrong>`, and a non-zero exit status (2 for bad flags, 1 otherwise).

use std::net::SocketAddr;
use std::time::Duration;

/// Exit status for bad flags.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Parses the command line, or prints a one-line error and exits with [`EXIT_USAGE`]. `--help`
/// prints the usual help and exits 0.
pub fn parse_or_exit<T: clap::Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => die(program, EXIT_USAGE, &one_line(&err)),
    }
}

/// A binary's `main`: its flags parsed (usage errors exit 2), `run` driven to the end on a
/// Tokio runtime, and an error printed as one line with exit code 1.
pub fn main<T, F, Fut>(program: &str, run: F)
where
    T: clap::Parser,
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let args: T = parse_or_exit(program);
    let runtime = tokio::runtime::Runtime::new()
        .unwrap_or_else(|e| die(program, EXIT_FAILURE, &format!("cannot start the runtime: {e}")));
    if let Err(message) = runtime.block_on(run(args)) {
        die(program, EXIT_FAILURE, &message);
    }
}

/// Prints `<program>: <message>` on stderr and exits with `code`.
pub fn die(program: &str, code: i32, message: &str) -> ! {
    eprintln!("{program}: {message}");
    std::process::exit(code)
}

/// Clap's error as one line: without the usage block, the tip and the `error:` prefix.
pub fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || line.starts_with("tip:") {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    let joined = parts.join(" ");
    if joined.is_empty() { "invalid command line".to_string() } else { joined }
}

/// `NAME=VALUE`, both non-empty.
pub fn parse_pair(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            Ok((name.to_string(), value.to_string()))
        }
        _ => Err(format!("{input:?} is not NAME=VALUE")),
    }
}

/// `SERVICE=IP:PORT` with a loopback IP and a non-zero port: the traffic tools never send a
/// request anywhere but this machine.
pub fn parse_backend(input: &str) -> Result<(String, SocketAddr), String> {
    let (service, addr) = parse_pair(input).map_err(|_| format!("{input:?} is not SERVICE=IP:PORT"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not IP:PORT (a literal address, e.g. 127.0.0.1:8080)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address; backends must be on 127.0.0.1 or [::1]"));
    }
    if addr.port() == 0 {
        return Err(format!("{addr} has port 0"));
    }
    Ok((service, addr))
}

/// A probability in `0..=1`.
pub fn parse_rate(input: &str) -> Result<f64, String> {
    match input.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{input:?} is not a rate between 0 and 1")),
    }
}

/// A positive, finite request rate of at most 100000 per second.
pub fn parse_rps(input: &str) -> Result<f64, String> {
    match input.parse::<f64>() {
        Ok(rps) if rps > 0.0 && rps <= 100_000.0 => Ok(rps),
        _ => Err(format!("{input:?} is not a request rate above 0 and at most 100000 per second")),
    }
}

/// A positive Go-style duration: `500ms`, `30s`, `2m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    match serin::duration::parse_duration(input) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{input:?} is zero; give a positive duration like 500ms or 30s")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_must_be_loopback_literals() {
        assert_eq!(
            parse_backend("web=127.0.0.1:80").unwrap(),
            ("web".to_string(), "127.0.0.1:80".parse().unwrap())
        );
        assert!(parse_backend("web=[::1]:80").is_ok());
        assert!(parse_backend("web=127.3.4.5:80").is_ok());
        assert!(parse_backend("web=10.0.0.1:80").unwrap_err().contains("not a loopback"));
        assert!(parse_backend("web=localhost:80").unwrap_err().contains("literal address"));
        assert!(parse_backend("web=127.0.0.1:0").unwrap_err().contains("port 0"));
        assert!(parse_backend("127.0.0.1:80").is_err());
        assert!(parse_backend("=127.0.0.1:80").is_err());
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rps("0").is_err());
        assert!(parse_rps("inf").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
