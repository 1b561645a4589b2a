//! `postern import … --verify`: replays the parity table against the
//! source daemon and against `postern serve` running the imported
//! configuration (listeners moved to free loopback ports, a temporary data
//! directory), compares the reply classes and explains the deliberate
//! differences.
//!
//! May touch: starts and stops (by PID) one `postern serve` child; a
//! temporary directory under the system's temp dir; outbound TCP to both
//! daemons (through [`super::parity`]); writes `parity-report.txt` into the
//! output directory.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::parity::{compare, replay_logged, CertFiles, ClientCert, Difference, Port, Probe, Target, Verdict};
use super::parity_table::{default_probes, explain, Facts, EXPLANATIONS};
use super::CommonArgs;
use crate::config::{Config, Role};

/// How long `postern serve` may take to listen on every port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of a verification.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The probes replayed.
    pub probes: usize,
    /// Every difference (explained or not).
    pub differences: Vec<Difference>,
    /// The text written to parity-report.txt.
    pub report: String,
}

impl Outcome {
    /// Differences no deliberate postern choice explains.
    pub fn unexplained(&self) -> usize {
        self.differences.iter().filter(|d| d.explained.is_none()).count()
    }
}

/// A parity table file: `[[probe]]` entries.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFile {
    probe: Vec<Probe>,
}

/// Runs the verification of the configuration text `config` (as written
/// into `common.out`). `Err` is a message (a setup problem, not a difference).
pub fn run(config: &str, common: &CommonArgs) -> Result<Outcome, String> {
    let Some(smtp) = common.verify else { return Err("--verify not given".into()) };
    let cfg = Config::parse(config, "postern.toml").map_err(|e| format!("imported configuration: {e}"))?;
    let mut source = Target::default();
    source.addrs.insert(Port::Smtp, smtp);
    if let Some(a) = common.verify_submission {
        source.addrs.insert(Port::Submission, a);
    }
    if let Some(a) = common.verify_smtps {
        source.addrs.insert(Port::Smtps, a);
    }
    let certs = common.probe_certs.as_deref().map(CertFiles::from_dir).unwrap_or_default();
    let kinds: Vec<ClientCert> = [ClientCert::Trusted, ClientCert::LookAlike, ClientCert::SelfSigned]
        .into_iter()
        .filter(|k| k.key().is_some_and(|k| certs.files.contains_key(k)))
        .collect();
    let auth = match &common.probe_auth {
        None => None,
        Some(s) => Some(s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())).ok_or("--probe-auth wants USER:PASSWORD")?),
    };
    let probes = match &common.probes {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            toml::from_str::<ProbeFile>(&text).map_err(|e| format!("{}: {e}", file.display()))?.probe
        }
        None => {
            let mut facts = Facts::from_config(&cfg, kinds, auth);
            // Only the listeners both sides have.
            facts.ports.retain(|p| source.addrs.contains_key(p));
            default_probes(&facts)
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let from_source = rt.block_on(replay_all(&source, &certs, &probes));
    let dir = std::env::temp_dir().join(format!("postern-verify-{}", std::process::id()));
    let (mut child, target) = start_postern(config, &dir, &common.out)?;
    let from_postern = rt.block_on(replay_all(&target, &certs, &probes));
    stop(&mut child);
    let serve_log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let sv: Vec<Verdict> = from_source.iter().map(|(v, _)| v.clone()).collect();
    let pv: Vec<Verdict> = from_postern.iter().map(|(v, _)| v.clone()).collect();
    let mut differences = compare(&probes, &sv, &pv);
    explain(&probes, &mut differences);
    let report = render(&probes, &from_source, &from_postern, &differences, &serve_log);
    Ok(Outcome { probes: probes.len(), differences, report })
}

async fn replay_all(target: &Target, certs: &CertFiles, probes: &[Probe]) -> Vec<(Verdict, Vec<String>)> {
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        out.push(replay_logged(target, certs, p).await);
    }
    out
}

fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

