//! A simulated power loss: what was written but not synced is lost, and every acknowledged add
//! must survive it.
//!
//! `kill -9` keeps every write in the page cache, so it cannot show that acknowledged data was
//! synced, nor that recovery copes when unsynced data is gone. Here the server runs under
//! `strace`, which logs every write, sync and rename on its data files; it is killed while
//! clients add, and a copy of its data directory is made as a power loss at that instant would
//! leave it (as lazyfs does for Jepsen): every byte written after the last successful sync of
//! its file, beyond what that file held synced, is zeroed (the journal is preallocated with
//! zeros) or cut off. A sync counts only if it returned 0, and only for the writes that had
//! completed before it began. Not modelled: unsynced overwrites of synced bytes (kept as
//! written) and directory entries (renames and new files are kept).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{Server, serve_under_strace, stop_under_strace};

/// What the trace says about one file.
#[derive(Debug, Default, Clone)]
struct FileLog {
    /// Byte ranges written and not yet covered by a successful sync.
    unsynced: Vec<(u64, u64)>,
    /// The end of the furthest byte a successful sync covered.
    synced_end: u64,
    /// The end of the furthest byte written.
    written_end: u64,
    /// The length `ftruncate` set last, when it grew the file (preallocation).
    preallocated: u64,
}

/// Replays an `strace -f -y -s 0` log of the data files' system calls.
#[derive(Default)]
struct Replay {
    /// Each open descriptor's file and position.
    fds: HashMap<i64, (String, u64)>,
    files: HashMap<String, FileLog>,
    /// A call that began (`<unfinished ...>`) and has not returned, by thread.
    pending: HashMap<String, String>,
    /// Syncs that began, by thread: the file and the ranges completed before they began.
    syncing: HashMap<String, (String, Vec<(u64, u64)>)>,
}

/// `12</path/to/file>` → (12, "/path/to/file").
fn fd_and_path(arg: &str) -> Option<(i64, String)> {
    let (fd, rest) = arg.trim().split_once('<')?;
    Some((fd.parse().ok()?, rest.trim_end_matches('>').to_owned()))
}

/// `args) = result`, where strace may pad before the `=` (it aligns results, and a resumed
/// call's tail is `<... write resumed>)          = 274`).
fn split_result(rest: &str) -> Option<(&str, &str)> {
    rest.rmatch_indices("= ").find_map(|(i, _)| {
        let args = rest[..i].trim_end().strip_suffix(')')?;
        Some((args, &rest[i + 2..]))
    })
}

