//! `dualwrite status --prometheus`, `dualwrite status --check` and `dualwrite metrics --listen`:
//! output and the small HTTP endpoint (the `dualwrite` binary's; the figures come from
//! `dualwrite::metrics`).

use dualwrite::metrics;
use dualwrite::Bridge;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Where `dualwrite metrics` listens unless told: loopback only, so the figures (table names,
/// the last error's text) are not offered to the network by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9721";

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `status --prometheus`: one scrape on stdout (for node_exporter's textfile collector or cron).
pub fn print_prometheus(bridge: &Bridge) -> dualwrite::Result<ExitCode> {
    let snapshot = metrics::collect(bridge)?;
    print!("{}", metrics::render_prometheus(&snapshot, now()));
    Ok(ExitCode::SUCCESS)
}

/// `status --check`: "ok", or each problem on its own line and exit code UNHEALTHY.
pub fn check(bridge: &Bridge, max_lag: Duration) -> dualwrite::Result<ExitCode> {
    let problems = metrics::problems(&bridge.status()?, max_lag);
    if problems.is_empty() {
        println!("ok");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("{p}");
    }
    Ok(ExitCode::from(crate::exit::UNHEALTHY))
}

/// `metrics --listen ADDR`: serve `GET /metrics` until killed. One connection at a time: a
/// scrape takes milliseconds and Prometheus scrapes every few seconds, so a thread per
/// connection would buy nothing; a client that sends nothing is dropped after 5 s.
pub fn serve(bridge: &Bridge, listen: &str) -> dualwrite::Result<ExitCode> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| dualwrite::Error::invalid("--listen", format!("{listen:?} is not IP:PORT ({e})")))?;
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    // The first line tells scripts (and the tests) the port when it was 0.
    println!("serving metrics on http://{bound}/metrics");
    std::io::stdout().flush()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "metrics are served beyond this machine: put them behind a firewall or a proxy");
    }
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = answer(bridge, s) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: accept failed"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn answer(bridge: &Bridge, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored (nothing in them changes the answer).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match metrics::collect(bridge) {
            Ok(s) => {
                ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics::render_prometheus(&s, now()))
            }
            Err(e) => ("503 Service Unavailable", "text/plain; charset=utf-8", format!("{e}\n")),
        },
        ("GET" | "HEAD", "/") => {
            ("200 OK", "text/plain; charset=utf-8", "dualwrite: see /metrics\n".to_string())
        }
        ("GET" | "HEAD", _) => {
            ("404 Not Found", "text/plain; charset=utf-8", "not found: try /metrics\n".to_string())
        }
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".to_string()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}