/// Writes the configuration with its listeners on free loopback ports and
/// starts `postern serve` on it; returns the child and its listeners.
fn start_postern(config: &str, dir: &Path, out: &Path) -> Result<(Child, Target), String> {
    let mut doc: toml::Table = toml::from_str(config).map_err(|e| e.to_string())?;
    let mut target = Target::default();
    let mut addrs = Vec::new();
    if let Some(toml::Value::Array(ls)) = doc.get_mut("listener") {
        for l in ls.iter_mut() {
            let Some(t) = l.as_table_mut() else { continue };
            let role = t.get("role").and_then(|r| r.as_str()).unwrap_or("smtp");
            let port = match toml::Value::String(role.into()).try_into::<Role>().map_err(|e| e.to_string())? {
                Role::Smtp => Port::Smtp,
                Role::Submission => Port::Submission,
                Role::Submissions => Port::Smtps,
            };
            let a = free_port()?;
            t.insert("address".into(), toml::Value::String(a.to_string()));
            target.addrs.entry(port).or_insert(a);
            addrs.push(a);
        }
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    doc.insert("data_dir".into(), toml::Value::String(data.display().to_string()));
    // The imported users (a sasldb2) and aliases, where the imported
    // configuration expects them: the data directory.
    for name in ["users.json", "aliases"] {
        let from = out.join(name);
        if from.is_file() {
            std::fs::copy(&from, data.join(name)).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    // The probes fail AUTH on purpose, many times from the same address:
    // the brute-force delay (timing only, never a different decision) and
    // the ban (a different decision, but one no source daemon has) are
    // kept out of the comparison.
    if let Some(auth) = doc.entry("auth").or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut() {
        auth.insert("delay_after".into(), toml::Value::Integer(1_000_000));
        auth.insert("max_failures_per_ip".into(), toml::Value::Integer(1_000_000));
        auth.insert("max_failures_per_user".into(), toml::Value::Integer(1_000_000));
    }
    let file = dir.join("postern.toml");
    std::fs::write(&file, toml::to_string(&doc).map_err(|e| e.to_string())?).map_err(|e| format!("{}: {e}", file.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let log = std::fs::File::create(dir.join("serve.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .env("POSTERN_RUN_DIR", dir.join("run"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting postern serve: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    for a in &addrs {
        loop {
            if std::net::TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok() {
                break;
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                stop(&mut child);
                let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
                return Err(format!("postern serve did not listen on {a}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok((child, target))
}

/// Stops the child by its PID: SIGTERM, then SIGKILL after 10 s.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn render(
    probes: &[Probe],
    source: &[(Verdict, Vec<String>)],
    postern: &[(Verdict, Vec<String>)],
    diffs: &[Difference],
    serve_log: &str,
) -> String {
    let mut by_probe: HashMap<&str, Vec<&Difference>> = HashMap::new();
    for d in diffs {
        by_probe.entry(d.probe.as_str()).or_default().push(d);
    }
    let unexplained = diffs.iter().filter(|d| d.explained.is_none()).count();
    let mut out = String::new();
    let _ = writeln!(out, "parity: {} probes, {} differences, {} unexplained", probes.len(), diffs.len(), unexplained);
    let _ = writeln!(out, "\nDeliberate postern choices (a difference they cover is explained):");
    for e in EXPLANATIONS {
        let _ = writeln!(out, "  {}: {}", e.name, e.reason.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    let _ = writeln!(out, "\nProbes (source | postern; auth mail rcpt...):");
    for (i, p) in probes.iter().enumerate() {
        let _ = writeln!(out, "  {}  {} | {}", p.name, classes(&source[i].0), classes(&postern[i].0));
        for d in by_probe.get(p.name.as_str()).into_iter().flatten() {
            match &d.explained {
                Some(why) => {
                    let _ = writeln!(
                        out,
                        "    DIFFERENCE {}: source {} postern {} (explained: {})",
                        d.step,
                        d.source,
                        d.postern,
                        why.split(':').next().unwrap_or("")
                    );
                }
                None => {
                    let _ = writeln!(out, "    DIFFERENCE {}: source {} postern {} UNEXPLAINED", d.step, d.source, d.postern);
                    let _ = writeln!(out, "      rcpts: {}", p.rcpts.join(" "));
                    let _ = writeln!(out, "      source transcript: {}", source[i].1.join(" / "));
                    let _ = writeln!(out, "      postern transcript: {}", postern[i].1.join(" / "));
                }
            }
        }
    }
    if unexplained > 0 {
        let _ = writeln!(out, "\npostern serve log:\n{serve_log}");
    }
    out
}

fn classes(v: &Verdict) -> String {
    let mut s = String::new();
    if let Some(a) = v.auth {
        let _ = write!(s, "auth={a} ");
    }
    let _ = write!(s, "mail={}", v.mail);
    for r in &v.rcpts {
        let _ = write!(s, " {r}");
    }
    s
}

/// The path of the parity report in the output directory.
pub fn report_path(out: &Path) -> PathBuf {
    out.join("parity-report.txt")
}