/// The quoted paths of a call's arguments, in order.
fn quoted(args: &str) -> Vec<String> {
    args.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

impl Replay {
    fn line(&mut self, line: &str) {
        let Some((thread, call)) = line.split_once(' ') else { return };
        let call = call.trim_start();
        if let Some(rest) = call.strip_prefix("<... ") {
            // `<... write resumed>) = 123`: the rest of a call that began earlier.
            let Some(began) = self.pending.remove(thread) else { return };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            self.call(thread, &format!("{began}{tail}"));
        } else if let Some(began) = call.strip_suffix(" <unfinished ...>") {
            self.begin(thread, began);
            self.pending.insert(thread.to_owned(), began.to_owned());
        } else {
            self.begin(thread, call);
            self.call(thread, call);
        }
    }

    /// The start of a call: a sync covers the writes completed before it begins.
    fn begin(&mut self, thread: &str, call: &str) {
        let Some(args) = call.strip_prefix("fsync(").or_else(|| call.strip_prefix("fdatasync(")) else {
            return;
        };
        let Some((_, path)) = fd_and_path(args.split(')').next().unwrap_or("")) else { return };
        let ranges = self.files.get(&path).map(|f| f.unsynced.clone()).unwrap_or_default();
        self.syncing.insert(thread.to_owned(), (path, ranges));
    }

    /// A call that returned: `name(args) = result`.
    fn call(&mut self, thread: &str, call: &str) {
        let Some((name, rest)) = call.split_once('(') else { return };
        let Some((args, result)) = split_result(rest) else { return };
        let result = result.split_whitespace().next().unwrap_or("");
        let args: Vec<&str> = args.split(", ").collect();
        match name {
            "openat" => {
                if let Some((fd, path)) = fd_and_path(result) {
                    self.fds.insert(fd, (path, 0));
                }
            }
            "lseek" => {
                if let (Some((fd, _)), Ok(at)) = (fd_and_path(args[0]), result.parse::<u64>())
                    && let Some(entry) = self.fds.get_mut(&fd)
                {
                    entry.1 = at;
                }
            }
            "write" | "writev" => {
                let (Some((fd, _)), Ok(n)) = (fd_and_path(args[0]), result.parse::<u64>()) else { return };
                let Some((path, pos)) = self.fds.get_mut(&fd) else { return };
                let range = (*pos, *pos + n);
                *pos += n;
                let path = path.clone();
                self.wrote(&path, range);
            }
            "pwrite64" | "pwritev" | "pwritev2" => {
                let (Some((_, path)), Ok(n)) = (fd_and_path(args[0]), result.parse::<u64>()) else { return };
                let Some(Ok(at)) = args.get(3).or(args.last()).map(|a| a.trim().parse::<u64>()) else {
                    return;
                };
                self.wrote(&path, (at, at + n));
            }
            "fsync" | "fdatasync" => {
                let Some((path, ranges)) = self.syncing.remove(thread) else { return };
                if result != "0" {
                    return;
                }
                let file = self.files.entry(path).or_default();
                for range in ranges {
                    file.synced_end = file.synced_end.max(range.1);
                    if let Some(i) = file.unsynced.iter().position(|r| *r == range) {
                        file.unsynced.remove(i);
                    }
                }
            }
            "ftruncate" => {
                let (Some((_, path)), Ok(len)) = (fd_and_path(args[0]), args[1].trim().parse::<u64>()) else {
                    return;
                };
                let file = self.files.entry(path).or_default();
                if len >= file.written_end {
                    file.preallocated = len;
                }
            }
            "rename" | "renameat" | "renameat2" if result == "0" => {
                let paths = quoted(&args.join(", "));
                if let [from, to] = &paths[..]
                    && let Some(log) = self.files.remove(from)
                {
                    self.files.insert(to.clone(), log);
                }
            }
            "unlink" | "unlinkat" if result == "0" => {
                if let Some(path) = quoted(&args.join(", ")).first() {
                    self.files.remove(path);
                }
            }
            _ => {}
        }
    }

    fn wrote(&mut self, path: &str, range: (u64, u64)) {
        let file = self.files.entry(path.to_owned()).or_default();
        file.written_end = file.written_end.max(range.1);
        file.unsynced.push(range);
    }

    /// Applies the loss to the copy of the data directory at `image` (traced as `original`):
    /// returns how many bytes it dropped.
    fn lose_unsynced(&self, original: &Path, image: &Path) -> u64 {
        let mut dropped = 0;
        for (path, log) in &self.files {
            let Ok(relative) = Path::new(path).strip_prefix(original) else { continue };
            let target = image.join(relative);
            let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(&target) else { continue };
            for &(start, end) in &log.unsynced {
                // Bytes the file held synced stay as written (overwrites are not modelled).
                let start = start.max(log.synced_end);
                if start >= end {
                    continue;
                }
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(start)).expect("seek");
                file.write_all(&vec![0u8; (end - start) as usize]).expect("zero");
                dropped += end - start;
            }
            // A file grown by its writes (not preallocated) ends where its synced bytes end.
            if log.preallocated < log.written_end && log.written_end > log.synced_end {
                file.set_len(log.synced_end).expect("truncate");
            }
        }
        dropped
    }
}

/// One RESP `INCR` after another on `key` until `stop`; returns the last count acknowledged.
fn incr_until(addr: String, key: String, stop: Arc<AtomicBool>) -> i64 {
    let Ok(mut stream) = TcpStream::connect(&addr) else { return 0 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let request = format!("*2\r\n$4\r\nINCR\r\n${}\r\n{key}\r\n", key.len());
    let mut acked = 0;
    while !stop.load(Ordering::SeqCst) {
        if stream.write_all(request.as_bytes()).is_err() {
            break;
        }
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(n) if n > 0 && reply.starts_with(':') => acked = reply[1..].trim().parse().expect("a count"),
            _ => break,
        }
    }
    acked
}

/// Nearly every power loss lands while a batch is written but not yet synced (syncs are slowed
/// down); the test tries up to six, each checked, until one has dropped unsynced bytes, so
/// that every run shows recovery coping with their loss.
#[test]
fn every_acknowledged_add_survives_a_power_loss_that_drops_unsynced_writes() {
    let mut dropped = Vec::new();
    while dropped.len() < 6 && !dropped.iter().any(|d| *d > 0) {
        dropped.push(power_loss());
    }
    assert!(dropped.iter().any(|d| *d > 0), "no power loss caught a write before its sync: {dropped:?}");
}

