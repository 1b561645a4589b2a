//! The reporter: counts today's sessions in memory ([`Day`]) and keeps
//! every day in `DATA/tlsrpt/YYYY-MM-DD.json` (written whole to a temp
//! file, fsynced, renamed: a crash leaves the old or the new counts, never
//! half a file). At the UTC day boundary the finished day is written and a
//! new one starts. A day whose reports are all queued is renamed
//! `YYYY-MM-DD.sent.json`; files older than [`KEEP_DAYS`] are removed.
//!
//! May touch: `DATA/tlsrpt/` (its own files only). RFCs: 8460 §4.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::NaiveDate;

use super::counts::Day;
use super::report::day_of;
use super::{SessionResult, TlsReports};

/// Days kept on disk (sent or not); older ones are removed.
pub const KEEP_DAYS: i64 = 14;
/// Unsent days older than this are not sent any more (too late to help).
pub const SEND_DAYS: i64 = 7;

struct Today {
    day: Day,
    /// Counted since the last save.
    dirty: bool,
}

/// The TLS-RPT counters of this node.
pub struct Reporter {
    dir: PathBuf,
    today: Mutex<Today>,
    max_domains: AtomicUsize,
    /// One sending run at a time (the daily task and `postern tlsrpt send`).
    pub(super) sending: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Our source address toward `ip` (the kernel's route choice; a UDP
/// "connect" sends nothing). The report's "sending-mta-ip".
pub fn source_address(ip: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = if ip.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let s = UdpSocket::bind(any).ok()?;
    s.connect((ip, 25)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

impl Reporter {
    /// Counters kept in `dir` (`DATA/tlsrpt`); today's counts so far are
    /// read back from it.
    pub fn open(dir: PathBuf, max_domains: usize) -> Reporter {
        Reporter::open_at(dir, max_domains, crate::time::now_unix())
    }

    /// [`Reporter::open`] at a given time (tests).
    pub fn open_at(dir: PathBuf, max_domains: usize, now: u64) -> Reporter {
        let today = day_of(now).to_string();
        let day = load(&dir, &today).unwrap_or_else(|| Day::new(&today));
        Reporter {
            dir,
            today: Mutex::new(Today { day, dirty: false }),
            max_domains: AtomicUsize::new(max_domains),
            sending: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies a reloaded `tls_rpt.max_domains`.
    pub fn set_max_domains(&self, n: usize) {
        self.max_domains.store(n, Ordering::Relaxed);
    }

    /// The directory of the day files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counts one session at `now` (unix seconds).
    pub fn record_at(&self, r: &SessionResult<'_>, now: u64) {
        let sending = match (&r.result, r.ip) {
            (Err(_), Some(ip)) => source_address(ip),
            _ => None,
        };
        let mut t = lock(&self.today);
        self.roll(&mut t, now);
        if t.day.record(r, sending, self.max_domains.load(Ordering::Relaxed)) {
            t.dirty = true;
        }
    }

    /// Starts a new day when `now` is past the current one; the finished
    /// day is written first.
    fn roll(&self, t: &mut Today, now: u64) {
        let today = day_of(now).to_string();
        if t.day.day == today {
            return;
        }
        if t.dirty {
            if let Err(e) = store(&self.dir, &t.day) {
                crate::maillog::error(&[("error", &format!("tlsrpt: cannot save {}: {e}", t.day.day))]);
            }
        }
        t.day = load(&self.dir, &today).unwrap_or_else(|| Day::new(&today));
        t.dirty = false;
    }

    /// Writes today's counts if they changed (and rolls the day over).
    pub fn save_at(&self, now: u64) -> std::io::Result<()> {
        let mut t = lock(&self.today);
        self.roll(&mut t, now);
        if t.dirty {
            store(&self.dir, &t.day)?;
            t.dirty = false;
        }
        Ok(())
    }

    /// The counts of `day`: today's from memory, others from their file.
    pub fn day(&self, day: NaiveDate) -> Option<Day> {
        let name = day.to_string();
        {
            let t = lock(&self.today);
            if t.day.day == name {
                return Some(t.day.clone());
            }
        }
        load(&self.dir, &name).or_else(|| load_sent(&self.dir, &name))
    }

    /// Records that `domains` of a past `day` are done; when every domain
    /// of the day is, the file becomes `DAY.sent.json`.
    pub fn mark_done(&self, day: &mut Day, domains: &[String]) -> std::io::Result<()> {
        day.done.extend(domains.iter().cloned());
        store(&self.dir, day)?;
        if day.domains.keys().all(|d| day.done.contains(d)) {
            std::fs::rename(self.dir.join(format!("{}.json", day.day)), self.dir.join(format!("{}.sent.json", day.day)))?;
        }
        Ok(())
    }

    /// Past days with reports not yet sent, oldest first, at most
    /// [`SEND_DAYS`] old; removes files older than [`KEEP_DAYS`].
    pub fn pending(&self, now: u64) -> Vec<NaiveDate> {
        let today = day_of(now);
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return out };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let (stem, sent) = match name.strip_suffix(".sent.json") {
                Some(s) => (s.to_string(), true),
                None => match name.strip_suffix(".json") {
                    Some(s) => (s.to_string(), false),
                    None => continue,
                },
            };
            let Some(d) = super::report::parse_day(&stem) else { continue };
            let age = (today - d).num_days();
            if age > KEEP_DAYS {
                let _ = std::fs::remove_file(e.path());
            } else if !sent && (1..=SEND_DAYS).contains(&age) {
                out.push(d);
            }
        }
        out.sort();
        out
    }
}

impl TlsReports for Reporter {
    fn record(&self, r: &SessionResult<'_>) {
        self.record_at(r, crate::time::now_unix());
    }
}

fn load(dir: &Path, day: &str) -> Option<Day> {
    read(&dir.join(format!("{day}.json")))
}

fn load_sent(dir: &Path, day: &str) -> Option<Day> {
    read(&dir.join(format!("{day}.sent.json")))
}

fn read(path: &Path) -> Option<Day> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Day>(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            crate::maillog::error(&[("error", &format!("tlsrpt: {} unreadable: {e}", path.display())), ("action", "ignored")]);
            None
        }
    }
}

/// Writes `day` to `DIR/DAY.json`: temp file, fsync, rename, directory fsync.
pub fn store(dir: &Path, day: &Day) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(format!("{}.json", day.day));
    let tmp = dir.join(format!(".{}.json.tmp", day.day));
    let text = serde_json::to_vec(day).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&text)?;
    // The data first, then the name: a crash leaves the old file or the new one.
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    // The rename itself survives a crash only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::tlsrpt::report::{day_start, parse_day};
    use crate::delivery::tlsrpt::{FailureType, PolicyType};