/// One server under strace, killed while four clients add; its data directory rebuilt without
/// what was not synced, and checked. Returns how many bytes the loss dropped.
fn power_loss() -> u64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let trace = dir.path().join("files.trace");
    let syscalls = "trace=openat,write,writev,pwrite64,pwritev,pwritev2,lseek,fsync,fdatasync,ftruncate,\
                    rename,renameat,renameat2,unlink,unlinkat";
    // Each `fdatasync` waits 20 ms before it runs, so that the kill nearly always lands while a
    // batch is written and not yet synced.
    let slow_syncs = "inject=fdatasync:delay_enter=20000";
    let (mut child, line) =
        serve_under_strace(&data, &trace, &["-y", "-s", "0", "-e", syscalls, "-e", slow_syncs]);
    let resp = line.split_whitespace().find_map(|w| w.strip_prefix("resp=")).expect("resp=").to_owned();

    // Writers add until the server dies under them; each knows the last count acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (addr, stop) = (resp.clone(), stop.clone());
            std::thread::spawn(move || incr_until(addr, format!("power:c{i}"), stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stop_under_strace(&mut child, "-9");
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<i64> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
    assert!(acked.iter().all(|a| *a > 0), "every writer had adds acknowledged: {acked:?}");

    let mut replay = Replay::default();
    let mut text = String::new();
    std::fs::File::open(&trace).expect("trace").read_to_string(&mut text).expect("read trace");
    text.lines().for_each(|l| replay.line(l));
    let image = dir.path().join("after-power-loss");
    let copied = Command::new("cp").arg("-a").arg(&data).arg(&image).status().expect("cp");
    assert!(copied.success());
    let dropped = replay.lose_unsynced(&data, &image);

    let s = Server::start(&image);
    for (i, acked) in acked.iter().enumerate() {
        let (status, body) = s.curl("GET", &format!("/v1/namespaces/power/counters/c{i}"), None);
        assert_eq!(status, 200, "{body}");
        let count = body["count"].as_i64().expect("count");
        // The add in flight when the power went may or may not have been synced.
        assert!(
            (*acked..=acked + 1).contains(&count),
            "counter c{i}: {acked} adds acknowledged, {count} after the loss of {dropped} unsynced bytes"
        );
    }
    eprintln!("power loss dropped {dropped} unsynced bytes; acknowledged {acked:?}");
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_covers_the_writes_completed_before_it_began_and_only_if_it_succeeded() {
        let mut r = Replay::default();
        for line in [
            r#"1 openat(AT_FDCWD</d>, "/d/j", O_RDWR|O_CREAT, 0666) = 5</d/j>"#,
            "1 ftruncate(5</d/j>, 1000) = 0",
            r#"1 write(5</d/j>, ""..., 10) = 10"#,
            "1 fdatasync(5</d/j> <unfinished ...>",
            r#"2 write(5</d/j>, ""..., 20) = 20"#,
            "1 <... fdatasync resumed>)           = 0",
            r#"2 write(5</d/j>, ""..., 5) = 5"#,
            "2 fdatasync(5</d/j>) = -1 EIO (Input/output error)",
            "3 fsync(5</d/j> <unfinished ...>",
        ] {
            r.line(line);
        }
        let j = &r.files["/d/j"];
        assert_eq!(j.synced_end, 10, "the first sync covered the first write only");
        assert_eq!(j.unsynced, [(10, 30), (30, 35)], "a failed sync and an unfinished one cover nothing");
        assert_eq!(j.preallocated, 1000);
    }

    #[test]
    fn renames_carry_a_file_s_log_and_unlinks_drop_it() {
        let mut r = Replay::default();
        for line in [
            r#"1 openat(AT_FDCWD</d>, "/d/.tmp1", O_RDWR|O_CREAT|O_EXCL, 0600) = 7</d/.tmp1>"#,
            r#"1 write(7</d/.tmp1>, ""..., 25) = 25"#,
            r#"1 renameat(AT_FDCWD</d>, "/d/.tmp1", AT_FDCWD</d>, "/d/current") = 0"#,
            r#"1 openat(AT_FDCWD</d>, "/d/old", O_RDWR|O_CREAT, 0600) = 8</d/old>"#,
            r#"1 write(8</d/old>, ""..., 3) = 3"#,
            r#"1 unlink("/d/old") = 0"#,
        ] {
            r.line(line);
        }
        assert_eq!(r.files["/d/current"].unsynced, [(0, 25)]);
        assert!(!r.files.contains_key("/d/.tmp1") && !r.files.contains_key("/d/old"));
    }
}