    fn session(domain: &str, ok: bool) -> SessionResult<'_> {
        SessionResult {
            policy_domain: domain,
            policy_type: PolicyType::NoPolicyFound,
            policy_strings: &[],
            mx_patterns: &[],
            mx_host: "mx.example",
            ip: Some("127.0.0.1".parse().unwrap()),
            result: if ok { Ok(()) } else { Err(FailureType::StarttlsNotSupported) },
            detail: "",
        }
    }

    #[test]
    fn counts_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tlsrpt");
        let t0 = day_start(parse_day("2026-12-05").unwrap()) + 3600;
        let r = Reporter::open_at(dir.clone(), 100, t0);
        r.record_at(&session("a.example", true), t0);
        r.record_at(&session("a.example", false), t0 + 1);
        r.save_at(t0 + 2).unwrap();
        assert!(dir.join("2026-12-05.json").exists());
        drop(r);
        let r = Reporter::open_at(dir, 100, t0 + 10);
        r.record_at(&session("a.example", true), t0 + 11);
        let d = r.day(parse_day("2026-12-05").unwrap()).unwrap();
        let p = &d.domains["a.example"][0];
        assert_eq!((p.successes, p.failures), (2, 1));
        assert_eq!(p.details[0].sending_mta_ip, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn day_rollover_writes_the_old_day_and_starts_a_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let midnight = day_start(parse_day("2026-12-06").unwrap());
        let r = Reporter::open_at(dir.clone(), 100, midnight - 10);
        r.record_at(&session("a.example", true), midnight - 5);
        // Nothing saved yet; the first session of the next day writes the old one.
        assert!(!dir.join("2026-12-05.json").exists());
        r.record_at(&session("b.example", true), midnight + 1);
        let old = read(&dir.join("2026-12-05.json")).unwrap();
        assert_eq!(old.domains.keys().collect::<Vec<_>>(), vec!["a.example"]);
        let new = r.day(parse_day("2026-12-06").unwrap()).unwrap();
        assert_eq!(new.domains.keys().collect::<Vec<_>>(), vec!["b.example"]);
        // The old day is pending from the new day on; marking it done renames it.
        assert_eq!(r.pending(midnight + 100), vec![parse_day("2026-12-05").unwrap()]);
        let mut d = r.day(parse_day("2026-12-05").unwrap()).unwrap();
        r.mark_done(&mut d, &["a.example".to_string()]).unwrap();
        assert!(dir.join("2026-12-05.sent.json").exists());
        assert!(r.pending(midnight + 100).is_empty());
        assert!(r.day(parse_day("2026-12-05").unwrap()).unwrap().done.contains("a.example"));
        // Two weeks later the files are gone.
        r.save_at(midnight + 10).unwrap();
        assert!(r.pending(midnight + 86_400 * (KEEP_DAYS as u64 + 2)).is_empty());
        assert!(!dir.join("2026-12-05.sent.json").exists());
    }

    /// DANE and MTA-STS record through the trait object MX delivery holds;
    /// their policies come out as separate report entries.
    #[test]
    fn sts_and_tlsa_through_the_trait() {
        let tmp = tempfile::tempdir().unwrap();
        let reporter = std::sync::Arc::new(Reporter::open(tmp.path().to_path_buf(), 100));
        let sink: std::sync::Arc<dyn TlsReports> = reporter.clone();
        let sts =
            vec!["version: STSv1".to_string(), "mode: testing".to_string(), "mx: *.sts.example".to_string(), "max_age: 86400".to_string()];
        let pats = vec!["*.sts.example".to_string()];
        let tlsa = vec!["_25._tcp.mx.sts.example. TLSA 3 1 1 0123abcd".to_string()];
        let mut r = SessionResult {
            policy_domain: "sts.example",
            policy_type: PolicyType::Sts,
            policy_strings: &sts,
            mx_patterns: &pats,
            mx_host: "mx.sts.example",
            ip: Some("127.0.0.1".parse().unwrap()),
            result: Err(FailureType::CertificateHostMismatch),
            detail: "certificate not valid for name",
        };
        sink.record(&r);
        r.result = Ok(());
        sink.record(&r);
        r.policy_type = PolicyType::Tlsa;
        r.policy_strings = &tlsa;
        r.result = Err(FailureType::DnssecInvalid);
        sink.record(&r);
        let day = reporter.day(day_of(crate::time::now_unix())).unwrap();
        let who = crate::delivery::tlsrpt::report::Submitter {
            organization: "o".into(),
            contact: "c".into(),
            from: "f@s.example".into(),
            domain: "s.example".into(),
        };
        let v = crate::delivery::tlsrpt::report::build(&day, "sts.example", &who, "id").unwrap();
        let p = v["policies"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["policy"]["policy-type"], "sts");
        assert_eq!(p[0]["policy"]["policy-string"], serde_json::json!(sts));
        assert_eq!(p[0]["policy"]["mx-host"], serde_json::json!(pats));
        assert_eq!(p[0]["summary"]["total-successful-session-count"], 1);
        assert_eq!(p[0]["failure-details"][0]["result-type"], "certificate-host-mismatch");
        assert_eq!(p[1]["policy"]["policy-type"], "tlsa");
        assert_eq!(p[1]["policy"]["mx-host"], serde_json::json!(["mx.sts.example"]));
        assert_eq!(p[1]["failure-details"][0]["result-type"], "dnssec-invalid");
        assert_eq!(p[1]["failure-details"][0]["failed-session-count"], 1);
    }

    #[test]
    fn a_saved_day_is_sent_only_within_a_week() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut d = Day::new("2026-11-20");
        d.record(&session("a.example", true), None, 10);
        store(&dir, &d).unwrap();
        let r = Reporter::open_at(dir.clone(), 100, day_start(parse_day("2026-11-21").unwrap()));
        assert_eq!(r.pending(day_start(parse_day("2026-11-27").unwrap())).len(), 1);
        assert!(r.pending(day_start(parse_day("2026-11-28").unwrap())).is_empty());
        std::fs::write(dir.join("2026-11-26.json"), b"{broken").unwrap();
        assert!(r.day(parse_day("2026-11-26").unwrap()).is_none());
    }
}
